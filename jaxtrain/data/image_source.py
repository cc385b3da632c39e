"""Image splits as pipeline sources: decoded into RAM once per process, or streamed.

Splits: "train" is the TFDS train split minus its last `validation_size` examples, which form
"validation"; "test" is the TFDS test split. Own data (user:NAME) brings its own three splits.
Sources read uint8 images [b, H, W, C] and int64 labels; the pipeline normalises them.
Example indices in error messages count from the start of the named split.
"""

import collections
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxtrain.data import registry
from jaxtrain.errors import DataError

SPLITS = ("train", "validation", "test")
EVAL_SPLITS = ("validation", "test")


def image_split_sizes(
    name: str, info: tfds.core.DatasetInfo, validation_size: int
) -> dict[str, int]:
    """Examples in each of our splits, from the prepared dataset's metadata."""
    num_train_split = info.splits["train"].num_examples
    if registry.is_user_dataset(name):
        return {split: info.splits[split].num_examples for split in SPLITS}
    _check_validation_size(validation_size, num_train_split)
    return {
        "train": num_train_split - validation_size,
        "validation": validation_size,
        "test": info.splits["test"].num_examples,
    }


def open_image_source(
    name: str,
    split: str,
    *,
    data_dir: str,
    validation_size: int,
    num_classes: int,
    in_memory: bool = True,
) -> "ImageSplit | StreamingImageSplit":
    """One of our splits; labels are checked against num_classes (all at once if in memory)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    where = f"{name} split {split!r}"
    builder = registry.load_builder(name, data_dir)
    tfds_split, rows = _tfds_split(name, split, builder.info, validation_size)
    if not in_memory:
        sliced = tfds_split if rows == slice(None) else f"{tfds_split}[{rows.start}:{rows.stop}]"
        return StreamingImageSplit(builder.as_data_source(sliced), where, num_classes)
    images, labels = _decoded_split(name, builder, tfds_split)
    return ImageSplit(images[rows], labels[rows], where, num_classes)


def decode_image_splits(name: str, data_dir: str) -> list[str]:
    """Decodes every TFDS split of a prepared image dataset into the decoded-split cache beside
    it (see DECODED_DIR), so that the first run after `prepare` maps arrays instead of paying the
    decode; returns the splits. A split already cached is only checked, not decoded again."""
    builder = registry.load_builder(name, data_dir)
    splits = sorted(builder.info.splits)
    for tfds_split in splits:
        _decoded_split(name, builder, tfds_split)
    return splits


def read_image_split(
    name: str, split: str, *, data_dir: str, validation_size: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, H, W, C], int64 labels [N]) of one of our splits, read-only."""
    source = open_image_source(
        name, split, data_dir=data_dir, validation_size=validation_size, num_classes=num_classes
    )
    return source.images, source.labels()


class ImageSplit:
    """A split held in RAM: read-only views of a decoded split shared through the cache."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, where: str, num_classes: int):
        if len(labels) == 0:
            raise DataError(f"{where}: the split is empty")
        check_examples(images, labels, where, num_classes)
        self.images = images
        self._labels = labels
        self.where = where

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return self._labels

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        # Fancy indexing copies: callers get writable arrays, never views of the cache.
        return {"inputs": self.images[indices], "labels": self._labels[indices]}


class StreamingImageSplit:
    """A split read from array_record per batch (in_memory=false: for sets larger than RAM)."""

    def __init__(self, source: Any, where: str, num_classes: int):
        if len(source) == 0:
            raise DataError(f"{where}: the split is empty")
        self._source = source
        self._num_classes = num_classes
        self.where = where

    def __len__(self) -> int:
        return len(self._source)

    def labels(self) -> np.ndarray:
        return self.read(np.arange(len(self)))["labels"]

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        records = self._source.__getitems__([int(i) for i in indices])
        labels = np.asarray([r["label"] for r in records], dtype=np.int64)
        bad = (labels < 0) | (labels >= self._num_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{self.where}: example {int(indices[i])} has label {int(labels[i])} "
                f"outside [0, {self._num_classes})"
            )
        return {"inputs": np.stack([r["image"] for r in records]), "labels": labels}


def check_examples(images: np.ndarray, labels: np.ndarray, where: str, num_classes: int) -> None:
    """Fails before training on the first bad example: label range, then NaN/Inf features."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where}: example {i} has label {int(labels[i])} outside [0, {num_classes})"
        )
    if np.issubdtype(images.dtype, np.floating):
        nonfinite = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
        if nonfinite.size:
            raise DataError(f"{where}: example {int(nonfinite[0])} has NaN or Inf features")


