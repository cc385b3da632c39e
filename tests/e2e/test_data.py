"""Tests for the Fashion-MNIST builder and the grain pipelines, on the real dataset.

Raw IDX files are looked up in $JAXTRAIN_FMNIST_RAW, /usr/share/datasets/fashion-mnist, then
<repo>/.data/raw/fashion-mnist/...; a prepared $JAXTRAIN_DATA_DIR is reused to save ~10 s.
"""

import collections
import gzip
import os
import pathlib
import shutil

import numpy as np
import pytest

from jaxtrain.data import (
    DataOptions,
    get_dataset_info,
    image_source,
    pipeline,
    read_image_split,
    registry,
    sampler,
)
from jaxtrain.data.builders import fashion_mnist
from jaxtrain.data.image_source import _stack_images, check_examples
from jaxtrain.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[2]
NAME = "fashion_mnist"
MEAN, STD = 0.2860, 0.3530
IDX_FILES = fashion_mnist.IDX_FILES


def _find_raw_dir() -> str | None:
    candidates = (
        os.environ.get("JAXTRAIN_FMNIST_RAW"),
        "/usr/share/datasets/fashion-mnist",
        str(REPO / ".data/raw/fashion-mnist/usr/share/datasets/fashion-mnist"),
    )
    for candidate in candidates:
        if candidate and all(os.path.isfile(os.path.join(candidate, f)) for f in IDX_FILES):
            return candidate
    return None


def _require_raw_dir() -> str:
    raw_dir = _find_raw_dir()
    if raw_dir is None:
        pytest.fail(
            "Fashion-MNIST IDX files not found. Run `apt-get install -y dataset-fashion-mnist`, "
            "extract the .deb into .data/raw/fashion-mnist, or set JAXTRAIN_FMNIST_RAW."
        )
    return raw_dir


@pytest.fixture(scope="session")
def raw_dir() -> str:
    return _require_raw_dir()


@pytest.fixture(scope="session")
def raw_arrays(raw_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        split: fashion_mnist.read_split(split, _raw_paths(raw_dir)) for split in ("train", "test")
    }


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    cached = os.environ.get("JAXTRAIN_DATA_DIR")
    if cached and fashion_mnist.FashionMnist(data_dir=cached).is_prepared():
        return cached
    target = cached or str(tmp_path_factory.mktemp("tfds"))
    registry.prepare_dataset(NAME, target, manual_dir=_require_raw_dir())
    return target


def _raw_paths(raw_dir: str) -> dict[str, str]:
    return {f: os.path.join(raw_dir, f) for f in IDX_FILES}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Undoes the pipeline's normalisation, to compare with raw pixels."""
    return np.rint((image * STD + MEAN) * 255.0).astype(np.uint8)


def _source(data_dir: str, split: str, *, validation_size: int, num_classes=10, in_memory=True):
    return image_source.open_image_source(
        NAME,
        split,
        data_dir=data_dir,
        validation_size=validation_size,
        num_classes=num_classes,
        in_memory=in_memory,
    )


def _train_iterator(
    data_dir: str, *, validation_size=5000, num_classes=10, in_memory=True, **kwargs
):
    source = _source(
        data_dir,
        "train",
        validation_size=validation_size,
        num_classes=num_classes,
        in_memory=in_memory,
    )
    args = dict(global_batch_size=32, seed=0, images=pipeline.ImageOptions(MEAN, STD))
    return pipeline.create_train_iterator(source, **(args | kwargs))


def _eval_iterator(
    data_dir: str, split: str, *, validation_size: int, num_classes=10, in_memory=True, **kwargs
):
    source = _source(
        data_dir,
        split,
        validation_size=validation_size,
        num_classes=num_classes,
        in_memory=in_memory,
    )
    images = pipeline.ImageOptions(MEAN, STD)
    return pipeline.create_eval_iterator(source, images=images, **kwargs)


# Builder and decoding.


