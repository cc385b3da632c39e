"""optimizer.grad_accum_steps=auto (jaxtrain/batch_fit.py): the fewest micro-batches whose
compiled step fits optimizer.memory_budget_gb, on a tiny synthetic MLP.

The model is chosen so activations dominate its memory (4 input features, 1024 hidden units,
batch 169 = 13 x 13): XLA's buffer assignment shrinks with every accumulation count (1, 13, 169).
"""

import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic_data import image_info

from jaxtrain import batch_fit
from jaxtrain.build import create_state_and_steps, params_digest
from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.validation import validate_config

INFO = image_info((2, 2, 1))
BATCH = 169


def _config(accum, budget_gb=0.0):
    c = get_config()
    c.model = model_config("mlp", features=(1024,), norm="none", dropout=0.0)
    c.batch_size = BATCH
    c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = "sgd", "constant", 0.1
    c.optimizer.grad_accum_steps, c.optimizer.memory_budget_gb = accum, budget_gb
    return c


def _batches(n):
    rng = np.random.default_rng(0)
    return [
        {
            "inputs": rng.normal(size=(BATCH, 2, 2, 1)).astype(np.float32),
            "labels": rng.integers(0, 10, BATCH).astype(np.int32),
            "mask": np.ones(BATCH, np.float32),
        }
        for _ in range(n)
    ]


def _train(c, batches):
    mesh = sharding.create_mesh(1)
    state, train, _ = create_state_and_steps(c, mesh, INFO)
    losses = []
    for b in batches:
        state, m = train(state, sharding.make_global_batch(b, sharding.batch_sharding(mesh)))
        losses.append(float(m["loss"]))
    return state, train, losses


def test_candidates_keep_the_batch_divisible():
    assert batch_fit.accum_candidates(169, 1) == (1, 13, 169)
    assert batch_fit.accum_candidates(96, 8) == (1, 2, 3, 4, 6, 12)
    assert all(96 % (8 * a) == 0 for a in batch_fit.accum_candidates(96, 8))


def test_a_budget_too_small_for_one_pass_picks_more_micro_batches_and_trains(caplog):
    # ~1.5 MB at 1, ~0.33 MB at 13, ~0.14 MB at 169 (XLA CPU buffer assignment).
    caplog.set_level("INFO", logger="jaxtrain.batch_fit")
    batches = _batches(2)
    state, train, losses = _train(_config("auto", budget_gb=0.001), batches)
    assert train.grad_accum_steps == 13
    assert np.all(np.isfinite(losses)) and int(state.step) == 2
    chose = [r.getMessage() for r in caplog.records if "chose" in r.getMessage()]
    assert len(chose) == 1 and "chose 13" in chose[0] and "did not fit: 1: 1." in chose[0]
    # The same experiment as asking for 13 micro-batches directly, bit for bit.
    fixed, _, fixed_losses = _train(_config(13), batches)
    np.testing.assert_array_equal(params_digest(state), params_digest(fixed))
    assert losses == fixed_losses


def test_a_budget_too_small_for_every_count_names_the_smallest_need():
    c = _config("auto", budget_gb=0.0001)  # 0.1 MB
    with pytest.raises(ConfigError) as e:
        _train(c, _batches(1))
    message = str(e.value)
    assert message.startswith("config.optimizer.grad_accum_steps=auto: no accumulation count fits")
    assert "the budget of 0.10 MB (optimizer.memory_budget_gb=0.0001)" in message
    # ~0.14 MB: the exact bytes depend on XLA's version.
    assert re.search(r"the smallest need is 0\.1\d MB per device at grad_accum_steps=169", message)
    assert re.search(r"\(needs: 1: [\d.]+ MB, 13: [\d.]+ MB, 169: [\d.]+ MB\)", message)


def test_default_budget_is_the_device_memory_or_the_hosts_ram():
    device = jax.devices()[0]
    budget, source = batch_fit.memory_budget(0.0, device)
    assert budget > 0
    stats = device.memory_stats() or {}
    expected = "memory" if "bytes_limit" in stats else "host RAM / 1 local device(s)"
    assert expected in source
    assert batch_fit.memory_budget(2.5, device) == (2_500_000_000, "optimizer.memory_budget_gb=2.5")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("grad_accum_steps", "autox", "must be a whole number >= 1 or 'auto', got 'autox'"),
        ("grad_accum_steps", 2.5, "must be a whole number >= 1 or 'auto', got 2.5"),
        ("grad_accum_steps", True, "got True"),
        ("grad_accum_steps", -2, "must be >= 1, got -2"),
        ("memory_budget_gb", -1.0, "config.optimizer.memory_budget_gb: must be >= 0"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    c = _config(1)
    c.optimizer[field] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config(c, num_devices=1)


def test_auto_is_valid_and_leaves_divisibility_to_the_fit():
    c = _config("auto")
    validate_config(c, num_devices=1)  # 169 is not divisible by 2, but auto may pick 13 or 169


# --- retries on RESOURCE_EXHAUSTED, with compiled steps that fake XLA ------------------------


def _oom() -> jax.errors.JaxRuntimeError:
    return jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1.0G")


class _FakeCompiled:
    def __init__(self, accum, need, fails):
        self.accum, self._need, self._fails = accum, need, fails

    def memory_analysis(self):
        return types.SimpleNamespace(
            argument_size_in_bytes=self._need,
            output_size_in_bytes=0,
            alias_size_in_bytes=0,
            temp_size_in_bytes=0,
        )

    def __call__(self, state, batch):
        if self._fails:
            raise _oom()
        return state, self.accum


def _fake_make_step(compile_oom=(), run_oom=(), need=10):
    def compile_at(accum):
        if accum in compile_oom:
            raise _oom()
        return _FakeCompiled(accum, need, accum in run_oom)

    def make_step(accum):
        lowered = types.SimpleNamespace(compile=lambda: compile_at(accum))
        return types.SimpleNamespace(lower=lambda *args: lowered)

    return make_step


def test_out_of_memory_compiling_or_running_retries_at_twice_the_accumulation():
    step = batch_fit.AutoAccumStep(
        _fake_make_step(compile_oom=(1,), run_oom=(2,)),
        (None, None),
        (1, 2, 3, 4, 8),
        (100, "test budget"),
    )
    state = {"w": jnp.ones(3)}
    # 1 fails to compile -> 2 (>= 2 x 1) compiles and fits, but its first call runs out of
    # memory -> 4 (>= 2 x 2; 3 is skipped).
    assert step(state, None) == (state, 4)
    assert step.grad_accum_steps == 4


def test_out_of_memory_after_the_state_was_donated_says_what_to_set():
    step = batch_fit.AutoAccumStep(
        _fake_make_step(run_oom=(1,)), (None, None), (1, 2), (100, "test budget")
    )
    state = {"w": jnp.ones(3)}
    state["w"].delete()
    with pytest.raises(ConfigError, match="set grad_accum_steps=2 and re-run"):
        step(state, None)


def test_other_runtime_errors_are_not_retried():
    def make_step(accum):
        def compile_():
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")

        return types.SimpleNamespace(lower=lambda *a: types.SimpleNamespace(compile=compile_))

    step = batch_fit.AutoAccumStep(make_step, (None, None), (1, 2), (100, "test budget"))
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        step({"w": jnp.ones(1)}, None)
