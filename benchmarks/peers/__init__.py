"""PyTorch implementations of jaxtrain's models, for side-by-side speed comparisons.

Each peer mirrors one jaxtrain model layer for layer (parameter counts are asserted equal) and
trains it with the same loss and AdamW settings. `compare.py` times both in one process.
"""
