"""Synthetic DatasetInfo values shared by the tests that need no prepared data."""

import numpy as np

from jaxtrain.data.loader import DatasetInfo


def image_info(input_shape=(8, 8, 1), num_classes: int = 10) -> DatasetInfo:
    """An image-classification dataset of the given example shape, with no examples."""
    return DatasetInfo(
        task="image_classification",
        num_classes=num_classes,
        class_names=(),
        input_shape=tuple(input_shape),
        input_dtype=np.float32,
        label_shape=(),
        num_train=0,
        num_validation=0,
        num_test=0,
    )


def text_info(seq_len: int, vocab_size: int, class_names=("neg", "pos")) -> DatasetInfo:
    """A text-classification dataset of token windows of seq_len, with no examples."""
    return DatasetInfo(
        task="text_classification",
        num_classes=len(class_names),
        class_names=tuple(class_names),
        input_shape=(seq_len,),
        input_dtype=np.int32,
        label_shape=(),
        num_train=0,
        num_validation=0,
        num_test=0,
        vocab_size=vocab_size,
        pad_id=0,
    )


def lm_info(seq_len: int, vocab_size: int, num_examples: int = 1) -> DatasetInfo:
    """A language-modelling dataset of windows of seq_len tokens."""
    return DatasetInfo(
        task="language_modeling",
        num_classes=0,
        class_names=(),
        input_shape=(seq_len,),
        input_dtype=np.int32,
        label_shape=(seq_len,),
        num_train=num_examples,
        num_validation=num_examples,
        num_test=num_examples,
        vocab_size=vocab_size,
        pad_id=0,
    )
