"""What a training run would cost: time and money from FLOPs, hardware peak and an assumed MFU.

    seconds = total_steps x FLOPs/step / (devices x peak FLOP/s per device x MFU)
    dollars = seconds / 3600 x devices x price per device-hour

Prices are per DEVICE-hour (one GPU, or one TPU chip), the unit cloud price lists use for single
accelerators; a price quoted per 8-GPU node is 8x the per-device price.

FLOPs per step come from XLA: `compile_train_step` lowers and compiles the real train step (the
one `train_and_evaluate` runs) on abstract inputs, on whatever machine runs it (a CPU is enough);
nothing is executed and no parameters are allocated.
"""

import dataclasses
import time
from typing import Any

import jax
import ml_collections

from jaxtrain import data as data_lib
from jaxtrain import ensemble
from jaxtrain.build import create_state_and_steps, model_settings
from jaxtrain.data.loader import LANGUAGE_MODELING, DatasetInfo
from jaxtrain.errors import ConfigError
from jaxtrain.parallel import sharding
from jaxtrain.tools import flops as flops_lib
from jaxtrain.train import data_options
from jaxtrain.validation import validate_against_dataset, validate_config


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """A compiled train step and what was learned compiling it."""

    compiled: Any  # jax.stages.Compiled
    abstract_state: Any  # TrainState of ShapeDtypeStructs
    num_params: int
    compile_seconds: float  # lower + compile, with whatever compilation cache is enabled


def compile_train_step(c: ml_collections.ConfigDict, mesh, info: DatasetInfo) -> CompiledStep:
    """Lowers and compiles the real train step for `mesh` on abstract state and batch.

    The state is never materialised: create_state_and_steps runs under jax.eval_shape, which
    traces its jitted init instead of running it; the jitted step it builds is kept.
    """
    built = {}

    def build_abstract():
        state, train_fn, _ = create_state_and_steps(c, mesh, info)
        built["train_fn"] = train_fn  # a jit wrapper holds no traced values, so it may escape
        return state

    abstract_state = jax.eval_shape(build_abstract)
    data_sharding = sharding.batch_sharding(mesh)
    batch = info.batch_shapes(c.batch_size, data_sharding)
    if c.num_seeds > 1:  # an ensemble step takes [K, B, ...]: all K members' FLOPs are counted
        member = ensemble.member_sharding(data_sharding)
        batch = ensemble.add_member_axis(info.batch_shapes(c.batch_size), c.num_seeds, member)
    start = time.perf_counter()
    compiled = built["train_fn"].lower(abstract_state, batch).compile()
    seconds = time.perf_counter() - start
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    return CompiledStep(compiled, abstract_state, int(num_params), seconds)


def count_step_flops(
    c: ml_collections.ConfigDict, info: DatasetInfo, mesh=None
) -> tuple[float, bool]:
    """XLA's FLOPs of one optimizer step on the global batch, and whether that count is a lower
    bound (a while loop, e.g. scanned layers, runs matmuls; XLA counts its body once).

    Compiled for `mesh` (default: one device, so the count is the whole batch's); on N devices
    XLA counts one device's share and the result is N times that, which counts replicated work
    such as the optimizer update N times. Gradient accumulation is a scan over micro-batches: it
    is compiled as one big batch here (the same FLOPs) so the count is not divided by A.
    """
    mesh = mesh if mesh is not None else sharding.create_mesh(1)
    c = c.copy_and_resolve_references()
    with c.unlocked(), c.ignore_type():  # the field may hold "auto", typed str once resolved
        c.optimizer.grad_accum_steps = 1
    step = compile_train_step(c, mesh, info)
    per_device = flops_lib.compiled_flops(step.compiled)
    return per_device * mesh.size, flops_lib.has_matmul_loop(step.compiled)


