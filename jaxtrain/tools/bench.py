"""Benchmark runner: throughput, MFU, memory and framework overhead of a config's real train path.

`run_benchmark` runs `train_and_evaluate` itself (nothing is copied from the loop) and reads
its perf/ records: the first log interval (compilation, warm-up) is dropped, the rest are timed.
Beside it, in the same process and on the same devices, a minimal hand-written `jax.jit` loop runs
the same model, batch, loss and AdamW from batches in RAM: jaxtrain / hand is the overhead.
Host time per step, for both loops: wall microseconds less data wait and checkpoint stall (the
hand loop has neither), and the CPU microseconds of the loop's own thread (perf/
host_cpu_us_per_step; steadier on a shared machine). For a tiny model they are the framework's
per-step host cost (benchmarks/host_overhead.py).

FLOPs/step: XLA's count of the compiled step, which counts what runs (rematerialisation in, the
causal kernel's skipped blocks out); for transformers also 6 N T + attention. Peak: datasheet on
GPU/TPU, a matmul probe on CPU. Memory: device.memory_stats() peak on GPU/TPU; on CPU XLA's buffer
assignment of the compiled step (arguments + outputs - donated aliases + temporaries).
"""

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import tempfile
from typing import Any

import jax
import ml_collections

from jaxtrain.data.loader import DatasetInfo
from jaxtrain.errors import ConfigError
from jaxtrain.parallel import sharding
from jaxtrain.tools import estimate
from jaxtrain.tools import flops as flops_lib
from jaxtrain.tools.hand_loop import HandTiming, make_hand_loop, preload_batches, time_hand_loop
from jaxtrain.train import train_and_evaluate
from jaxtrain.validation import validate_config
from jaxtrain.writers import read_metrics

CPU_PROBE_SIZE = 1024
CPU_PROBE_REPEATS = 10


def benchmark_config(
    config: ml_collections.ConfigDict, *, steps: int, warmup: int
) -> tuple[ml_collections.ConfigDict, int]:
    """The config set up for timing; returns it and the number of timed steps.

    One log interval of `warmup` steps (compilation, dropped), then intervals of the same length
    up to at least `steps` timed steps; one checkpoint save inside the timed part (its stall is
    measured) and one at the end; validation only after the last interval; no compilation cache,
    so the first interval holds a real compile. The learning-rate warm-up is clamped to fit the
    short run (speed does not depend on it).
    """
    if steps < 1 or warmup < 1:
        raise ConfigError(f"--steps and --warmup must be >= 1, got {steps} and {warmup}")
    intervals = math.ceil(steps / warmup)
    timed = intervals * warmup
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.total_steps = warmup + timed
        c.log_every = warmup
        c.eval_every = c.total_steps
        # A save lands in the middle interval; the next multiple is past the end.
        c.checkpoint.every = warmup * (1 + math.ceil(intervals / 2)) if intervals > 1 else timed
        c.early_stopping.patience = 0
        c.compile_cache_dir = "off"
        c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, c.total_steps // 2)
    return c, timed