def _tfds_split(
    name: str, split: str, info: tfds.core.DatasetInfo, validation_size: int
) -> tuple[str, slice]:
    """(TFDS split, rows of it) that hold our `split`."""
    if registry.is_user_dataset(name):
        return split, slice(None)  # own data comes with its own stratified splits
    if split == "test":
        return "test", slice(None)
    num_train_split = info.splits["train"].num_examples
    _check_validation_size(validation_size, num_train_split)
    if split == "validation" and validation_size == 0:
        raise DataError(f"{name}: no 'validation' split because validation_size is 0")
    # Validation is carved from the end of train, deterministically.
    num_train = num_train_split - validation_size
    return "train", slice(0, num_train) if split == "train" else slice(num_train, num_train_split)


# Decoding a split costs seconds (one batched array_record pass, ~33 us per record on 2 cores;
# random single-record reads cost ~160 us each), and the train loop opens the eval splits at
# every eval. So keep the last few decoded TFDS splits per process, keyed by everything that
# determines them; train and validation are views of one decoded "train".
_DECODED_CACHE_SIZE = 4
_decoded: collections.OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()


def _decoded_split(
    name: str, builder: tfds.core.DatasetBuilder, tfds_split: str, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a whole TFDS split, read-only (cached)."""
    directory = os.path.abspath(os.fspath(builder.data_dir))
    # The info file's mtime tells a rebuilt dataset (prepare ... overwrite) from the old one.
    built = os.stat(os.path.join(directory, "dataset_info.json")).st_mtime_ns
    key = (name, tfds_split, directory, str(builder.info.version), built)
    if key in _decoded:
        _decoded.move_to_end(key)
        return _decoded[key]
    stem = os.path.join(directory, DECODED_DIR, f"{tfds_split}-{built}")
    arrays = _load_decoded(stem, builder.info.splits[tfds_split].num_examples)
    if arrays is None:
        source = builder.as_data_source(tfds_split)
        where = f"{name} split {tfds_split!r}"
        if len(source) == 0:
            raise DataError(f"{where}: the split is empty")
        images, labels = [], []
        for start in range(0, len(source), chunk):
            records = source.__getitems__(list(range(start, min(start + chunk, len(source)))))
            images.append(_stack_images(records, start, where))
            labels.append(np.asarray([r["label"] for r in records], dtype=np.int64))
        arrays = (np.concatenate(images), np.concatenate(labels))
        _save_decoded(stem, arrays)
        for array in arrays:
            array.flags.writeable = False  # shared by every source of this split
    _decoded[key] = arrays
    if len(_decoded) > _DECODED_CACHE_SIZE:
        _decoded.popitem(last=False)
    return arrays


# Across processes: each decoded split is also kept beside the prepared dataset, as .npy files
# named by the split and the dataset's build time, and later processes map them read-only
# instead of decoding again (~13 CPU-s for Fashion-MNIST's train split on 2 cores). Best effort:
# a read-only data directory just decodes every time, and a file that does not load as the
# split's arrays is decoded and written again.
DECODED_DIR = "decoded"


def _load_decoded(stem: str, num_examples: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        images = np.load(stem + ".images.npy", mmap_mode="r")
        labels = np.load(stem + ".labels.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if len(images) != num_examples or labels.shape != (num_examples,) or labels.dtype != np.int64:
        return None
    return images, labels


def _save_decoded(stem: str, arrays: tuple[np.ndarray, np.ndarray]) -> None:
    try:
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        for suffix, array in zip((".images.npy", ".labels.npy"), arrays, strict=True):
            tmp = f"{stem}{suffix}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, array)
            os.replace(tmp, stem + suffix)  # atomic: readers see a whole file or none
    except OSError:
        pass


def _stack_images(records: list[dict], start: int, where: str) -> np.ndarray:
    shape = np.shape(records[0]["image"])
    for i, record in enumerate(records):
        if np.shape(record["image"]) != shape:
            raise DataError(
                f"{where}: example {start + i} has image shape {np.shape(record['image'])}, "
                f"expected {shape} like example {start}"
            )
    return np.stack([r["image"] for r in records])


def _check_validation_size(validation_size: int, num_train_split: int) -> None:
    if not 0 <= validation_size < num_train_split:
        raise DataError(
            f"validation_size must be in [0, {num_train_split}) (the train split size), "
            f"got {validation_size}"
        )
