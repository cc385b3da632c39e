"""Drift statistics and divergences (jaxtrain/drift.py) and the drift tool's input parsing
(jaxtrain/tools/drift.py), on synthetic arrays; real runs are in tests/e2e/test_drift.py."""

import functools
import json
import math

import jax
import numpy as np
import pytest
from synthetic_data import image_info

from jaxtrain import data as data_lib
from jaxtrain import drift
from jaxtrain.build import create_state_and_steps, model_graphdef
from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError, ConfigError, DataError
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.tools.drift import Transform, parse_data, parse_transform
from jaxtrain.validation import validate_config

IMAGE_INFO = image_info((8, 8, 1))


def test_divergences_match_the_formulas():
    assert drift.divergences([5, 3, 2], [10, 6, 4]) == {"psi": 0.0, "kl": 0.0}
    pe, pa = np.array([0.5, 0.5]), np.array([0.8, 0.2])
    got = drift.divergences([50, 50], [80, 20])
    assert got["psi"] == pytest.approx(np.sum((pa - pe) * np.log(pa / pe)), rel=1e-12)
    assert got["kl"] == pytest.approx(np.sum(pa * np.log(pa / pe)), rel=1e-12)
    assert got["psi"] == pytest.approx(0.3 * math.log(1.6) + 0.3 * math.log(2.5), rel=1e-12)
    # Empty bins are floored, so disjoint samples give a large but finite PSI.
    apart = drift.divergences([10, 0], [0, 10])
    assert math.isfinite(apart["psi"]) and apart["psi"] > 10


def test_many_categories_pool_the_rare_ones_the_same_way_saved_or_not():
    rng = np.random.default_rng(0)
    expected = rng.integers(0, 50, 500).astype(float)
    actual = rng.integers(0, 50, 500).astype(float)
    saved = drift.compact(expected.tolist())
    assert saved["size"] == 500 and len(saved["ids"]) == drift.MAX_CATEGORIES - 1
    assert len(saved["counts"]) == drift.MAX_CATEGORIES and sum(saved["counts"]) == expected.sum()
    assert drift.divergences(saved, actual) == drift.divergences(expected, actual)
    assert drift.compact([1.0, 2.0]) == [1.0, 2.0]
    with pytest.raises(DataError, match="inputs/tokens: 499 values, but the reference has 500"):
        drift.divergences(saved, actual[:-1], "inputs/tokens")
    with pytest.raises(DataError, match="the sample is empty"):
        drift.divergences([1.0, 2.0], [0.0, 0.0])


def test_samples_are_evenly_spaced_and_never_repeat():
    np.testing.assert_array_equal(drift.sample_indices(10, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(drift.sample_indices(3, 512), [0, 1, 2])
    idx = drift.sample_indices(5000, 512)
    assert len(np.unique(idx)) == 512 and idx[-1] < 5000


def test_image_and_prediction_statistics_count_only_unmasked_rows():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 8, 8, 1)).astype(np.uint8)
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    v = images[:4].astype(np.float64) / 255
    stats = jax.jit(drift.image_stats)(images / np.float32(255), mask)
    out = {k: np.asarray(x) for k, x in stats.items()}
    np.testing.assert_array_equal(
        out["inputs/pixels"], np.bincount(np.minimum(v.ravel() * 32, 31).astype(int), minlength=32)
    )
    # An 8x8 grid over 8x8 images: the mass of each pixel position.
    np.testing.assert_allclose(out["inputs/spatial"], v.sum(axis=(0, 3)).ravel(), rtol=1e-5)
    assert out["channel_sum"][0] == pytest.approx(v.sum(), rel=1e-5)
    assert out["pixels_per_channel"] == 4 * 64
    logits = rng.normal(size=(6, 10)).astype(np.float32)
    logits[0, 3] = 20.0  # one confident prediction
    pred = {k: np.asarray(x) for k, x in jax.jit(drift.prediction_stats)(logits, mask).items()}
    np.testing.assert_array_equal(
        pred["predictions/class"], np.bincount(logits[:4].argmax(-1), minlength=10)
    )
    assert pred["predictions/confidence"].sum() == 4 and pred["predictions/confidence"][9] == 1


def test_token_statistics_skip_padding():
    spec = drift.StatsSpec(None, data_lib.TEXT_CLASSIFICATION, vocab_size=6, pad_id=0)
    x = np.array([[3, 4, 4, 0], [5, 0, 0, 0], [1, 1, 1, 1]], np.int32)
    # The last row is padding.
    out = jax.jit(functools.partial(drift.token_stats, spec))(x, np.array([1, 1, 0], np.float32))
    np.testing.assert_array_equal(out["inputs/tokens"], [0, 0, 0, 1, 2, 1])
    # Lengths 3 and 1 of seq_len 4 in 8 bins: bins 6 and 2.
    np.testing.assert_array_equal(np.flatnonzero(out["inputs/length"]), [2, 6])


