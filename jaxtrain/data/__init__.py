"""Datasets: offline TFDS builders and grain input pipelines for every task."""

from jaxtrain.data.loader import (
    IMAGE_CLASSIFICATION,
    LANGUAGE_MODELING,
    TEXT_CLASSIFICATION,
    DataOptions,
    DatasetInfo,
    create_eval_iterator,
    create_train_iterator,
    get_dataset_info,
    get_task,
    load_tokenizer,
    prepare_dataset,
    train_class_counts,
)
from jaxtrain.data.pipeline import DATASETS, DatasetNotPreparedError

__all__ = [
    "DATASETS",
    "IMAGE_CLASSIFICATION",
    "LANGUAGE_MODELING",
    "TEXT_CLASSIFICATION",
    "DataOptions",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "create_eval_iterator",
    "create_train_iterator",
    "get_dataset_info",
    "get_task",
    "load_tokenizer",
    "prepare_dataset",
    "train_class_counts",
]
