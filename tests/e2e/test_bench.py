"""Benchmark runner, the hand-written control loop and the compilation cache."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache
from synthetic_data import lm_info

from jaxtrain.build import create_state_and_steps, model_settings
from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import gpt, model_config
from jaxtrain.parallel import compile_cache, sharding
from jaxtrain.tools import bench, estimate, hand_loop


def _mlp_config(batch: int = 64):
    c = get_config()
    c.model = model_config("mlp", norm="none", features=(32,), dropout=0.0)
    c.batch_size = batch
    c.optimizer.warmup_steps = 0
    c.checkpoint.keep_best = 0
    c.data.in_memory = False  # decoding all 60k images into RAM takes ~10 s per iterator
    return c


# --- config and record arithmetic -----------------------------------------------------------


def test_benchmark_config_intervals():
    c, timed = bench.benchmark_config(get_config(), steps=25, warmup=10)
    assert timed == 30  # rounded up to whole intervals of `warmup` steps
    assert (c.total_steps, c.log_every, c.eval_every) == (40, 10, 40)
    assert c.checkpoint.every == 30  # one save inside the timed part (step 30), one at the end
    assert c.compile_cache_dir == "off" and c.early_stopping.patience == 0
    c, timed = bench.benchmark_config(get_config(), steps=5, warmup=10)
    assert (timed, c.total_steps, c.checkpoint.every) == (10, 20, 10)
    with pytest.raises(ConfigError, match="--steps and --warmup must be >= 1"):
        bench.benchmark_config(get_config(), steps=0, warmup=10)


def test_benchmark_config_clamps_lr_warmup():
    c = get_config()
    c.optimizer.warmup_steps = 500
    assert bench.benchmark_config(c, steps=20, warmup=10)[0].optimizer.warmup_steps == 15
    assert c.optimizer.warmup_steps == 500  # the caller's config is untouched


def test_summarize_intervals_hand_calculation():
    perf = ("perf/steps_per_sec", "perf/data_wait_fraction", "perf/checkpoint_stall_s")
    records = [
        {"step": 10} | dict(zip(perf, (2.0, 0.5, 0.0), strict=True)) | {"perf/first_interval_s": 5},
        {"step": 10, "validation/loss": 1.0},  # not a train record: ignored
        {"step": 20} | dict(zip(perf, (10.0, 0.1, 0.0), strict=True)),  # 10 steps in 1 s
        {"step": 30} | dict(zip(perf, (5.0, 0.4, 0.5), strict=True)),  # 10 steps in 2 s
    ]
    for r in records:
        if "perf/steps_per_sec" in r:  # batch 4
            r["perf/examples_per_sec"] = 4 * r["perf/steps_per_sec"]
    s = bench.summarize_intervals(records, warmup=10)
    assert s["timed_steps"] == 20 and s["timed_seconds"] == pytest.approx(3.0)
    assert s["steps_per_sec"] == pytest.approx(20 / 3)
    assert s["examples_per_sec"] == pytest.approx(4 * 20 / 3)
    assert s["steps_per_sec_excl_checkpoint"] == pytest.approx(20 / 2.5)
    assert s["data_wait_fraction"] == pytest.approx((0.1 * 1 + 0.4 * 2) / 3)
    assert s["checkpoint_stall_s"] == 0.5 and s["first_interval_s"] == 5
    with pytest.raises(ValueError, match="no timed log interval"):
        bench.summarize_intervals(records[:2], warmup=10)


class _Stats:
    argument_size_in_bytes, output_size_in_bytes = 1000, 600
    alias_size_in_bytes, temp_size_in_bytes = 500, 4000


class _Compiled:
    def memory_analysis(self):
        return _Stats()


def test_memory_summaries():
    m = bench.compiled_memory(_Compiled())
    assert m["bytes"] == 1000 + 600 - 500 + 4000 and "donated aliases" in m["source"]
    assert bench.device_memory(jax.devices()[0]) is None  # CPU: no allocator statistics


# --- analytic vs XLA FLOPs of the real GPT step -----------------------------------------------


def _gpt_config_and_info(seq_len: int):
    c = get_config()
    c.batch_size, c.data.name, c.data.seq_len = 8, "shakespeare", seq_len
    c.model = model_config(
        "gpt", num_layers=2, d_model=64, num_heads=2, d_ff=256, max_len=seq_len, dropout=0.0
    )
    info = lm_info(seq_len, 65)
    return c, info


def test_gpt_analytic_flops_match_model_and_xla():
    c, info = _gpt_config_and_info(64)
    analytic = estimate.analytic_step_flops(c, info)
    # Independent formula: helper B's per-token count in jaxtrain/models/gpt.py.
    assert analytic == gpt.flops_per_token(model_settings(c, info), 64) * 8 * 64
    xla, lower_bound = estimate.count_step_flops(c, info)
    assert not lower_bound
    # XLA adds element-wise work (softmax, GELU, LayerNorm, AdamW): measured 1.07x here.
    assert 1.0 <= xla / analytic <= 1.2
    assert estimate.analytic_step_flops(_mlp_config(), None) is None


# --- the hand-written control does the same work as jaxtrain's step ---------------------------


def test_hand_loop_matches_jaxtrain_step_on_real_batches():
    c = _mlp_config(batch=16)
    c.optimizer.clip_norm = 0.05  # small enough to clip: the hand side must clip identically
    info = estimate.dataset_info(c)
    mesh = sharding.create_mesh(-1)  # all 8 test devices: the batch is split like jaxtrain's
    (init, step), why = hand_loop.make_hand_loop(c, info, mesh)
    assert why == ""
    batches = hand_loop.preload_batches(c, info)
    assert len(batches) == hand_loop.PRELOADED_BATCHES and batches[0]["inputs"].shape[0] == 16
    carry = init()
    state, train_fn, _ = create_state_and_steps(c, mesh, info)
    # Same starting point (copies: both steps donate their inputs). jaxtrain's fresh Adam state
    # is zeros whatever the params are.
    params, model_state = jax.tree.map(jnp.copy, (carry[0], carry[1]))
    state = state.replace(params=params, model_state=model_state)
    data_sharding = sharding.batch_sharding(mesh)
    for b in batches[:2]:
        batch = sharding.make_global_batch(b, data_sharding)
        state, metrics = train_fn(state, batch)
        carry, loss = step(carry, jax.device_put(b, data_sharding))
        np.testing.assert_allclose(float(loss), float(metrics["loss"]), rtol=1e-5)
        assert float(metrics["grad_norm"]) > 0.05  # clipping is active
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(carry[0]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_hand_loop_refuses_what_it_does_not_implement():
    c = _mlp_config()
    c.optimizer.name = "sgd"
    hand, why = hand_loop.make_hand_loop(c, None, sharding.create_mesh(1))
    assert hand is None and "config.optimizer.name: the hand-written loop only does AdamW" in why


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.slow
def test_run_benchmark_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    c = _mlp_config()
    c.num_devices = 1
    r = bench.run_benchmark(c, steps=8, warmup=4, out_json=str(out))
    assert r["timed_steps"] == 8 and r["jaxtrain"]["timed_steps"] == 8
    j = r["jaxtrain"]
    assert j["steps_per_sec"] > 0 and j["examples_per_sec"] == j["steps_per_sec"] * 64
    assert 0 <= j["data_wait_fraction"] < 1 and j["checkpoint_stall_s"] > 0  # one timed save
    assert j["first_interval_s"] > 0 and r["compile_s"] > 0
    f = r["flops"]
    assert f["xla_per_step"] > 2 * 64 * (784 * 32 + 32 * 10) * 2  # at least the matmuls
    assert 0 < f["mfu_xla"] <= 1 and f["analytic_per_step"] is None
    assert f["peak_source"].startswith("measured")
    assert r["memory"]["bytes"] > 0 and "memory_analysis" in r["memory"]["source"]
    assert r["hand"]["steps_per_sec"] > 0 and np.isfinite(r["ratio_jaxtrain_over_hand"])
    h = r["host"]  # host time per step of both loops, wall and loop-thread CPU
    assert h["host_us_per_step"] > 0 and h["hand_us_per_step"] > 0
    assert h["host_cpu_us_per_step"] > 0 and h["hand_cpu_us_per_step"] > 0
    assert np.isfinite([h["ratio_jaxtrain_over_hand"], h["cpu_ratio_jaxtrain_over_hand"]]).all()
    assert json.loads(out.read_text())["timed_steps"] == 8
    printed = bench.format_benchmark(r)
    assert "| MFU (XLA FLOPs) |" in printed and "| jaxtrain / hand (excl. checkpoint) |" in printed
    assert "| host time jaxtrain / hand: wall, CPU |" in printed


# --- compilation cache --------------------------------------------------------------------


@pytest.fixture
def restore_jax_cache_config():
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_enable_compilation_cache", saved[1])
    compilation_cache.reset_cache()


def test_resolve_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    home = os.path.expanduser("~")
    assert compile_cache.resolve_cache_dir(None) == os.path.join(home, ".cache/jaxtrain/xla")
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path))
    assert compile_cache.resolve_cache_dir(None) == str(tmp_path)
    monkeypatch.setenv(compile_cache.ENV_VAR, "off")
    assert compile_cache.resolve_cache_dir(None) == ""
    assert compile_cache.resolve_cache_dir("") == compile_cache.resolve_cache_dir("OFF") == ""


def test_enable_writes_entries_and_off_disables(tmp_path, restore_jax_cache_config):
    path = compile_cache.enable_compilation_cache(str(tmp_path / "xla"))
    assert path == str(tmp_path / "xla")
    jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0)).block_until_ready()  # tiny, still cached
    assert os.listdir(path)
    assert compile_cache.enable_compilation_cache("off") == ""
    assert not jax.config.jax_enable_compilation_cache


def test_entries_of_an_unbounded_cache_get_access_times(tmp_path, restore_jax_cache_config):
    """A directory written without a size bound holds entries without JAX's -atime files; the
    bounded cache's eviction scan would fail on them and no new entry would be written."""
    old = tmp_path / "xla" / "jit_old-0123-cache"
    old.parent.mkdir()
    old.write_bytes(b"a compiled program")
    path = compile_cache.enable_compilation_cache(str(old.parent))
    atime = old.parent / "jit_old-0123-atime"
    assert int.from_bytes(atime.read_bytes(), "little") == old.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JAX warns when it cannot write an entry
        jax.jit(lambda x: x * 5.0 - 2.0)(np.arange(5.0)).block_until_ready()
    assert len([n for n in os.listdir(path) if n.endswith("-cache")]) == 2
    assert compile_cache.backfill_access_times(path) == 0  # nothing left to add


def test_unwritable_cache_dir(tmp_path, restore_jax_cache_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="config.compile_cache_dir: cannot create"):
        compile_cache.enable_compilation_cache(str(blocker / "xla"))


def test_second_process_hits_the_cache(tmp_path):
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from jaxtrain.parallel.compile_cache import enable_compilation_cache
        hits = []
        jax.monitoring.register_event_listener(
            lambda e, **_: hits.append(e) if e == "/jax/compilation_cache/cache_hits" else None)
        enable_compilation_cache({str(tmp_path)!r})
        jax.jit(lambda x: jax.numpy.sin(x) @ x.T)(np.ones((8, 8), np.float32)).block_until_ready()
        print(len(hits))
        """
    )
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    assert [int(r.stdout.split()[-1]) for r in runs] == [0, 1]