def summarize_intervals(records: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    """Aggregates the perf/ records of the log intervals after `warmup` (time-weighted)."""
    prev, first = 0, None
    steps = seconds = examples = wait = stall = tokens = cpu = 0.0
    for r in sorted((r for r in records if "perf/steps_per_sec" in r), key=lambda r: r["step"]):
        n, prev_step = r["step"] - prev, prev
        prev = r["step"]
        if prev_step < warmup:
            first = r.get("perf/first_interval_s", n / r["perf/steps_per_sec"])
            continue
        dt = n / r["perf/steps_per_sec"]
        steps, seconds = steps + n, seconds + dt
        examples += r["perf/examples_per_sec"] * dt
        wait += r["perf/data_wait_fraction"] * dt
        stall += r["perf/checkpoint_stall_s"]
        tokens += r.get("perf/tokens_per_sec", 0.0) * dt
        cpu += r.get("perf/host_cpu_us_per_step", math.nan) * n
    if steps == 0:
        raise ValueError(f"no timed log interval after warm-up step {warmup} in the records")
    out = {
        # Wall time per step the loop itself took: not waiting for input, not saving.
        "host_us_per_step": 1e6 * (seconds - wait - stall) / steps,
        "host_cpu_us_per_step": cpu / steps,  # the loop thread's CPU time (see PerfTimer)
        "timed_steps": steps,
        "timed_seconds": seconds,
        "steps_per_sec": steps / seconds,
        "examples_per_sec": examples / seconds,
        # The loop's own speed without checkpoint I/O, which the hand loop does not do.
        "steps_per_sec_excl_checkpoint": steps / (seconds - stall),
        "data_wait_fraction": wait / seconds,
        "checkpoint_stall_s": stall,
        "first_interval_s": first if first is not None else math.nan,
    }
    if tokens:
        out["tokens_per_sec"] = tokens / seconds
    return out


def time_jaxtrain(c: ml_collections.ConfigDict, workdir: str, warmup: int) -> dict[str, float]:
    """One `train_and_evaluate` run of a benchmark config; its timed intervals summarized."""
    train_and_evaluate(c, workdir, progress=False)
    return summarize_intervals(read_metrics(workdir), warmup)


def device_memory(device: jax.Device) -> dict[str, Any] | None:
    """The allocator's peak on GPU/TPU; None where the backend reports none (CPU)."""
    stats = device.memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return {
        "bytes": int(stats["peak_bytes_in_use"]),
        "source": "device.memory_stats() peak_bytes_in_use (the process, through the first run)",
    }


def compiled_memory(compiled: Any) -> dict[str, Any]:
    """XLA's buffer assignment of the compiled step, per device."""
    m = compiled.memory_analysis()
    parts = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
    }
    total = parts["argument_bytes"] + parts["output_bytes"] - parts["alias_bytes"]
    return {
        "bytes": total + parts["temp_bytes"],
        "source": "compiled step memory_analysis(): arguments + outputs - donated aliases "
        "+ temporaries",
        **parts,
    }


def peak_per_device(hardware: str, compute_dtype: str) -> tuple[float, str]:
    """Peak FLOP/s of one device and where it comes from: the datasheet table (GPU/TPU) or a
    matmul probe (CPU)."""
    if hardware == "cpu":
        peak = flops_lib.measure_cpu_peak_flops(compute_dtype, CPU_PROBE_SIZE, CPU_PROBE_REPEATS)
        return peak, f"measured: best of {CPU_PROBE_REPEATS} jitted {CPU_PROBE_SIZE}^3 matmuls"
    dtype = flops_lib.matmul_dtype(hardware, compute_dtype)
    return flops_lib.peak_flops(hardware, dtype), f"datasheet: {hardware} {dtype} dense"


# --- the hand-written control ----------------------------------------------------------------
# Written against nnx/optax/jax directly, not through jaxtrain's step, state or optimizer
# factory: the same model (jaxtrain.models is the model, not the framework), AdamW with the
# same hyperparameters and schedule, the same masked cross-entropy, one donated jax.jit step.


@dataclasses.dataclass
class LoopTimes:
    """Both loops timed side by side on one config (see time_loops)."""

    config: ml_collections.ConfigDict  # the benchmark config (benchmark_config)
    timed: int  # timed steps per run
    mesh: Any
    info: DatasetInfo
    jaxtrain: list[dict[str, float]]  # summarize_intervals of each repeat
    hand: list[HandTiming]  # each repeat's; [] when skipped
    hand_device_put: list[HandTiming]  # the same, placing each batch with jax.device_put first
    hand_skipped: str  # why the hand loop could not run this config ("" when it ran)
    memory: dict[str, Any] | None  # the allocator's peak after jaxtrain's first run (GPU/TPU)


def time_loops(
    config: ml_collections.ConfigDict,
    *,
    steps: int,
    warmup: int,
    repeats: int = 1,
    hand_device_put: bool = False,
) -> LoopTimes:
    """Runs `train_and_evaluate` and the hand loop `repeats` times each in this process,
    alternating which goes first (jaxtrain, hand; hand, jaxtrain; ...). `hand_device_put`:
    also time the hand loop fed through jax.device_put, right after the plain one."""
    c, timed = benchmark_config(config, steps=steps, warmup=warmup)
    mesh = sharding.create_mesh(c.num_devices, tuple(c.mesh.shape))
    validate_config(c, sharding.num_batch_shards(mesh))
    info = estimate.dataset_info(c)
    hand, hand_skipped = make_hand_loop(c, info, mesh)
    batches = preload_batches(c, info) if hand else []
    times = LoopTimes(c, timed, mesh, info, [], [], [], hand_skipped, None)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for r in range(repeats):
            for side in ("jaxtrain", "hand") if r % 2 == 0 else ("hand", "jaxtrain"):
                if side == "jaxtrain":
                    workdir = os.path.join(tmp, f"run{r}")
                    times.jaxtrain.append(time_jaxtrain(c, workdir, warmup))
                    # The allocator's peak, before the hand loop adds its own allocations.
                    times.memory = times.memory or device_memory(mesh.devices.flat[0])
                elif hand:
                    times.hand.append(time_hand_loop(*hand, batches, timed, mesh))
                    if hand_device_put:
                        timing = time_hand_loop(*hand, batches, timed, mesh, device_put=True)
                        times.hand_device_put.append(timing)
    return times