def test_decoded_idx_has_published_statistics(raw_arrays):
    train_images, train_labels = raw_arrays["train"]
    test_images, test_labels = raw_arrays["test"]
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(train_labels), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test_labels), np.full(10, 1000))
    assert abs(train_images.mean(dtype=np.float64) / 255 - MEAN) < 1e-3
    assert abs(train_images.std(dtype=np.float64) / 255 - STD) < 1e-3
    fashion_mnist.check_statistics(raw_arrays)


def test_check_statistics_rejects_other_data(raw_arrays):
    images, labels = raw_arrays["train"]
    with pytest.raises(ValueError, match="class counts"):
        fashion_mnist.check_statistics({"train": (images, np.zeros_like(labels))})
    with pytest.raises(ValueError, match="pixel mean"):
        fashion_mnist.check_statistics({"train": (images // 2, labels)})


@pytest.mark.parametrize(
    "bad_file, content, message",
    [
        ("train-labels-idx1-ubyte.gz", gzip.compress(b"\0\0\x08\x03" + bytes(60)), "magic"),
        ("t10k-images-idx3-ubyte.gz", None, "gzip"),  # None: truncate the real file.
    ],
    ids=["wrong_magic", "truncated"],
)
def test_bad_idx_file_is_named(tmp_path, raw_dir, bad_file, content, message):
    manual_dir = tmp_path / "manual"
    shutil.copytree(raw_dir, manual_dir)
    if content is None:
        content = (manual_dir / bad_file).read_bytes()[:5000]
    (manual_dir / bad_file).write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        registry.prepare_dataset(NAME, str(tmp_path / "data"), manual_dir=str(manual_dir))
    assert str(manual_dir / bad_file) in str(err.value)


def test_incomplete_manual_dir_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", str(tmp_path / "no_system_copy"))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        registry.prepare_dataset(NAME, str(tmp_path / "data"), manual_dir=str(tmp_path))


def test_prepare_is_a_noop_when_prepared(data_dir):
    info_file = pathlib.Path(data_dir, "jaxtrain_fashion_mnist", "1.0.0", "dataset_info.json")
    mtime = info_file.stat().st_mtime_ns
    registry.prepare_dataset(NAME, data_dir)
    assert info_file.stat().st_mtime_ns == mtime


def test_prepared_splits_keep_source_order(data_dir, raw_arrays):
    builder = fashion_mnist.FashionMnist(data_dir=data_dir)
    for split, index in (("train", 0), ("train", 59999), ("test", 1234)):
        example = builder.as_data_source(split)[index]
        images, labels = raw_arrays[split]
        np.testing.assert_array_equal(example["image"][..., 0], images[index])
        assert example["label"] == labels[index]


# Pipeline.


def test_dataset_info_split_sizes(data_dir):
    info = get_dataset_info(DataOptions(NAME, data_dir, validation_size=5000))
    assert (info.num_train, info.num_validation, info.num_test) == (55000, 5000, 10000)
    assert info.num_classes == 10 and info.input_shape == (28, 28, 1)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[-1] == "Ankle boot"
    assert get_dataset_info(DataOptions(NAME, data_dir, validation_size=0)).num_train == 60000


def test_train_batch_format(data_dir, raw_arrays):
    batch = next(_train_iterator(data_dir))
    assert set(batch) == {"inputs", "labels", "mask"}
    assert (batch["mask"] == 1).all()
    assert batch["inputs"].dtype == np.float32 and batch["inputs"].shape == (32, 28, 28, 1)
    assert batch["labels"].dtype == np.int32 and batch["labels"].shape == (32,)
    # Every example must be a real training image (not one of the validation tail).
    train_images = {image.tobytes() for image in raw_arrays["train"][0][:55000]}
    assert all(_to_uint8(image[..., 0]).tobytes() in train_images for image in batch["inputs"])


def test_same_seed_same_batches_and_state_restore(data_dir):
    first = _train_iterator(data_dir, seed=7)
    batches = [next(first) for _ in range(3)]
    state = first.get_state()
    expected_next = [next(first) for _ in range(2)]

    replay = _train_iterator(data_dir, seed=7)
    for batch in batches:
        np.testing.assert_array_equal(next(replay)["inputs"], batch["inputs"])
    restored = _train_iterator(data_dir, seed=7)
    restored.set_state(state)
    for expected in expected_next:
        batch = next(restored)
        np.testing.assert_array_equal(batch["inputs"], expected["inputs"])
        np.testing.assert_array_equal(batch["labels"], expected["labels"])
    other_seed = next(_train_iterator(data_dir, seed=8))
    assert not np.array_equal(other_seed["inputs"], batches[0]["inputs"])


def test_process_shards_are_disjoint_and_cover_an_epoch(data_dir, raw_arrays):
    # validation_size=59000 leaves 1000 train examples: one epoch is 500 per process.
    seen = []
    for process_index in range(2):
        iterator = _train_iterator(
            data_dir,
            validation_size=59000,
            global_batch_size=100,
            process_index=process_index,
            process_count=2,
        )
        epoch = [next(iterator) for _ in range(10)]
        assert all(batch["inputs"].shape[0] == 50 for batch in epoch)
        seen.append([_to_uint8(x[..., 0]).tobytes() for b in epoch for x in b["inputs"]])
    expected = collections.Counter(image.tobytes() for image in raw_arrays["train"][0][:1000])
    assert collections.Counter(seen[0]) + collections.Counter(seen[1]) == expected


def test_eval_padding_mask_covers_split_once(data_dir, raw_arrays):
    label_counts = np.zeros(10)
    num_batches = []
    for process_index in range(2):
        batches = list(
            _eval_iterator(
                data_dir,
                "validation",
                validation_size=5000,
                global_batch_size=768,  # 5000 = 6.5 batches: the last one is padded.
                num_classes=10,
                process_index=process_index,
                process_count=2,
            )
        )
        num_batches.append(len(batches))
        for batch in batches:
            assert batch["inputs"].shape == (384, 28, 28, 1) and batch["mask"].dtype == np.float32
            label_counts += np.bincount(batch["labels"], weights=batch["mask"], minlength=10)
    assert num_batches == [7, 7]
    np.testing.assert_array_equal(label_counts, np.bincount(raw_arrays["train"][1][55000:]))


def test_eval_test_split_mask_sums_to_split_size(data_dir):
    batches = _eval_iterator(
        data_dir,
        "test",
        validation_size=0,
        global_batch_size=3000,
        num_classes=10,
    )
    masks = [batch["mask"] for batch in batches]
    assert [len(mask) for mask in masks] == [3000] * 4
    assert sum(mask.sum() for mask in masks) == 10000


# Errors.


def test_label_out_of_range_names_split_and_example(data_dir):
    # Half the classes are out of range, so the first batch of 32 surely holds one.
    with pytest.raises(ValueError, match=r"'train': example \d+ has label \d outside \[0, 5\)"):
        next(_train_iterator(data_dir, num_classes=5))
    # The first test image is an ankle boot (label 9).
    message = "fashion_mnist split 'test': example 0 has label 9 outside [0, 5)"
    for in_memory in (True, False):  # checked up front in RAM; per batch when streaming
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
            batches = _eval_iterator(
                data_dir,
                "test",
                validation_size=0,
                global_batch_size=8,
                num_classes=5,
                in_memory=in_memory,
            )
            next(batches)


def test_examples_are_checked_before_training():
    labels = np.array([0, 1, 2, 1])
    images = np.zeros((4, 2, 2, 1), np.float32)
    images[2, 1, 0, 0] = np.nan
    with pytest.raises(DataError, match="split 'x': example 2 has NaN or Inf features"):
        check_examples(images, labels, "split 'x'", num_classes=3)
    with pytest.raises(DataError, match="example 1 has label 7 outside"):
        check_examples(images, np.array([0, 7, 0, 0]), "split 'x'", num_classes=3)
    rows = [{"image": np.zeros((2, 2))}, {"image": np.zeros((2, 2))}, {"image": np.zeros((3, 2))}]
    with pytest.raises(DataError, match=r"example 12 has image shape \(3, 2\), expected \(2, 2\)"):
        _stack_images(rows, 10, "split 'x'")


def test_missing_dataset_says_how_to_prepare(tmp_path):
    command = f"python -m jaxtrain prepare fashion_mnist --data_dir {tmp_path}"
    with pytest.raises(FileNotFoundError) as err:
        get_dataset_info(DataOptions(NAME, str(tmp_path), validation_size=0))
    assert command in str(err.value)
    with pytest.raises(registry.DatasetNotPreparedError):
        _train_iterator(str(tmp_path))


def test_bad_arguments_are_named(data_dir):
    with pytest.raises(ValueError, match="fashion_mnist"):
        get_dataset_info(DataOptions("cifar10", data_dir, validation_size=0))
    with pytest.raises(ValueError, match="batch_size"):
        _train_iterator(data_dir, global_batch_size=33, process_count=2)
    with pytest.raises(ValueError, match="validation_size"):
        get_dataset_info(DataOptions(NAME, data_dir, validation_size=60000))
    with pytest.raises(ValueError, match="validation_size is 0"):
        _eval_iterator(
            data_dir,
            "validation",
            validation_size=0,
            global_batch_size=8,
            num_classes=10,
        )


def test_global_batch_is_the_same_for_any_process_count(data_dir):
    whole = _train_iterator(data_dir, global_batch_size=64, process_index=0, process_count=1)
    halves = [
        _train_iterator(data_dir, global_batch_size=64, process_index=p, process_count=2)
        for p in range(2)
    ]
    for _ in range(3):
        expected = next(whole)
        parts = [next(h) for h in halves]
        np.testing.assert_array_equal(
            np.concatenate([p["inputs"] for p in parts]), expected["inputs"]
        )
        np.testing.assert_array_equal(
            np.concatenate([p["labels"] for p in parts]), expected["labels"]
        )


def test_streaming_reads_the_same_batches_as_in_memory(data_dir):
    streaming, in_memory = _train_iterator(data_dir, in_memory=False), _train_iterator(data_dir)
    for batch, expected in [(next(streaming), next(in_memory)) for _ in range(2)]:
        for key in ("inputs", "labels", "mask"):
            np.testing.assert_array_equal(batch[key], expected[key])


def test_image_eval_padding_rows_are_zero(data_dir):
    *_, last = _eval_iterator(data_dir, "test", validation_size=0, global_batch_size=3000)
    padding = last["mask"] == 0
    assert padding.sum() == 4 * 3000 - 10000
    assert (last["inputs"][padding] == 0).all() and (last["labels"][padding] == 0).all()


def test_decoded_splits_are_cached_and_read_only(data_dir):
    train = _source(data_dir, "train", validation_size=5000)
    validation = _source(data_dir, "validation", validation_size=1000)
    # Both are views of one decoded TFDS "train" split: decoded once per process.
    images, labels = read_image_split(
        NAME, "train", data_dir=data_dir, validation_size=0, num_classes=10
    )
    assert train.images.base is validation.images.base is images.base
    np.testing.assert_array_equal(validation.images, images[59000:])
    for array in (images, labels, train.labels()):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
        with pytest.raises(ValueError):
            array.flags.writeable = True
    batch = train.read(np.arange(4))
    batch["inputs"][:] = 0  # reads are copies: the cache is untouched
    assert train.images[:4].any()


def test_balanced_sampling_draws_classes_uniformly():
    labels = np.array([0] * 90 + [1] * 10)
    batches = sampler.train_index_batches(
        100,
        global_batch_size=1000,
        seed=0,
        process_index=0,
        process_count=1,
        balance_labels=labels,
    )
    drawn = np.concatenate([batches[i] for i in range(4)])
    assert abs(labels[drawn].mean() - 0.5) < 0.03
    np.testing.assert_array_equal(batches[3], batches[3])  # deterministic per position
    with pytest.raises(DataError, match="where: balanced sampling needs at least two classes"):
        sampler.train_index_batches(
            3,
            global_batch_size=2,
            seed=0,
            process_index=0,
            process_count=1,
            balance_labels=np.zeros(3),
            where="where",
        )


def test_registry_is_the_one_list_of_datasets():
    assert registry.dataset_names() == (
        "fashion_mnist",
        "shakespeare",
        "shakespeare_by_work",
        "mr_polarity",
    )
    assert set(registry.default_dataset_names()) <= set(registry.dataset_names())
    for name in (*registry.dataset_names(), "user:my_reviews"):
        registry.validate_dataset_name(name)
    assert registry.get_task("shakespeare_by_work") == registry.LANGUAGE_MODELING
    valid = "fashion_mnist, shakespeare, shakespeare_by_work, mr_polarity, or user:NAME"
    with pytest.raises(DataError, match=f"unknown dataset 'cifar10'; valid names: {valid}"):
        registry.validate_dataset_name("cifar10")
    with pytest.raises(DataError, match="lower_snake_case"):
        registry.validate_dataset_name("user:My Data")
    assert registry.pixel_stats(NAME, "") == (MEAN, STD)
    with pytest.raises(DataError, match="mr_polarity is not an image dataset"):
        registry.pixel_stats("mr_polarity", "")


def test_decoded_splits_are_kept_on_disk_and_redone_when_damaged(data_dir, raw_arrays):
    """A decoded split is written beside the prepared dataset and mapped by later processes;
    a damaged file is decoded again; the arrays are the raw IDX files' either way."""

    def open_test_split():
        image_source._decoded.clear()  # as a new process: only the files on disk remain
        return image_source.open_image_source(
            "fashion_mnist", "test", data_dir=data_dir, validation_size=5000, num_classes=10
        )

    want_images, want_labels = raw_arrays["test"]
    first = open_test_split()
    files = sorted(pathlib.Path(data_dir).glob(f"**/{image_source.DECODED_DIR}/test-*.npy"))
    assert [f.name.split(".", 1)[1] for f in files] == ["images.npy", "labels.npy"]
    mapped = open_test_split()
    assert isinstance(mapped.images, np.memmap) and not mapped.images.flags.writeable
    for split in (first, mapped):
        np.testing.assert_array_equal(split.images[..., 0], want_images)
        np.testing.assert_array_equal(split.labels(), want_labels)
    # Truncated (not the split any more); replaced, not rewritten in place, so another process
    # that has the file mapped keeps its intact copy.
    damaged = files[0].with_suffix(".damaged")
    damaged.write_bytes(files[0].read_bytes()[:1000])
    os.replace(damaged, files[0])
    redone = open_test_split()
    assert not isinstance(redone.images, np.memmap)
    np.testing.assert_array_equal(redone.images[..., 0], want_images)
    assert isinstance(open_test_split().images, np.memmap)  # written again


def test_prepare_command_leaves_every_split_decoded(data_dir, raw_arrays, tmp_path, run_cli):
    """`prepare` of an image dataset also writes its decoded splits, so the first training run
    maps them instead of decoding; they equal the raw IDX files."""
    prepared = fashion_mnist.FashionMnist(data_dir=data_dir).data_dir  # DIR/NAME/VERSION
    copy = tmp_path / "data"
    shutil.copytree(
        pathlib.Path(prepared).parent,
        copy / pathlib.Path(prepared).parent.name,
        ignore=shutil.ignore_patterns(image_source.DECODED_DIR),
    )
    assert not list(copy.glob(f"**/{image_source.DECODED_DIR}"))
    result = run_cli("prepare", "fashion_mnist", "--data_dir", str(copy))
    assert result.returncode == 0, result.stderr[-2000:]
    for split in ("train", "test"):
        images, labels = (
            np.load(next(copy.glob(f"**/{image_source.DECODED_DIR}/{split}-*.{kind}.npy")))
            for kind in ("images", "labels")
        )
        np.testing.assert_array_equal(images[..., 0], raw_arrays[split][0])
        np.testing.assert_array_equal(labels, raw_arrays[split][1])
