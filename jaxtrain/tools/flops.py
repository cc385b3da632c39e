"""FLOP counting and model FLOP utilization (MFU).

MFU = (model FLOPs per step x steps per second) / (peak FLOP/s per device x devices).
Accelerator peaks come from the vendors' datasheets (`PEAK_FLOPS`); a CPU has no datasheet peak
that XLA reaches, so there the peak is measured with a matmul probe (`measure_cpu_peak_flops`).

Letters: M, K, N matmul dimensions (x_MxK @ w_KxN).
"""

import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp

# Dense (not 2:4-sparse) peak FLOP/s of ONE device, i.e. one jax.Device: a GPU, or a TPU chip
# (v4 and later expose one device per chip). NVIDIA datasheets print the sparse figure for tensor
# cores with an asterisk; the dense one is half of it.
#
# "float32" is the non-tensor-core FP32 peak; "tfloat32" is TF32 on tensor cores, which is what
# XLA uses for float32 matmuls on Ampere/Hopper at JAX's default precision. TPUs list bf16 only:
# at default precision a float32 matmul on TPU runs as one bf16 pass.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # NVIDIA H100 Tensor Core GPU datasheet, SXM column: FP32 67 TF, TF32 989 TF* (sparse),
    # BF16/FP16 1,979 TF* (sparse); dense is half (989.5 TF, kept as the usual 989).
    "h100": {"float32": 67e12, "tfloat32": 494e12, "bfloat16": 989e12, "float16": 989e12},
    # Same datasheet, PCIe column: FP32 51 TF, TF32 756 TF*, BF16 1,513 TF* (sparse).
    "h100_pcie": {"float32": 51e12, "tfloat32": 378e12, "bfloat16": 756e12, "float16": 756e12},
    # NVIDIA H200 Tensor Core GPU datasheet, SXM column: the H100 SXM compute (FP32 67 TF,
    # TF32 989 TF*, BF16 1,979 TF* sparse) with more and faster HBM.
    "h200": {"float32": 67e12, "tfloat32": 494e12, "bfloat16": 989e12, "float16": 989e12},
    # NVIDIA A100 Tensor Core GPU datasheet: FP32 19.5 TF, TF32 156 TF, BF16/FP16 312 TF (dense).
    "a100": {"float32": 19.5e12, "tfloat32": 156e12, "bfloat16": 312e12, "float16": 312e12},
    # Google Cloud TPU documentation, "TPU v4" / "TPU v5e" / "TPU v5p" / "TPU v6e" pages:
    # peak bf16 compute per chip 275 / 197 / 459 / 918 TFLOP/s.
    "tpu_v4": {"bfloat16": 275e12},
    "tpu_v5e": {"bfloat16": 197e12},
    "tpu_v5p": {"bfloat16": 459e12},
    "tpu_v6e": {"bfloat16": 918e12},
}

# jax.Device.device_kind -> PEAK_FLOPS key. Checked in order; the first pattern found wins, so
# the more specific GPU names come first.
_DEVICE_KINDS: tuple[tuple[str, str], ...] = (
    ("H100 PCIe", "h100_pcie"),
    ("H100", "h100"),
    ("H200", "h200"),
    ("A100", "a100"),
    ("TPU v4", "tpu_v4"),
    ("TPU v5 lite", "tpu_v5e"),
    ("TPU v5e", "tpu_v5e"),
    ("TPU v5p", "tpu_v5p"),
    ("TPU v5", "tpu_v5p"),  # v5p reports itself as "TPU v5"
    ("TPU v6 lite", "tpu_v6e"),
    ("TPU v6e", "tpu_v6e"),
)


