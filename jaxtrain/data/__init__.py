"""Datasets: offline TFDS builders and grain input pipelines."""

from jaxtrain.data.pipeline import (
    DATASETS,
    DatasetInfo,
    DatasetNotPreparedError,
    create_eval_iterator,
    create_train_iterator,
    get_dataset_info,
    prepare_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "create_eval_iterator",
    "create_train_iterator",
    "get_dataset_info",
    "prepare_dataset",
]
