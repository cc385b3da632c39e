"""Fingerprints (jaxtrain/fingerprint.py): they see every bit, size a difference, do not depend
on the mesh, and change no number of the run. Synthetic arrays and batches."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic_data import image_info

from jaxtrain.build import compile_steps, create_state_and_spec
from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.fingerprint import FingerprintLog, leaf_fingerprint, leaf_names
from jaxtrain.fingerprint_records import FILENAME, read_fingerprints, supersede_fingerprints
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.tools.diverge import leaf_difference
from jaxtrain.validation import validate_config

INFO = image_info((8, 8, 1))


def _checksum(x) -> int:
    return int(jax.jit(leaf_fingerprint)(x)[1])


def _record(x) -> list:
    moments, checksum = jax.device_get(jax.jit(leaf_fingerprint)(x))
    return [*(float(v) for v in moments), int(checksum), int(np.size(x))]


def test_checksum_sees_every_single_bit_flip():
    x = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    base = _checksum(x)
    bits = x.view(np.uint32)
    for index in [(0, 0), (1, 3), (2, 6)]:
        for bit in (0, 17, 31):  # lowest mantissa bit, a middle one, the sign
            flipped = bits.copy()
            flipped[index] ^= np.uint32(1 << bit)
            assert _checksum(flipped.view(np.float32)) != base, (index, bit)
    assert _checksum(x.copy()) == base


def test_checksum_sees_order_sign_swaps_and_signed_zero():
    x = np.asarray([1.5, -1.5, 2.0, 0.0], np.float32)
    base = _checksum(x)
    assert _checksum(x[[1, 0, 2, 3]]) != base  # x and -x swapped
    assert _checksum(x[[0, 1, 3, 2]]) != base
    assert _checksum(np.asarray([1.5, -1.5, 2.0, -0.0], np.float32)) != base
    assert _checksum(x.reshape(2, 2)) == base  # the row-major index, not the shape


@pytest.mark.parametrize(
    "x",
    [
        jnp.arange(6, dtype=jnp.int32),
        jnp.asarray([True, False, True]),
        jnp.arange(4, dtype=jnp.uint32),
        jnp.linspace(-1, 1, 5, dtype=jnp.bfloat16),
        jnp.asarray(3, jnp.int32),
    ],
    ids=["int32", "bool", "uint32", "bfloat16", "scalar"],
)
def test_every_dtype_has_a_fingerprint_that_sees_a_change(x):
    changed = x + 1 if x.ndim == 0 else x.at[1].set(x[0])
    assert _checksum(x) != _checksum(changed)
    moments = jax.device_get(jax.jit(leaf_fingerprint)(x)[0])
    assert moments[0] == pytest.approx(float(jnp.sum(x.astype(jnp.float32))), rel=1e-2)


def test_leaf_difference_sizes_a_difference():
    rng = np.random.default_rng(1)
    a = rng.normal(size=4096).astype(np.float32)
    for rel in (1e-6, 1e-3, 0.3):
        b = a + rel * np.linalg.norm(a) * rng.normal(size=a.size).astype(np.float32) / 64
        delta, scale = leaf_difference(_record(a), _record(b))
        true = np.linalg.norm(a - b) / np.linalg.norm(a)
        assert true / 4 < delta / scale < 4 * true, (rel, delta / scale, true)
    assert leaf_difference(_record(a), _record(a)) == (0.0, pytest.approx(np.linalg.norm(a)))


def test_leaf_names_read_like_paths():
    tree = {"params": {"dense": [{"kernel": 1}]}, "step": 2}
    assert leaf_names(tree) == ["params/dense/0/kernel", "step"]


def _mlp_config(**overrides):
    c = get_config()
    c.model = model_config("mlp", features=(16,), dropout=0.5)
    c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = "sgd", "constant", 0.5
    for key, value in overrides.items():
        c[key] = value
    return c


def _batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
        "labels": rng.integers(0, 10, 16).astype(np.int32),
        "mask": np.ones(16, np.float32),
    }


def _train(c, workdir, steps: int = 3):
    """Like the loop: fingerprints before and after each step when due. Returns the final
    state and the params before the last step."""
    mesh = sharding.create_mesh(1)
    state, spec, state_sharding = create_state_and_spec(c, mesh, INFO)
    train, _ = compile_steps(c, mesh, spec, state_sharding)
    log = FingerprintLog(spec, mesh, str(workdir), every=c.fingerprint_every, enabled=True)
    log.start(state, 0)
    for step in range(steps):
        batch = sharding.make_global_batch(_batch(step), sharding.batch_sharding(mesh))
        before = jax.device_get(state.params)  # the state is donated to the step
        fp = log.grads(state, batch, step + 1)
        state, _ = train(state, batch)
        log.write(step + 1, state, fp)
    return state, before


def test_fingerprints_change_no_number_and_record_the_step(tmp_path):
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on, before = _train(_mlp_config(fingerprint_every=1), tmp_path / "on")
    off, _ = _train(_mlp_config(fingerprint_every=0), tmp_path / "off")
    chex.assert_trees_all_equal(on, off)  # bitwise: the train step's program is untouched
    assert not (tmp_path / "off" / FILENAME).exists()
    records = read_fingerprints(str(tmp_path / "on"))
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert not any(n.startswith("grads/") for n in records[0]["leaves"])  # no update yet
    final = dict(zip(leaf_names(on), jax.tree.leaves(on), strict=True))
    for name, value in final.items():
        recorded, direct = records[-1]["leaves"][name], _record(value)
        assert recorded[-2:] == direct[-2:], name  # checksum and size
        np.testing.assert_allclose(recorded[:-2], direct[:-2], rtol=1e-6, atol=1e-7)
    # The recorded gradient is update 3's: plain SGD moved the params by -lr * gradient.
    moved = jax.tree.map(lambda b, a: (b - np.asarray(a)) / 0.5, before, on.params)
    for name, g in zip(leaf_names(moved), jax.tree.leaves(moved), strict=True):
        sumsq = records[-1]["leaves"][f"grads/{name}"][1]
        np.testing.assert_allclose(sumsq, np.sum(np.square(g)), rtol=1e-3, atol=1e-9)
    assert records[-1]["leaves"]["batch/labels"][-2:] == _record(_batch(2)["labels"])[-2:]


def test_resume_drops_records_after_the_restored_step_and_a_torn_line(tmp_path):
    path = tmp_path / FILENAME
    lines = [json.dumps({"step": s, "leaves": {}}) for s in (0, 5, 10, 15)]
    path.write_text("\n".join(lines) + '\n{"step": 20, "lea')
    supersede_fingerprints(str(tmp_path), 10)
    assert [r["step"] for r in read_fingerprints(str(tmp_path))] == [0, 5, 10]
    supersede_fingerprints(str(tmp_path / "missing"), 10)  # no file: nothing to do


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fingerprint_every": -1}, "config.fingerprint_every: must be >= 0"),
        ({"fingerprint_every": 5, "num_seeds": 2}, "config.fingerprint_every: is not supported"),
    ],
)
def test_bad_fingerprint_every_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_mlp_config(**overrides), 1)


@pytest.mark.multidevice
@pytest.mark.parametrize("spec", [("data", None), (None, "model"), ("data", "model")])
def test_fingerprint_does_not_depend_on_the_mesh(spec):
    """Rows, columns or both split over 8 devices (as FSDP / tensor parallelism split params):
    the same checksum, and moments equal up to the order of the float sums."""
    x = np.random.default_rng(2).normal(size=(16, 24)).astype(np.float32)
    auto = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=auto)
    placed = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))
    one = jax.device_get(jax.jit(leaf_fingerprint)(x))
    eight = jax.device_get(jax.jit(leaf_fingerprint)(placed))
    assert int(one[1]) == int(eight[1])
    np.testing.assert_allclose(one[0], eight[0], rtol=1e-5, atol=1e-4)