def test_stats_pass_over_a_model_sums_batches_and_ignores_padding_rows():
    """collect_stats over a 10-example source in batches of 4 (the last one padded with copies
    of example 0, mask 0) counts each example once."""
    c = get_config()
    c.model = model_config("mlp", features=(16,))
    mesh = sharding.create_mesh(1)
    state, _, _ = create_state_and_steps(c, mesh, IMAGE_INFO)
    spec = drift.StatsSpec(model_graphdef(c, IMAGE_INFO), data_lib.IMAGE_CLASSIFICATION, 0.3, 0.4)
    fn = drift.jit_stats(spec, mesh)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 8, 8, 1)).astype(np.uint8)

    class Source:
        where = "synthetic"

        def __len__(self):
            return len(images)

        def read(self, idx):
            return {"inputs": images[idx], "labels": np.zeros(len(idx), np.int64)}

    stats = drift.collect_stats(fn, state, drift.SampleSource(Source(), np.arange(10)),
                                batch_size=4, mesh=mesh)  # fmt: skip
    v = images.astype(np.float64) / 255
    assert stats["num_examples"] == 10
    got = stats["distributions"]
    np.testing.assert_array_equal(
        got["inputs/pixels"], np.bincount(np.minimum(v.ravel() * 32, 31).astype(int))
    )
    np.testing.assert_allclose(got["inputs/spatial"], v.sum(axis=(0, 3)).ravel(), rtol=1e-5)
    assert sum(got["predictions/class"]) == sum(got["predictions/confidence"]) == 10
    assert stats["channels"]["mean"][0] == pytest.approx(v.mean(), rel=1e-5)
    assert stats["channels"]["std"][0] == pytest.approx(v.std(), rel=1e-4)
    figures = drift.compare(stats, stats)
    assert set(figures) == {
        "inputs/pixels", "inputs/spatial", "predictions/class", "predictions/confidence"
    }  # fmt: skip
    assert all(f == {"psi": 0.0, "kl": 0.0} for f in figures.values())
    scalars = drift.drift_scalars(figures)
    assert all(k.startswith("drift/") for k in scalars) and scalars["drift/max_psi"] == 0.0
    # A transform applied while reading changes what the statistics see.
    bright = drift.SampleSource(Source(), np.arange(10), Transform("brightness", 0.5))
    shifted = drift.collect_stats(fn, state, bright, batch_size=4, mesh=mesh)
    assert drift.compare(stats, shifted)["inputs/pixels"]["psi"] > 1.0


def test_transforms_shift_and_rotate_uint8_images():
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 1) * 14
    bright = parse_transform("brightness:0.3")(images)
    expected = np.clip(np.rint(images.astype(np.float32) + np.float32(0.3 * 255)), 0, 255)
    np.testing.assert_array_equal(bright, expected.astype(np.uint8))
    assert bright.dtype == np.uint8 and bright.max() == 255
    np.testing.assert_array_equal(parse_transform("brightness:-1")(images), 0)
    np.testing.assert_array_equal(
        parse_transform("rotate:90")(images), np.rot90(images, 1, axes=(1, 2))
    )
    assert str(parse_transform("rotate:270")) == "rotate:270"


@pytest.mark.parametrize(
    "spec", ["rotate:45", "blur:1", "brightness", "brightness:2", "brightness:nan", "rotate:x"]
)
def test_bad_transforms_say_what_is_allowed(spec):
    with pytest.raises(DataError, match=rf"--transform '{spec}': use brightness:DELTA"):
        parse_transform(spec)


def test_data_names_and_splits():
    assert parse_data("fashion_mnist") == ("fashion_mnist", "test")
    assert parse_data("fashion_mnist:validation") == ("fashion_mnist", "validation")
    assert parse_data("user:parts") == ("user:parts", "test")
    assert parse_data("user:parts:train") == ("user:parts", "train")
    with pytest.raises(DataError, match="split must be one of train, validation, test, got 'tset'"):
        parse_data("fashion_mnist:tset")
    with pytest.raises(DataError, match="unknown dataset 'cifar10'"):
        parse_data("cifar10:test")


def test_unusable_references_name_the_file(tmp_path):
    path = str(tmp_path / drift.REFERENCE_FILE)
    with pytest.raises(CheckpointError, match="no drift reference"):
        drift.read_reference(path)
    (tmp_path / drift.REFERENCE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read the drift reference"):
        drift.read_reference(path)
    (tmp_path / drift.REFERENCE_FILE).write_text(json.dumps({"format": 1}))
    with pytest.raises(CheckpointError, match="not a drift reference"):
        drift.read_reference(path)


def test_negative_sample_size_is_a_config_error():
    c = get_config()
    c.drift.num_examples = -1
    with pytest.raises(ConfigError, match="config.drift.num_examples: must be >= 0"):
        validate_config(c, num_devices=1)