def analytic_step_flops(c: ml_collections.ConfigDict, info: DatasetInfo) -> float | None:
    """6 N T + 12 n_layers d_model L T of one step for transformers (N = matmul weights: the
    blocks' kernels, plus the output projection for a language model), else None."""
    settings = model_settings(c, info)
    if not hasattr(settings, "d_ff"):  # not a transformer
        return None
    d, f, layers = settings.d_model, settings.d_ff, settings.num_layers
    n = layers * (4 * d * d + 2 * d * f)
    if info.task == LANGUAGE_MODELING:
        n += d * settings.vocab_size  # tied or not, one V x D matmul per token
    seq_len = info.input_shape[0]
    return flops_lib.analytic_transformer_flops(n, c.batch_size * seq_len, layers, d, seq_len)


def _check_inputs(hardware: str, mfu: float, price_per_hour: float, num_devices: int) -> None:
    if hardware not in flops_lib.PEAK_FLOPS:
        raise ConfigError(
            f"--hardware {hardware!r} is unknown; valid: {', '.join(flops_lib.PEAK_FLOPS)}"
        )
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu must be in (0, 1] (e.g. 0.4 for 40%), got {mfu}")
    if not price_per_hour > 0:
        raise ConfigError(
            f"--price_per_hour must be > 0 dollars per device-hour, got {price_per_hour}"
        )
    if not num_devices >= 1:
        raise ConfigError(f"--num_devices must be >= 1, got {num_devices}")


def estimate_cost(
    flops_per_step: float,
    total_steps: int,
    *,
    hardware: str,
    num_devices: int,
    mfu: float,
    price_per_hour: float,
    dtype: str = "bfloat16",
) -> dict[str, Any]:
    """Time and dollars to run `total_steps` steps of `flops_per_step` (global) FLOPs.

    `dtype` is the model's compute dtype; the peak used is that of the dtype its matmuls run in
    at JAX's default precision (flops.matmul_dtype: float32 is TF32 on A100/H100, bf16 on TPU).
    `price_per_hour` is dollars per device-hour.
    """
    _check_inputs(hardware, mfu, price_per_hour, num_devices)
    if not flops_per_step > 0 or not total_steps > 0:
        raise ConfigError(
            f"flops_per_step and total_steps must be > 0, got {flops_per_step}, {total_steps}"
        )
    peak_dtype = flops_lib.matmul_dtype(hardware, dtype)
    peak = flops_lib.peak_flops(hardware, peak_dtype)
    total_flops = float(flops_per_step) * total_steps
    seconds = total_flops / (num_devices * peak * mfu)
    hours = seconds / 3600.0
    return {
        "hardware": hardware,
        "dtype": dtype,
        "peak_dtype": peak_dtype,
        "num_devices": num_devices,
        "peak_flops_per_device": peak,
        "mfu": mfu,
        "flops_per_step": float(flops_per_step),
        "total_steps": int(total_steps),
        "total_flops": total_flops,
        "seconds": seconds,
        "hours": hours,
        "device_hours": hours * num_devices,
        "price_per_device_hour": price_per_hour,
        "dollars": hours * num_devices * price_per_hour,
    }


def compare(
    estimate: dict[str, Any], other_hardware: str, *, price_per_hour: float | None = None
) -> dict[str, Any]:
    """The same run (FLOPs, steps, devices, MFU, dtype) on `other_hardware`.

    Without `price_per_hour` the base estimate's price is reused, so the costs differ by time
    only. "speedup" is the base time over this one.
    """
    other = estimate_cost(
        estimate["flops_per_step"],
        estimate["total_steps"],
        hardware=other_hardware,
        num_devices=estimate["num_devices"],
        mfu=estimate["mfu"],
        price_per_hour=estimate["price_per_device_hour"]
        if price_per_hour is None
        else price_per_hour,
        dtype=estimate["dtype"],
    )
    other["speedup"] = estimate["seconds"] / other["seconds"]
    return other


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 86400:.2f} days"


