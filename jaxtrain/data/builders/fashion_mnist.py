"""Offline TFDS builder for Fashion-MNIST, written as array_record without TensorFlow.

Source files, first match wins: the user's `manual_dir`, Debian's `dataset-fashion-mnist`
package, then the upstream download. The decoded arrays are checked against the dataset's known
class balance and pixel mean, because Debian re-gzipped the files and gzip checksums differ.
"""

import gzip
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from jaxtrain.errors import DataError

log = logging.getLogger(__name__)

NAME = "jaxtrain_fashion_mnist"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SHAPE = (28, 28, 1)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
UPSTREAM_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# Published statistics of the standard dataset (pixels scaled to [0, 1]).
TRAIN_PIXEL_MEAN = 0.2860
TRAIN_PIXEL_STD = 0.3530
_MEAN_TOLERANCE = 1e-3

# IDX magic numbers: 0x0803 = uint8 rank-3 (images), 0x0801 = uint8 rank-1 (labels).
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049

IDX_FILES = tuple(f for files in SPLIT_FILES.values() for f in files)


class FashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Fashion-MNIST from local IDX files (or the upstream URLs as a last resort)."""

    # Not registered: tfds ships its own `fashion_mnist`, and jaxtrain dispatches explicitly.
    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Offline array_record build from the upstream IDX files."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the four Fashion-MNIST IDX files (" + ", ".join(IDX_FILES) + ") in manual_dir, "
        "or run `apt-get install -y dataset-fashion-mnist`."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Zalando's Fashion-MNIST: 28x28 grayscale images of 10 clothing classes.",
            features=tfds.features.FeaturesDict(
                {
                    # Image features need TensorFlow to encode PNG; a zlib tensor does not.
                    "image": tfds.features.Tensor(
                        shape=IMAGE_SHAPE,
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.ZLIB,
                    ),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep IDX order so example i in errors and splits is row i of the source file.
            disable_shuffling=True,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            license="MIT",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        paths = _locate_files(dl_manager)
        arrays = {split: read_split(split, paths) for split in SPLIT_FILES}
        check_statistics(arrays)
        return {
            split: self._generate_examples(images, labels)
            for split, (images, labels) in arrays.items()
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image[..., None], "label": int(label)}


def prepare_fashion_mnist(data_dir: str, manual_dir: str | None = None) -> None:
    """Builds the dataset under `data_dir/jaxtrain_fashion_mnist/<VERSION>/` (no-op if built)."""
    builder = FashionMnist(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return
    # An explicit manual_dir means "use local files": fail now rather than after minutes of
    # download retries on an offline machine.
    if manual_dir is not None and not (_has_all_files(manual_dir) or _has_all_files(SYSTEM_DIR)):
        missing = [f for f in IDX_FILES if not os.path.isfile(os.path.join(manual_dir, f))]
        raise FileNotFoundError(
            f"manual_dir {manual_dir} lacks {missing} (and {SYSTEM_DIR} is incomplete). "
            + FashionMnist.MANUAL_DOWNLOAD_INSTRUCTIONS
        )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config, file_format="array_record")


def read_idx(path: str, magic: int) -> np.ndarray:
    """Decodes one gzipped IDX file of uint8 data; errors name the file."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from err
    found = int.from_bytes(data[:4], "big")
    if len(data) < 4 or found != magic:
        raise DataError(f"{path}: bad IDX magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise DataError(
            f"{path}: IDX header says shape {shape} but holds {len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def check_statistics(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Fails loudly unless the arrays are the standard Fashion-MNIST."""
    for split, (_, labels) in arrays.items():
        expected = SPLIT_SIZES[split] // len(CLASS_NAMES)
        counts = np.bincount(labels, minlength=len(CLASS_NAMES))
        if len(counts) != len(CLASS_NAMES) or np.any(counts != expected):
            raise DataError(
                f"Fashion-MNIST {split}: class counts {counts.tolist()}, expected {expected} each"
            )
    # Mean over 47M pixels in float64 so the tolerance measures data, not rounding.
    mean = arrays["train"][0].mean(dtype=np.float64) / 255.0
    if abs(mean - TRAIN_PIXEL_MEAN) > _MEAN_TOLERANCE:
        raise DataError(
            f"Fashion-MNIST train: pixel mean {mean:.4f}, expected {TRAIN_PIXEL_MEAN} "
            f"(tolerance {_MEAN_TOLERANCE}); the source files are not the standard dataset"
        )


def read_split(split: str, paths: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images [N, 28, 28], labels [N]) of one split, given {IDX file name: path}."""
    images_file, labels_file = SPLIT_FILES[split]
    images = read_idx(paths[images_file], _IMAGES_MAGIC)
    labels = read_idx(paths[labels_file], _LABELS_MAGIC)
    num = SPLIT_SIZES[split]
    if images.shape != (num, *IMAGE_SHAPE[:2]):
        raise DataError(f"{paths[images_file]}: shape {images.shape}, expected ({num}, 28, 28)")
    if labels.shape != (num,):
        raise DataError(f"{paths[labels_file]}: shape {labels.shape}, expected ({num},)")
    return images, labels


def _locate_files(dl_manager: tfds.download.DownloadManager) -> dict[str, str]:
    """Returns {file name: local path}, from the first source that has all four files."""
    manual_dir = _manual_dir(dl_manager)
    for source_dir in (manual_dir, SYSTEM_DIR):
        if source_dir and _has_all_files(source_dir):
            log.info("Reading Fashion-MNIST IDX files from %s", source_dir)
            return {f: os.path.join(source_dir, f) for f in IDX_FILES}
    try:
        paths = dl_manager.download({f: UPSTREAM_URL + f for f in IDX_FILES})
    except Exception as err:  # Offline machines land here; say what to do instead.
        local_dirs = f"{manual_dir or 'manual_dir (none given)'} or {SYSTEM_DIR}"
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {local_dirs}, and downloading them from "
            f"{UPSTREAM_URL} failed ({err}). " + FashionMnist.MANUAL_DOWNLOAD_INSTRUCTIONS
        ) from err
    return {f: os.fspath(p) for f, p in paths.items()}


def _manual_dir(dl_manager: tfds.download.DownloadManager) -> str | None:
    try:
        return os.fspath(dl_manager.manual_dir)
    except AssertionError:  # tfds's way of saying the manual dir is missing or empty.
        return None


def _has_all_files(directory: str) -> bool:
    return all(os.path.isfile(os.path.join(directory, f)) for f in IDX_FILES)
