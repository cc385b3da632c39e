"""The one list of built-in datasets, and the way to any dataset's prepared TFDS builder.

Adding a dataset: write its builder in jaxtrain/data/builders/ and add one entry to DATASETS.
Own data (`user:NAME`, built by `python -m jaxtrain prepare user_text|user_images`) is not
listed: its task comes from its features (an "image" feature: image classification, else text
classification) and its pixel statistics from its metadata.json.
"""

import dataclasses
from collections.abc import Callable

import tensorflow_datasets as tfds

from jaxtrain.data.builders import fashion_mnist, mr_polarity, shakespeare, user_data
from jaxtrain.errors import DataError

IMAGE_CLASSIFICATION = "image_classification"
TEXT_CLASSIFICATION = "text_classification"
LANGUAGE_MODELING = "language_modeling"
USER_PREFIX = "user:"


class DatasetNotPreparedError(FileNotFoundError):
    """The dataset has not been built in data_dir."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a built-in dataset is for, how to build it and how to normalise its images."""

    task: str  # IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION or LANGUAGE_MODELING
    builder_cls: type[tfds.core.GeneratorBasedBuilder]
    prepare: Callable[[str, str | None], None]  # (data_dir, manual_dir); a no-op when built
    config: str | None = None  # TFDS builder config name
    pixel_mean: float | None = None  # images: of the train split, pixels scaled to [0, 1]
    pixel_std: float | None = None
    by_default: bool = True  # `make data` prepares it


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        IMAGE_CLASSIFICATION,
        fashion_mnist.FashionMnist,
        fashion_mnist.prepare_fashion_mnist,
        pixel_mean=fashion_mnist.TRAIN_PIXEL_MEAN,
        pixel_std=fashion_mnist.TRAIN_PIXEL_STD,
    ),
    "shakespeare": DatasetSpec(
        LANGUAGE_MODELING, shakespeare.Shakespeare, shakespeare.prepare_shakespeare, "contiguous"
    ),
    "shakespeare_by_work": DatasetSpec(
        LANGUAGE_MODELING, shakespeare.Shakespeare, shakespeare.prepare_shakespeare, "by_work"
    ),
    "mr_polarity": DatasetSpec(
        TEXT_CLASSIFICATION, mr_polarity.MrPolarity, mr_polarity.prepare_mr_polarity
    ),
}


def dataset_names() -> tuple[str, ...]:
    """The built-in dataset names; config.data.name may also be `user:NAME` (own data)."""
    return tuple(DATASETS)


def default_dataset_names() -> tuple[str, ...]:
    """The built-in datasets that `make data` prepares."""
    return tuple(name for name, spec in DATASETS.items() if spec.by_default)


def validate_dataset_name(name: str) -> None:
    """Raises DataError listing the valid names unless `name` is built-in or `user:NAME`."""
    if is_user_dataset(name):
        user_data.check_name(name[len(USER_PREFIX) :])
    elif name not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}, or user:NAME for "
            "own data prepared with `python -m jaxtrain prepare user_text|user_images`"
        )


def is_user_dataset(name: str) -> bool:
    """`user:NAME` names a dataset built by `jaxtrain prepare user_images|user_text`."""
    return name.startswith(USER_PREFIX)


def get_task(name: str, data_dir: str = "") -> str:
    """The task of a dataset; own data's comes from its prepared features (no examples read)."""
    validate_dataset_name(name)
    if is_user_dataset(name):
        features = load_builder(name, data_dir).info.features
        return IMAGE_CLASSIFICATION if "image" in features else TEXT_CLASSIFICATION
    return DATASETS[name].task


def load_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The prepared dataset's builder (metadata and random-access splits)."""
    validate_dataset_name(name)
    if is_user_dataset(name):
        return user_data.open_user_builder(name[len(USER_PREFIX) :], data_dir)
    spec = DATASETS[name]
    builder = spec.builder_cls(config=spec.config, data_dir=data_dir)
    if not builder.is_prepared():
        raise DatasetNotPreparedError(
            f"Dataset {name!r} is not prepared in data_dir={data_dir!r} (looked for "
            f"{builder.data_dir}). Prepare it with: "
            f"python -m jaxtrain prepare {name} --data_dir {data_dir}"
            + ("  (or: make data)" if spec.by_default else "")
        )
    return builder


def prepare_dataset(name: str, data_dir: str, manual_dir: str | None = None) -> None:
    """Builds a built-in dataset under data_dir; a fast no-op when it is already built."""
    validate_dataset_name(name)
    if is_user_dataset(name):
        raise DataError(
            f"{name} is own data: build it with `python -m jaxtrain prepare user_text` or "
            "`... prepare user_images`"
        )
    DATASETS[name].prepare(data_dir, manual_dir)


def pixel_stats(name: str, data_dir: str) -> tuple[float, float]:
    """(mean, std) of the train pixels / 255 that an image dataset is normalised with."""
    validate_dataset_name(name)
    if is_user_dataset(name):
        directory = user_data.builder_dir(name[len(USER_PREFIX) :], data_dir)
        return user_data.read_pixel_stats(directory)
    spec = DATASETS[name]
    if spec.pixel_mean is None or spec.pixel_std is None:
        raise DataError(f"{name} is not an image dataset: it has no pixel statistics")
    return spec.pixel_mean, spec.pixel_std