def format_estimate(estimate: dict[str, Any], other: dict[str, Any] | None = None) -> str:
    """A markdown table of the estimate, with a column for the compared hardware if given."""
    cols = [estimate] if other is None else [estimate, other]
    rows = [
        ("devices", lambda e: str(e["num_devices"])),
        (
            "peak / device",
            lambda e: f"{e['peak_flops_per_device'] / 1e12:,.1f} TFLOP/s ({e['peak_dtype']})",
        ),
        ("assumed MFU", lambda e: f"{e['mfu']:.0%}"),
        ("FLOPs / step", lambda e: f"{e['flops_per_step']:.3e}"),
        ("steps", lambda e: f"{e['total_steps']:,}"),
        ("total FLOPs", lambda e: f"{e['total_flops']:.3e}"),
        ("time", lambda e: _duration(e["seconds"])),
        ("seconds", lambda e: f"{e['seconds']:.4g}"),
        ("device-hours", lambda e: f"{e['device_hours']:,.2f}"),
        ("$ / device-hour", lambda e: f"{e['price_per_device_hour']:,.2f}"),
        ("cost", lambda e: f"${e['dollars']:,.2f}"),
    ]
    if other is not None:
        rows.append(("speedup vs first", lambda e: f"{e.get('speedup', 1.0):.2f}x"))
    lines = [
        "| | " + " | ".join(e["hardware"] for e in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    lines += [f"| {name} | " + " | ".join(f(e) for e in cols) + " |" for name, f in rows]
    return "\n".join(lines)


def estimate_config_cost(
    config: ml_collections.ConfigDict,
    *,
    hardware: str,
    price_per_hour: float,
    mfu: float,
    compare_to: str = "",
    compare_price: float | None = None,
    num_devices: int | None = None,
) -> dict[str, Any]:
    """Compiles the config's train step (without running it) and returns the estimate.

    `num_devices` defaults to config.num_devices, or 1 when that is -1 (all devices).
    """
    c = config
    n = num_devices or (c.num_devices if c.num_devices > 0 else 1)
    _check_inputs(hardware, mfu, price_per_hour, n)  # before the (slow) compile
    if compare_to:
        _check_inputs(compare_to, mfu, compare_price or price_per_hour, n)
    validate_config(c, n)
    info = dataset_info(c)
    step_flops, lower_bound = count_step_flops(c, info)
    est = estimate_cost(
        step_flops,
        c.total_steps,
        hardware=hardware,
        num_devices=n,
        mfu=mfu,
        price_per_hour=price_per_hour,
        dtype=compute_dtype(c),
    )
    other = compare(est, compare_to, price_per_hour=compare_price) if compare_to else None
    return {
        "estimate": est,
        "compare": other,
        "flops_lower_bound": lower_bound,
        "analytic_flops_per_step": analytic_step_flops(c, info),
    }


def format_estimate_report(config: ml_collections.ConfigDict, result: dict[str, Any]) -> str:
    """What `python -m jaxtrain estimate` prints: the run, the FLOPs source, the table."""
    c, est = config, result["estimate"]
    note = " (a LOWER BOUND: the step holds a scan)" if result["flops_lower_bound"] else ""
    lines = [
        f"{c.model.name} on {c.data.name}: batch {c.batch_size}, {c.total_steps:,} steps; "
        f"FLOPs/step from XLA's count of the compiled train step{note}"
    ]
    analytic = result["analytic_flops_per_step"]
    if analytic:
        ratio = est["flops_per_step"] / analytic
        lines.append(f"analytic 6NT + attention: {analytic:.4g} FLOPs/step ({ratio:.2f}x)")
    lines.append(format_estimate(est, result["compare"]))
    return "\n".join(lines)


def compute_dtype(c: ml_collections.ConfigDict) -> str:
    # Image models have no compute_dtype setting and always compute in float32.
    return c.model.compute_dtype if "compute_dtype" in c.model else "float32"


def dataset_info(c: ml_collections.ConfigDict) -> DatasetInfo:
    """The config's dataset info (shapes, classes, vocabulary), checked against the config."""
    info = data_lib.get_dataset_info(data_options(c))
    validate_against_dataset(
        c, task=info.task, num_classes=info.num_classes, vocab_size=info.vocab_size
    )
    return info
