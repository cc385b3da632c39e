"""FLOP counting, peaks and MFU: arithmetic against hand calculations, XLA counts of known ops."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.tools import flops


def _compile(fn, *shapes):
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return jax.jit(fn).lower(*args).compile()


def test_mfu_hand_calculation():
    # 1e12 FLOPs/step x 10 steps/s = 1e13 FLOP/s of a 100e12 peak.
    assert flops.mfu(1e12, 10.0, 100e12, 1) == pytest.approx(0.1)
    assert flops.mfu(1e12, 10.0, 100e12, 4) == pytest.approx(0.025)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan])
def test_mfu_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="must be > 0"):
        flops.mfu(1e12, bad, 100e12, 1)


def test_peak_table_is_dense_and_ordered():
    assert flops.peak_flops("h100", "bfloat16") == 989e12
    assert flops.peak_flops("h200", "bfloat16") == flops.peak_flops("h100", "bfloat16")
    assert flops.peak_flops("a100", "bfloat16") == 312e12
    assert flops.peak_flops("tpu_v5p", "bfloat16") == 459e12
    for name, table in flops.PEAK_FLOPS.items():
        assert "bfloat16" in table, name
        if "tfloat32" in table:  # tensor-core TF32 is half of bf16, far above plain FP32
            assert table["tfloat32"] == pytest.approx(table["bfloat16"] / 2, rel=0.01), name
            assert table["float32"] < table["tfloat32"], name


def test_peak_flops_bad_names():
    with pytest.raises(ValueError, match="valid: h100, h100_pcie, h200, a100, tpu_v4"):
        flops.peak_flops("h1000", "bfloat16")
    with pytest.raises(ValueError, match="tpu_v4 has no float32 peak.*valid dtypes: bfloat16"):
        flops.peak_flops("tpu_v4", "float32")


def test_matmul_dtype_follows_default_precision():
    assert flops.matmul_dtype("h100", "float32") == "tfloat32"
    assert flops.matmul_dtype("a100", "bfloat16") == "bfloat16"
    assert flops.matmul_dtype("tpu_v5e", "float32") == "bfloat16"


@dataclasses.dataclass
class _FakeDevice:
    device_kind: str
    platform: str = "gpu"


@pytest.mark.parametrize(
    "kind, name",
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100_pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100"),
        ("TPU v4", "tpu_v4"),
        ("TPU v5 lite", "tpu_v5e"),
        ("TPU v5", "tpu_v5p"),
        ("TPU v6 lite", "tpu_v6e"),
    ],
)
def test_detect_hardware_from_device_kind(kind, name):
    assert flops.detect_hardware(_FakeDevice(kind)) == name


def test_detect_hardware_cpu_and_unknown():
    assert flops.detect_hardware() == "cpu"  # the test machine
    with pytest.raises(ValueError, match="unknown accelerator 'NVIDIA GeForce GTX 1080'"):
        flops.detect_hardware(_FakeDevice("NVIDIA GeForce GTX 1080"))


@pytest.mark.parametrize("m, k, n", [(64, 128, 32), (100, 300, 7)])
def test_compiled_flops_of_matmul_is_2mkn(m, k, n):
    got = flops.compiled_flops(_compile(jnp.matmul, (m, k), (k, n)))
    # XLA counts a dot as 2*M*N*K; exact on jax 0.10.2, 1% slack for other versions.
    assert got == pytest.approx(2 * m * k * n, rel=0.01)


@pytest.mark.multidevice
def test_compiled_flops_is_per_device_when_sharded():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    fn = jax.jit(
        jnp.matmul, in_shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))
    )
    a, b = (
        jax.ShapeDtypeStruct((64, 128), jnp.float32),
        jax.ShapeDtypeStruct((128, 32), jnp.float32),
    )
    got = flops.compiled_flops(fn.lower(a, b).compile())
    assert got == pytest.approx(2 * 64 * 128 * 32 / 8, rel=0.01)


class _FakeCompiled:
    def __init__(self, cost):
        self.cost = cost

    def cost_analysis(self):
        return self.cost


def test_compiled_flops_accepts_list_and_rejects_missing():
    assert flops.compiled_flops(_FakeCompiled([{"flops": 12.0}])) == 12.0
    assert flops.compiled_flops(_FakeCompiled({"flops": 3.0})) == 3.0
    for cost in ([], {}, None, {"bytes accessed": 1.0}):
        with pytest.raises(ValueError, match="no FLOP count"):
            flops.compiled_flops(_FakeCompiled(cost))


def test_matmul_loops_are_detected_rng_loops_are_not():
    def scanned(a_AxMxK, b_KxN):
        return jax.lax.scan(lambda c, x: (c, x @ b_KxN), 0.0, a_AxMxK)[1]

    compiled = _compile(scanned, (4, 64, 128), (128, 32))
    assert flops.has_matmul_loop(compiled)
    # The reason it matters: XLA counts the scan body once, not 4 times.
    assert flops.compiled_flops(compiled) < 0.3 * 4 * 2 * 64 * 128 * 32
    assert not flops.has_matmul_loop(_compile(jnp.matmul, (8, 8), (8, 8)))
    rng = jax.jit(lambda k: jax.random.bernoulli(k, 0.5, (128, 256)))
    assert not flops.has_matmul_loop(rng.lower(jax.random.key(0)).compile())


def test_cpu_probe_is_positive_finite():
    peak = flops.measure_cpu_peak_flops("float32", size=128, repeats=2)
    assert np.isfinite(peak) and peak > 0
    with pytest.raises(ValueError, match="size and repeats must be > 0"):
        flops.measure_cpu_peak_flops(size=0)


def test_analytic_transformer_flops_hand_calculation():
    # 6 N T + 12 L d S T = 6e9 + 12*2*64*128*1000
    got = flops.analytic_transformer_flops(1_000_000, 1000, n_layers=2, d_model=64, seq_len=128)
    assert got == 6e9 + 196_608_000
    with pytest.raises(ValueError, match="seq_len must be > 0"):
        flops.analytic_transformer_flops(1, 1, n_layers=1, d_model=1, seq_len=0)