def host_summary(jaxtrain_runs: list[dict[str, float]], hand_runs: list[HandTiming]) -> dict:
    """Host microseconds per step of both loops (medians), wall and CPU, and jaxtrain / hand:
    the median of the per-repeat ratios (a repeat's two runs are adjacent in time on a drifting
    machine)."""
    wall = [r["host_us_per_step"] for r in jaxtrain_runs]
    cpu = [r["host_cpu_us_per_step"] for r in jaxtrain_runs]
    out: dict[str, Any] = {
        "host_us_per_step": statistics.median(wall),
        "host_cpu_us_per_step": statistics.median(cpu),
        "repeats": {"wall_us": wall, "cpu_us": cpu},
    }
    if hand_runs:
        hand_wall = [1e6 / h.steps_per_sec for h in hand_runs]
        hand_cpu = [h.cpu_us_per_step for h in hand_runs]
        out |= {
            "hand_us_per_step": statistics.median(hand_wall),
            "hand_cpu_us_per_step": statistics.median(hand_cpu),
            "ratio_jaxtrain_over_hand": _median_ratio(wall, hand_wall),
            "cpu_ratio_jaxtrain_over_hand": _median_ratio(cpu, hand_cpu),
            "hand_repeats": {"wall_us": hand_wall, "cpu_us": hand_cpu},
        }
    return out


