"""Offline TFDS builders for the datasets jaxtrain can build without internet."""
