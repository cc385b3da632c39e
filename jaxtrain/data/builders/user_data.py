"""Your own data as a TFDS array_record dataset, built without TensorFlow.

Two sources:
- `prepare_text_dataset`: a CSV (header row) or JSONL file (one JSON object per line) with a text
  column and a label column. Features as in mr_polarity: "text" (tfds Text, UTF-8) and "label"
  (ClassLabel). Empty or whitespace-only texts are an error naming the row, unless
  `skip_empty=True`, which drops them (the count is logged).
- `prepare_image_folder`: one subfolder per class; files read with PIL. Features as in
  fashion_mnist: "image" (uint8 Tensor (H, W, C), zlib) and "label" (ClassLabel). Alpha is
  dropped; C is 1 when every image is grayscale, else 3 (or forced by `grayscale`).

Classes: sorted subfolder names, or sorted label values (numerically when every label is an
integer), or the order given by `labels=[...]`. Splits "train"/"validation"/"test" (fractions
`split`, all > 0: TFDS cannot write an empty split) are stratified and deterministic in `seed`:
each class's examples are permuted by `default_rng([seed, class])`; the first round(n * validation)
go to validation, the next round(n * test) to test, the rest to train. Within a split, examples
keep source order; a record's key is its source line (text) or sorted file position (images).

The dataset lives at `<data_dir>/<name>/1.0.0/`, opens with `tfds.builder_from_directory` (see
`open_user_builder`) and keeps in `info.metadata` (metadata.json) the class names, a source
fingerprint and, for images, the train split's pixel mean/std (pixels / 255; `read_pixel_stats`).
Preparing again with the same source and options is a no-op; anything else is refused unless
`overwrite=True`.
"""

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil

import numpy as np
import tensorflow_datasets as tfds

from jaxtrain.data.builders import user_files
from jaxtrain.errors import DataError

log = logging.getLogger(__name__)

VERSION = "1.0.0"
SPLITS = ("train", "validation", "test")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class UserDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder over examples already read and split in memory; its name is the user's."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Built by jaxtrain from the user's files."}

    def __init__(self, *, name: str, data_dir: str, spec: "_Prepared"):
        self.name = name  # per instance, as tfds's ReadOnlyBuilder does
        self._spec = spec
        super().__init__(data_dir=data_dir, file_format="array_record")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._spec.description,
            features=self._spec.features,
            supervised_keys=(self._spec.input_key, "label"),
            disable_shuffling=True,  # keep source order, so keys and error messages line up
            metadata=tfds.core.MetadataDict(self._spec.metadata),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        yield from self._spec.examples[split]


@dataclasses.dataclass
class _Prepared:
    description: str
    features: tfds.features.FeaturesDict
    input_key: str
    examples: dict[str, list[tuple[int, dict]]]
    metadata: dict


def prepare_text_dataset(
    name: str,
    path: str,
    *,
    text_column: str,
    label_column: str,
    data_dir: str,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    labels: list[str] | None = None,
    skip_empty: bool = False,
    overwrite: bool = False,
) -> str:
    """Builds `<data_dir>/<name>/1.0.0/` from a .csv or .jsonl file; returns that directory."""
    check_name(name)
    _check_split(split)
    options = dict(kind="text", columns=[text_column, label_column], split=list(split))
    options |= dict(seed=seed, labels=labels, skip_empty=skip_empty)
    fingerprint = _fingerprint(options, [path])
    existing = _existing(name, data_dir, fingerprint, overwrite)
    if existing:
        return existing
    rows = user_files.read_text_rows(path, text_column, label_column)
    rows = _drop_empty(rows, path, skip_empty)
    class_names, label_ids = user_files.assign_labels(
        [label for _, _, label in rows], [row for row, _, _ in rows], path, labels
    )
    examples = {
        split_name: [(rows[i][0], {"text": rows[i][1], "label": int(label_ids[i])}) for i in idx]
        for split_name, idx in split_indices(label_ids, split, seed, path).items()
    }
    features = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=class_names)}
    )
    metadata = _metadata(name, path, fingerprint, options, class_names, examples)
    spec = _Prepared(f"User text dataset from {path}.", features, "text", examples, metadata)
    return _build(name, data_dir, spec)


