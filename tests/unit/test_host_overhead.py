"""The loop's per-step host work: the fused step + metric sums, one-call batch assembly, and the
host-time fields `bench` reports. Synthetic batches: these check arithmetic identities and
record shapes, not learning; no timing is asserted.
"""

import dataclasses
import time

import jax
import numpy as np
import pytest
from synthetic_data import image_info

from jaxtrain.build import create_state_and_steps, fuse_metric_sums, zero_train_metrics
from jaxtrain.config import get_config
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.perf import PerfTimer
from jaxtrain.step import accumulate_train_metrics
from jaxtrain.tools import bench, hand_loop

INFO = image_info((8, 8, 1))


def _batches(n: int, size: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "inputs": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
            "labels": rng.integers(0, 10, size).astype(np.int32),
            "mask": (rng.random(size) > 0.2).astype(np.float32),
        }
        for _ in range(n)
    ]


def _config(model):
    c = get_config()
    c.model = model
    c.batch_size = 8
    c.optimizer.clip_norm = 0.5
    c.optimizer.weight_decay = 0.01
    return c


def _bits(tree) -> list[np.ndarray]:
    return [np.atleast_1d(x).view(np.uint8) for x in jax.tree.leaves(jax.device_get(tree))]


def test_fused_step_and_sums_equal_separate_calls_bitwise():
    # Batch statistics (model state), dropout (the step's key), clipping and weight decay.
    c = _config(model_config("cnn", features=(2, 4), hidden=8, dropout=0.3))
    mesh = sharding.create_mesh(1)
    data_sharding = sharding.batch_sharding(mesh)
    state, train_fn, _ = create_state_and_steps(c, mesh, INFO)
    zero = zero_train_metrics(train_fn, state, INFO, c.batch_size, data_sharding)
    fused = fuse_metric_sums(train_fn, state, zero, data_sharding)
    separate = jax.jit(accumulate_train_metrics)
    a, b = state, jax.tree.map(np.copy, jax.device_get(state))  # both steps donate the state
    b = jax.device_put(b, jax.tree.map(lambda x: x.sharding, state))
    sums_a = sums_b = zero
    for batch in _batches(3):
        global_batch = sharding.make_global_batch(batch, data_sharding)
        a, sums_a = fused(a, sums_a, global_batch)
        b, metrics = train_fn(b, sharding.make_global_batch(batch, data_sharding))
        sums_b = separate(sums_b, metrics)
    for x, y in zip(_bits((a, sums_a)), _bits((b, sums_b)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert int(a.step) == 3 and float(sums_a["loss"]) > 0 and int(sums_a["nonfinite_step"]) == -1
    # The outputs keep the input shardings, so the next call neither reshards nor recompiles.
    assert jax.tree.map(lambda x: x.sharding, a) == jax.tree.map(lambda x: x.sharding, state)


def test_auto_accumulation_keeps_its_fitted_step():
    """grad_accum_steps=auto fits its step on the host at the first call; tracing it inside the
    fused program would silently train at one micro-batch instead."""
    c = get_config()
    c.model = model_config("mlp", features=(1024,), norm="none", dropout=0.0)
    c.batch_size = 169  # candidates 1, 13, 169; activations dominate the memory
    c.optimizer.grad_accum_steps, c.optimizer.memory_budget_gb = "auto", 0.001
    info = dataclasses.replace(INFO, input_shape=(2, 2, 1))
    mesh = sharding.create_mesh(1)
    data_sharding = sharding.batch_sharding(mesh)
    state, train_fn, _ = create_state_and_steps(c, mesh, info)
    zero = zero_train_metrics(train_fn, state, info, c.batch_size, data_sharding)
    step_and_sum = fuse_metric_sums(train_fn, state, zero, data_sharding)
    rng = np.random.default_rng(0)
    batch = {
        "inputs": rng.normal(size=(169, 2, 2, 1)).astype(np.float32),
        "labels": rng.integers(0, 10, 169).astype(np.int32),
        "mask": np.ones(169, np.float32),
    }
    copy = jax.device_put(jax.device_get(state), jax.tree.map(lambda x: x.sharding, state))
    state, sums = step_and_sum(state, zero, sharding.make_global_batch(batch, data_sharding))
    # The step the fit chose (13 micro-batches), bit for bit; one micro-batch rounds otherwise.
    direct, metrics = train_fn(copy, sharding.make_global_batch(batch, data_sharding))
    assert train_fn.grad_accum_steps == 13 and int(state.step) == 1
    for x, y in zip(_bits((state, sums["loss"])), _bits((direct, metrics["loss"])), strict=True):
        np.testing.assert_array_equal(x, y)


def test_make_global_batch_is_the_local_batch_on_the_mesh():
    batch = _batches(1)[0]
    data_sharding = sharding.batch_sharding(sharding.create_mesh(1))
    out = sharding.make_global_batch(batch, data_sharding)
    assert sorted(out) == sorted(batch)
    for k, v in batch.items():
        assert out[k].sharding == data_sharding and out[k].dtype == v.dtype
        np.testing.assert_array_equal(np.asarray(out[k]), v)


# --- bench's host-time fields --------------------------------------------------------------


def _interval_records():
    """Two log intervals of 10 steps after a 10-step warm-up: 1 s and 2 s of wall time, 10% and
    40% of it waiting for data, a 0.5 s checkpoint stall in the second; 50 and 80 us of loop
    CPU per step."""
    perf = (
        "perf/steps_per_sec",
        "perf/data_wait_fraction",
        "perf/checkpoint_stall_s",
        "perf/host_cpu_us_per_step",
    )
    rows = [(10, 1.0, 0.5, 0.0, 900.0), (20, 10.0, 0.1, 0.0, 50.0), (30, 5.0, 0.4, 0.5, 80.0)]
    records = []
    for step, *values in rows:
        r = {"step": step} | dict(zip(perf, values, strict=True))
        records.append(r | {"perf/examples_per_sec": 8 * r["perf/steps_per_sec"]})
    return records


def test_summarize_intervals_host_time_excludes_data_wait_and_checkpoint():
    s = bench.summarize_intervals(_interval_records(), warmup=10)
    # (1 + 2) s - (0.1 + 0.8) s of data wait - 0.5 s of checkpoint stall, over 20 steps.
    assert s["host_us_per_step"] == pytest.approx(1e6 * (3.0 - 0.9 - 0.5) / 20)
    assert s["host_cpu_us_per_step"] == pytest.approx(65.0)  # the warm-up interval's 900 is out


def test_perf_timer_host_cpu_leaves_out_data_wait_and_checkpoint():
    timer = PerfTimer(global_batch=8, tokens_per_example=0)
    with timer.data_wait():
        _spin(0.05)
    with timer.checkpoint_stall():
        _spin(0.05)
    _spin(0.02)
    out = timer.lap(steps=2)
    # ~10 ms of loop CPU per step; the 100 ms spent inside the two contexts is not counted.
    assert 5e3 < out["perf/host_cpu_us_per_step"] < 4e4
    assert out["perf/data_wait_fraction"] > 0.1 and out["perf/checkpoint_stall_s"] >= 0.05


def _spin(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def test_host_summary_medians_and_paired_ratios():
    jaxtrain = [
        {"host_us_per_step": w, "host_cpu_us_per_step": c}
        for w, c in ((110.0, 55.0), (300.0, 60.0), (120.0, 50.0))
    ]
    hand = [  # 100, 200, 100 us per step of wall; 50 us of CPU
        hand_loop.HandTiming(steps_per_sec=sps, cpu_us_per_step=50.0) for sps in (1e4, 5e3, 1e4)
    ]
    h = bench.host_summary(jaxtrain, hand)
    assert h["host_us_per_step"] == 120.0 and h["hand_us_per_step"] == pytest.approx(100.0)
    assert h["host_cpu_us_per_step"] == 55.0 and h["hand_cpu_us_per_step"] == 50.0
    assert h["ratio_jaxtrain_over_hand"] == pytest.approx(1.2)  # median of 1.1, 1.5, 1.2
    assert h["cpu_ratio_jaxtrain_over_hand"] == pytest.approx(1.1)  # median of 1.1, 1.2, 1.0
    alone = bench.host_summary(jaxtrain, [])  # the hand loop skipped: jaxtrain's figures only
    assert alone["host_us_per_step"] == 120.0 and "ratio_jaxtrain_over_hand" not in alone


def test_format_benchmark_prints_the_host_rows():
    one = [{"host_us_per_step": 110.0, "host_cpu_us_per_step": 60.0}]
    r = {
        "jaxtrain": bench.summarize_intervals(_interval_records(), warmup=10),
        "host": bench.host_summary(one, [hand_loop.HandTiming(1e4, 50.0)]),
        "timed_steps": 20,
        "warmup_steps": 10,
        "compile_s": 1.0,
        "num_params": 10,
        "flops": {
            "xla_is_lower_bound": False,
            "xla_per_step": 1e6,
            "peak_flops_per_device": 1e9,
            "peak_source": "test",
            "mfu_xla": 0.1,
            "analytic_per_step": None,
        },
        "memory": {"bytes": 2**20, "source": "test"},
        "device": {"num_devices": 1, "device_kind": "cpu", "hardware": "cpu"},
        "hand": {"skipped": "test"},
    }
    table = bench.format_benchmark(r)
    assert "| host us/step, jaxtrain loop: wall less data wait and checkpoint | 110.0 |" in table
    assert "| host us/step, jaxtrain loop: CPU of the loop thread | 60.0 |" in table
    assert "| host us/step, hand-written jit loop: wall | 100.0 |" in table
    assert "| host time jaxtrain / hand: wall, CPU | 1.100, 1.200 (medians" in table
