"""Augmentation: determinism, content correctness, process-split and resume invariance."""

import grain
import numpy as np
import pytest

from jaxtrain.data.augment import AugmentImages, augment_batch, draw_augment_params


def _images(b: int = 16, h: int = 6, w: int = 5, c: int = 1, dtype=np.uint8) -> np.ndarray:
    # Distinct positive values, so every shifted window and flip is recognisable.
    return (np.arange(b * h * w * c).reshape(b, h, w, c) % 250 + 1).astype(dtype)


def test_deterministic_and_seed_dependent():
    x = _images()
    a = augment_batch(x, seed=3, batch_index=7, pad=2, flip=True)
    b = augment_batch(x, seed=3, batch_index=7, pad=2, flip=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, augment_batch(x, seed=4, batch_index=7, pad=2, flip=True))
    assert not np.array_equal(a, augment_batch(x, seed=3, batch_index=8, pad=2, flip=True))
    np.testing.assert_array_equal(x, _images())  # the input is not modified


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shape_and_dtype_preserved(dtype):
    x = _images(dtype=dtype)
    y = augment_batch(x, seed=0, batch_index=0, pad=3, flip=True)
    assert y.shape == x.shape and y.dtype == x.dtype


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x, pad = _images(b=64), 2
    dy, dx, _ = draw_augment_params(seed=1, batch_index=5, row_offset=0, rows=64, pad=pad)
    y = augment_batch(x, seed=1, batch_index=5, pad=pad, flip=False)
    padded = np.zeros((64, 6 + 2 * pad, 5 + 2 * pad, 1), np.uint8)
    padded[:, pad:-pad, pad:-pad] = x
    for i in range(64):
        np.testing.assert_array_equal(y[i], padded[i, dy[i] : dy[i] + 6, dx[i] : dx[i] + 5])
    # All 5 x 5 offsets in [0, 2P] occur over enough examples, and nothing outside.
    assert set(dy) | set(dx) == set(range(2 * pad + 1))
    # An offset of exactly P is the identity crop.
    centred = (dy == pad) & (dx == pad)
    np.testing.assert_array_equal(y[centred], x[centred])


def test_flip_mirrors_left_right():
    x = _images(b=64)
    _, _, flips = draw_augment_params(seed=2, batch_index=0, row_offset=0, rows=64, pad=0)
    y = augment_batch(x, seed=2, batch_index=0, pad=0, flip=True)
    assert 0 < flips.sum() < 64
    np.testing.assert_array_equal(y[flips], x[flips][:, :, ::-1])
    np.testing.assert_array_equal(y[~flips], x[~flips])
    # flip=False and pad=0 is the identity.
    np.testing.assert_array_equal(augment_batch(x, seed=2, batch_index=0, pad=0, flip=False), x)


def test_fill_value_pads_the_border():
    x = np.full((32, 4, 4, 1), 9.0, np.float32)
    y = augment_batch(x, seed=0, batch_index=0, pad=2, flip=False, fill=-1.5)
    assert set(np.unique(y)) == {-1.5, 9.0}


@pytest.mark.parametrize("processes", [2, 4])
def test_process_split_gives_the_same_global_batch(processes):
    x = _images(b=32)
    whole = augment_batch(x, seed=11, batch_index=3, row_offset=0, pad=2, flip=True)
    rows = 32 // processes
    parts = [
        augment_batch(
            x[p * rows : (p + 1) * rows], seed=11, batch_index=3, row_offset=p * rows, pad=2,
            flip=True,
        )
        for p in range(processes)
    ]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def _pipeline(seed: int) -> grain.DatasetIterator:
    images = _images(b=40)
    ds = grain.MapDataset.range(40).shuffle(seed=0).repeat(None).batch(8, drop_remainder=True)
    ds = ds.map(lambda idx: {"inputs": images[idx], "labels": idx})
    ds = ds.map_with_index(AugmentImages(seed=seed, row_offset=0, pad=2, flip=True))
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))


def test_grain_resume_reproduces_the_same_augmentations():
    it = _pipeline(seed=5)
    uninterrupted = [next(it) for _ in range(12)]  # 5 batches per epoch: crosses two epochs
    it = _pipeline(seed=5)
    for _ in range(7):
        next(it)
    resumed = _pipeline(seed=5)
    resumed.set_state(it.get_state())
    for i in range(7, 12):
        np.testing.assert_array_equal(next(resumed)["inputs"], uninterrupted[i]["inputs"])
    # The same example is augmented differently in the next epoch (another batch index/row).
    epochs = [{}, {}]
    for i, batch in enumerate(uninterrupted[:10]):
        for label, image in zip(batch["labels"], batch["inputs"], strict=True):
            epochs[i // 5][int(label)] = image
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(40))
    same = sum(np.array_equal(epochs[0][k], epochs[1][k]) for k in range(40))
    assert same < 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="pad must be >= 0"):
        augment_batch(_images(), seed=0, batch_index=0, pad=-1, flip=False)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        augment_batch(_images()[..., 0], seed=0, batch_index=0, pad=1, flip=False)
    with pytest.raises(ValueError, match="must be >= 0"):
        augment_batch(_images(), seed=-1, batch_index=0, pad=1, flip=False)