def prepare_image_folder(
    name: str,
    folder: str,
    *,
    data_dir: str,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Builds `<data_dir>/<name>/1.0.0/` from folder/<class>/<image files>; returns that dir."""
    check_name(name)
    _check_split(split)
    size = user_files.parse_image_size(image_size)
    files, class_names = user_files.list_image_folder(folder)
    options = dict(kind="image", size=size, grayscale=grayscale, split=list(split), seed=seed)
    fingerprint = _fingerprint(options, [path for path, _ in files], root=folder)
    existing = _existing(name, data_dir, fingerprint, overwrite)
    if existing:
        return existing
    images_NxHxWxC = user_files.read_images([p for p, _ in files], size, grayscale)
    label_ids = np.asarray([label for _, label in files], np.int64)
    indices = split_indices(label_ids, split, seed, folder)
    examples = {
        s: [(int(i), {"image": images_NxHxWxC[i], "label": int(label_ids[i])}) for i in idx]
        for s, idx in indices.items()
    }
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(
                shape=images_NxHxWxC.shape[1:],
                dtype=np.uint8,
                encoding=tfds.features.Encoding.ZLIB,  # tfds Image needs TensorFlow for PNG
            ),
            "label": tfds.features.ClassLabel(names=class_names),
        }
    )
    metadata = _metadata(name, folder, fingerprint, options, class_names, examples)
    metadata.update(_pixel_stats(images_NxHxWxC[indices["train"]]))
    spec = _Prepared(f"User image dataset from {folder}.", features, "image", examples, metadata)
    return _build(name, data_dir, spec)


def builder_dir(name: str, data_dir: str) -> str:
    return os.path.join(data_dir, name, VERSION)


def open_user_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The prepared dataset `name` (read-only; no TensorFlow, no builder class needed)."""
    check_name(name)
    directory = builder_dir(name, data_dir)
    if not os.path.isfile(os.path.join(directory, "dataset_info.json")):
        raise FileNotFoundError(
            f"User dataset {name!r} is not prepared in data_dir={data_dir!r} (looked for "
            f"{directory}); build it with prepare_text_dataset or prepare_image_folder"
        )
    return tfds.builder_from_directory(directory)


def read_pixel_stats(builder_directory: str) -> tuple[float, float]:
    """(mean, std) of the train split's pixels / 255, as stored by prepare_image_folder."""
    path = os.path.join(builder_directory, "metadata.json")
    try:
        with open(path) as f:
            metadata = json.load(f)
        return float(metadata["pixel_mean"]), float(metadata["pixel_std"])
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise DataError(
            f"{path}: no pixel statistics ({e}); only image datasets built by "
            "prepare_image_folder have them"
        ) from e


def split_indices(
    labels: np.ndarray, split: tuple[float, float, float], seed: int, where: str
) -> dict[str, np.ndarray]:
    """Stratified split of positions 0..N-1; each split's positions in sorted order."""
    parts = {s: [] for s in SPLITS}
    for label in np.unique(labels):
        members = np.random.default_rng([seed, int(label)]).permutation(
            np.flatnonzero(labels == label)
        )
        num_validation = int(round(len(members) * split[1]))
        num_test = int(round(len(members) * split[2]))
        parts["validation"].append(members[:num_validation])
        parts["test"].append(members[num_validation : num_validation + num_test])
        parts["train"].append(members[num_validation + num_test :])
    out = {s: np.sort(np.concatenate(p)) for s, p in parts.items()}
    for s in SPLITS:
        if len(out[s]) == 0:
            raise DataError(
                f"{where}: {len(labels)} examples leave the {s!r} split empty with split="
                f"{tuple(split)}; add examples or raise its fraction"
            )
    return out


def _drop_empty(rows: list[tuple[int, str, object]], path: str, skip: bool) -> list:
    empty = [row for row, text, _ in rows if not text.strip()]
    if empty and not skip:
        raise DataError(
            f"{path}: line {empty[0]} has an empty text ({len(empty)} such rows); fix them or "
            "pass skip_empty=True to drop them"
        )
    if empty:
        log.info("%s: dropped %d rows with empty text", path, len(empty))
    return [r for r in rows if r[1].strip()]


def _pixel_stats(images: np.ndarray) -> dict[str, object]:
    # float64 sums over millions of pixels, so the stored numbers measure data, not rounding.
    x = images.astype(np.float64) / 255.0
    return {
        "pixel_mean": float(x.mean()),
        "pixel_std": float(x.std()),
        "channel_mean": x.mean(axis=(0, 1, 2)).tolist(),
        "channel_std": x.std(axis=(0, 1, 2)).tolist(),
    }


def _metadata(name, source, fingerprint, options, class_names, examples) -> dict:
    return {
        "name": name,
        "source": os.path.abspath(source),
        "fingerprint": fingerprint,
        "options": options,
        "class_names": list(class_names),
        "split_sizes": {s: len(e) for s, e in examples.items()},
    }


def _build(name: str, data_dir: str, spec: _Prepared) -> str:
    builder = UserDataset(name=name, data_dir=data_dir, spec=spec)
    builder.download_and_prepare(file_format="array_record")
    sizes = spec.metadata["split_sizes"]
    log.info("prepared user dataset %s in %s: %s", name, builder.data_dir, sizes)
    return os.fspath(builder.data_dir)


def _existing(name: str, data_dir: str, fingerprint: str, overwrite: bool) -> str | None:
    """The built dir if it matches this source and options; refuses a different one."""
    directory = builder_dir(name, data_dir)
    if not os.path.exists(directory):
        return None
    try:
        with open(os.path.join(directory, "metadata.json")) as f:
            stored = json.load(f).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        stored = None
    if stored == fingerprint:
        return directory
    if not overwrite:
        raise DataError(
            f"{directory} already holds a dataset {name!r} built from other files or options; "
            "pick another name, delete that directory, or pass overwrite=True"
        )
    shutil.rmtree(directory)
    return None


def _fingerprint(options: dict, paths: list[str], root: str | None = None) -> str:
    """sha256 over the options and every source file's relative path and bytes."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in paths:
        digest.update(os.path.relpath(path, root).encode() if root else b"")
        try:
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e})") from e
    return digest.hexdigest()


def check_name(name: str) -> None:
    """Fails unless `name` (the NAME of user:NAME) is lower_snake_case."""
    if not _NAME_RE.match(name):
        raise DataError(
            f"dataset name {name!r} must be lower_snake_case (letters, digits, _; starting with "
            "a letter), e.g. my_reviews"
        )


def _check_split(split: tuple[float, float, float]) -> None:
    # TFDS cannot write an empty split, and the pipelines expect all three.
    if len(split) != 3 or not all(f > 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
        raise DataError(
            f"split={tuple(split)} must be 3 fractions (train, validation, test) > 0 that sum to 1"
        )