def detect_hardware(device: jax.Device | None = None) -> str:
    """The PEAK_FLOPS key of `device` (default: the first device), or "cpu"."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    for pattern, name in _DEVICE_KINDS:
        if pattern in device.device_kind:
            return name
    raise ValueError(
        f"unknown accelerator {device.device_kind!r}: no peak FLOP/s on file. Pass the hardware "
        f"explicitly (one of {', '.join(PEAK_FLOPS)}) or add its datasheet peak to "
        "jaxtrain/tools/flops.py PEAK_FLOPS"
    )


def peak_flops(hardware: str, dtype: str) -> float:
    """Datasheet dense peak FLOP/s of one device of `hardware` computing in `dtype`."""
    if hardware not in PEAK_FLOPS:
        raise ValueError(f"unknown hardware {hardware!r}; valid: {', '.join(PEAK_FLOPS)}")
    table = PEAK_FLOPS[hardware]
    if dtype not in table:
        raise ValueError(
            f"{hardware} has no {dtype} peak on file; valid dtypes: {', '.join(table)}"
        )
    return table[dtype]


def matmul_dtype(hardware: str, compute_dtype: str) -> str:
    """The PEAK_FLOPS dtype that a model with `compute_dtype` runs its matmuls in by default."""
    if compute_dtype == "float32" and hardware.startswith("tpu_"):
        return "bfloat16"  # TPU default precision: one bf16 pass
    if compute_dtype == "float32" and "tfloat32" in PEAK_FLOPS.get(hardware, {}):
        return "tfloat32"  # XLA GPU default precision on Ampere and later
    return compute_dtype


def measure_cpu_peak_flops(dtype: str = "float32", size: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of a jitted size x size matmul on the default device.

    Used as the CPU "peak" for MFU: what XLA's own GEMM reaches on this machine right now (a
    shared machine gives a lower, noisier figure, so take the best repeat).
    """
    if size <= 0 or repeats <= 0:
        raise ValueError(f"size and repeats must be > 0, got size={size}, repeats={repeats}")
    keys = jax.random.split(jax.random.key(0))
    a_MxK, b_KxN = (jax.random.normal(k, (size, size), jnp.dtype(dtype)) for k in keys)
    matmul = jax.jit(jnp.matmul)
    matmul(a_MxK, b_KxN).block_until_ready()  # compile outside the timing
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a_MxK, b_KxN).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def compiled_flops(compiled: Any) -> float:
    """XLA's FLOP count of a compiled program (`jitted.lower(...).compile()`), PER DEVICE.

    For a program sharded over N devices XLA analyses one SPMD partition, so the global count
    is N times this. XLA counts a while loop's (scan's) body once, whatever its trip count.
    """
    cost = compiled.cost_analysis()
    # jax returns a dict; some versions return a list with one dict per executable.
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        raise ValueError(
            "XLA reported no FLOP count for this program (cost_analysis() gave "
            f"{type(cost).__name__}); this backend does not support cost analysis"
        )
    return float(cost["flops"])


def has_matmul_loop(compiled: Any) -> bool:
    """Whether a while loop (a scan) in the compiled program runs matmuls or convolutions.

    XLA counts such a loop's body once, so the program's FLOP count is then a lower bound.
    Loops without matmuls (e.g. the threefry RNG's on CPU) barely change the count and are
    ignored.
    """
    return _while_with_matmul(compiled.as_text())


_HEADER = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
_MATMUL = re.compile(r"\s(?:dot|convolution)\(|__cublas\$|__onednn\$matmul|__onednn\$conv")


def _while_with_matmul(hlo: str) -> bool:
    """Parses HLO text: computation -> its lines; follows what while bodies reach."""
    bodies: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in hlo.splitlines():
        header = _HEADER.match(line)
        if header:
            current = bodies.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    loops = re.findall(r"\swhile\(.*?body=%([\w.\-]+)", hlo)
    seen: set[str] = set()
    todo = [name for name in loops if name in bodies]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in bodies[name]:
            if _MATMUL.search(line):
                return True
            todo += [n for n in re.findall(r"%([\w.\-]+)", line) if n in bodies]
    return False


def mfu(
    flops_per_step: float, steps_per_sec: float, peak_flops_per_device: float, num_devices: int
) -> float:
    """Model FLOP utilization: achieved FLOP/s over the devices' summed peak.

    `flops_per_step` is the global count (all devices) of one optimizer step.
    """
    for name, value in (
        ("flops_per_step", flops_per_step),
        ("steps_per_sec", steps_per_sec),
        ("peak_flops_per_device", peak_flops_per_device),
        ("num_devices", num_devices),
    ):
        if not value > 0:
            raise ValueError(f"mfu: {name} must be > 0, got {value}")
    return flops_per_step * steps_per_sec / (peak_flops_per_device * num_devices)


def analytic_transformer_flops(
    n_params: int, tokens: int, n_layers: int, d_model: int, seq_len: int
) -> float:
    """Training FLOPs (forward + backward) of a decoder-only transformer on `tokens` tokens.

    6 N T for the weight matmuls plus 12 n_layers d_model seq_len T for the attention scores and
    the weighted sum of values (Kaplan et al. 2020, Table 1 x 3; PaLM, Chowdhery et al. 2022,
    Appendix B: 6N + 12LHQT per token with H*Q = d_model). The attention term counts the full
    L x L score matrix, as PaLM does; a causal kernel that skips the masked half does less.

    N is the parameters that take part in matmuls: every parameter except lookup-only position
    embeddings. With tied input/output embeddings the token embedding counts once (the output
    projection is a V x d_model matmul); Kaplan's "non-embedding N" leaves it out and
    undercounts by 6 V d_model per token. Norm scales and biases are included (negligible).
    """
    for name, value in (
        ("n_params", n_params),
        ("tokens", tokens),
        ("n_layers", n_layers),
        ("d_model", d_model),
        ("seq_len", seq_len),
    ):
        if not value > 0:
            raise ValueError(f"analytic_transformer_flops: {name} must be > 0, got {value}")
    return 6.0 * n_params * tokens + 12.0 * n_layers * d_model * seq_len * tokens