def _median_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def run_benchmark(
    config: ml_collections.ConfigDict,
    *,
    steps: int,
    warmup: int,
    out_json: str | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Benchmarks the config's real train path (see the module docstring); returns the results
    and writes them to `out_json` if given. Repeats alternate jaxtrain/hand order; medians."""
    t = time_loops(config, steps=steps, warmup=warmup, repeats=repeats)
    c, mesh, info = t.config, t.mesh, t.info
    med = {k: statistics.median(x[k] for x in t.jaxtrain) for k in t.jaxtrain[0]}
    step = estimate.compile_train_step(c, mesh, info)  # the cache is off: a cold compile
    result: dict[str, Any] = {
        "config": {"model": c.model.name, "data": c.data.name, "batch_size": c.batch_size},
        "warmup_steps": warmup,
        "timed_steps": t.timed,
        "repeats": repeats,
        "jaxtrain": med,
        "jaxtrain_repeats": t.jaxtrain,
        "host": host_summary(t.jaxtrain, t.hand),
        "compile_s": step.compile_seconds,
        "num_params": step.num_params,
        "flops": _flops_summary(c, info, mesh, step, med["steps_per_sec"]),
        "memory": t.memory or compiled_memory(step.compiled),
        "device": {
            "hardware": flops_lib.detect_hardware(mesh.devices.flat[0]),
            "device_kind": mesh.devices.flat[0].device_kind,
            "num_devices": mesh.size,
        },
        "hand": {"skipped": t.hand_skipped},
        "environment": environment(),
    }
    if t.hand:
        hand_sps = [h.steps_per_sec for h in t.hand]
        result["hand"] = {"steps_per_sec": statistics.median(hand_sps), "repeats": hand_sps}
        hand_sps = result["hand"]["steps_per_sec"]
        result["ratio_jaxtrain_over_hand"] = med["steps_per_sec_excl_checkpoint"] / hand_sps
    if out_json:
        with open(out_json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


def _flops_summary(c, info, mesh, step: estimate.CompiledStep, steps_per_sec: float) -> dict:
    """FLOPs per step (XLA, and analytic for transformers), the peak, and MFU from each."""
    if c.optimizer.grad_accum_steps == 1:  # the program count_step_flops would compile
        xla = flops_lib.compiled_flops(step.compiled) * mesh.size
        lower_bound = flops_lib.has_matmul_loop(step.compiled)
    else:
        xla, lower_bound = estimate.count_step_flops(c, info, mesh)
    compute_dtype = estimate.compute_dtype(c)
    peak, peak_source = peak_per_device(
        flops_lib.detect_hardware(mesh.devices.flat[0]), compute_dtype
    )
    out = {
        "xla_per_step": xla,
        "xla_is_lower_bound": lower_bound,
        "analytic_per_step": estimate.analytic_step_flops(c, info),
        "peak_flops_per_device": peak,
        "peak_source": peak_source,
        "compute_dtype": compute_dtype,
        "mfu_xla": flops_lib.mfu(xla, steps_per_sec, peak, mesh.size),
    }
    if out["analytic_per_step"]:
        analytic = out["analytic_per_step"]
        out["mfu_analytic"] = flops_lib.mfu(analytic, steps_per_sec, peak, mesh.size)
    return out


def environment() -> dict[str, Any]:
    """Package versions, CPU count, platform and the UTC time, for the record."""
    versions = {p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "flax", "optax")}
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    return {
        "versions": versions | {"python": platform.python_version()},
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "utc": now,
    }


def format_benchmark(r: dict[str, Any]) -> str:
    """A markdown table of the headline numbers."""
    j, f, m, d = r["jaxtrain"], r["flops"], r["memory"], r["device"]
    rows = [
        ("device", f"{d['num_devices']} x {d['device_kind']} ({d['hardware']})"),
        ("timed steps (after warm-up)", f"{r['timed_steps']} (warm-up {r['warmup_steps']})"),
        ("steps/s", f"{j['steps_per_sec']:.3f}"),
        ("examples/s", f"{j['examples_per_sec']:,.1f}"),
    ]
    if "tokens_per_sec" in j:
        rows.append(("tokens/s", f"{j['tokens_per_sec']:,.0f}"))
    bound = " (lower bound: scan)" if f["xla_is_lower_bound"] else ""
    rows += [
        ("compile (train step, cold)", f"{r['compile_s']:.2f} s"),
        ("first interval (compile + warm-up)", f"{j['first_interval_s']:.2f} s"),
        ("params", f"{r['num_params']:,}"),
        ("FLOPs/step (XLA)", f"{f['xla_per_step']:.4g}{bound}"),
        ("peak FLOP/s per device", f"{f['peak_flops_per_device']:.4g} ({f['peak_source']})"),
        ("MFU (XLA FLOPs)", f"{f['mfu_xla']:.2%}"),
    ]
    if f["analytic_per_step"]:
        rows.append(("FLOPs/step (6NT + attention)", f"{f['analytic_per_step']:.4g}"))
        rows.append(("MFU (analytic)", f"{f['mfu_analytic']:.2%}"))
    rows += [
        ("peak memory", f"{m['bytes'] / 2**20:,.1f} MiB ({m['source']})"),
        ("data-wait fraction", f"{j['data_wait_fraction']:.2%}"),
        ("checkpoint stall (1 async save)", f"{j['checkpoint_stall_s']:.3f} s"),
    ]
    if "ratio_jaxtrain_over_hand" in r:
        rows.append(("hand-written jit loop steps/s", f"{r['hand']['steps_per_sec']:.3f}"))
        rows.append(("jaxtrain / hand (excl. checkpoint)", f"{r['ratio_jaxtrain_over_hand']:.3f}"))
    else:
        rows.append(("hand-written jit loop", f"skipped: {r['hand']['skipped']}"))
    rows += host_rows(r["host"])
    lines = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def host_rows(h: dict[str, Any]) -> list[tuple[str, str]]:
    """The host-time rows of the table (microseconds per step, medians)."""
    rows = [
        ("host us/step, jaxtrain loop: wall less data wait and checkpoint", _us(h, "host_us")),
        ("host us/step, jaxtrain loop: CPU of the loop thread", _us(h, "host_cpu_us")),
    ]
    if "hand_us_per_step" in h:
        rows += [
            ("host us/step, hand-written jit loop: wall", _us(h, "hand_us")),
            ("host us/step, hand-written jit loop: CPU", _us(h, "hand_cpu_us")),
            ("host time jaxtrain / hand: wall, CPU", _ratios(h)),
        ]
    return rows


def _us(h: dict[str, Any], key: str) -> str:
    return f"{h[key + '_per_step']:,.1f}"


def _ratios(h: dict[str, Any]) -> str:
    wall, cpu = h["ratio_jaxtrain_over_hand"], h["cpu_ratio_jaxtrain_over_hand"]
    return f"{wall:.3f}, {cpu:.3f} (medians of per-repeat ratios)"
