"""Cost estimator: arithmetic by hand, the XLA count of a real step, bad input."""

import pytest

from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.tools import estimate

HAND = dict(hardware="h100", num_devices=8, mfu=0.4, price_per_hour=2.5, dtype="bfloat16")


def test_estimate_cost_hand_calculation():
    e = estimate.estimate_cost(1e15, 1000, **HAND)
    # seconds = 1e18 / (8 x 989e12 x 0.4) = 315.97; dollars = 315.97 / 3600 x 8 x 2.5 = 1.7554
    assert e["seconds"] == pytest.approx(315.97, abs=0.01)
    assert e["dollars"] == pytest.approx(1.7554, abs=1e-4)
    assert e["device_hours"] == pytest.approx(8 * 315.97 / 3600, rel=1e-4)
    assert e["total_flops"] == 1e18


def test_float32_uses_tf32_peak_on_h100():
    bf16 = estimate.estimate_cost(1e15, 1000, **HAND)
    f32 = estimate.estimate_cost(1e15, 1000, **(HAND | {"dtype": "float32"}))
    assert f32["peak_dtype"] == "tfloat32"
    assert f32["seconds"] / bf16["seconds"] == pytest.approx(989 / 494)


def test_compare_and_table():
    e = estimate.estimate_cost(1e15, 1000, **HAND)
    other = estimate.compare(e, "tpu_v5p", price_per_hour=4.2)
    assert other["speedup"] == pytest.approx(459 / 989)
    assert other["dollars"] == pytest.approx(1e18 / (8 * 459e12 * 0.4) / 3600 * 8 * 4.2)
    same_price = estimate.compare(e, "a100")
    assert same_price["price_per_device_hour"] == 2.5
    table = estimate.format_estimate(e, other)
    assert "| | h100 | tpu_v5p |" in table
    assert "$1.76" in table and "0.46x" in table


@pytest.mark.parametrize(
    "override, match",
    [
        ({"hardware": "h1000"}, "'h1000' is unknown; valid: h100, h100_pcie"),
        ({"mfu": 0.0}, r"--mfu must be in \(0, 1\]"),
        ({"mfu": 1.5}, r"--mfu must be in \(0, 1\]"),
        ({"price_per_hour": 0.0}, "--price_per_hour must be > 0"),
        ({"price_per_hour": -2.0}, "--price_per_hour must be > 0"),
        ({"num_devices": 0}, "--num_devices must be >= 1"),
    ],
)
def test_bad_input(override, match):
    with pytest.raises(ConfigError, match=match):
        estimate.estimate_cost(1e15, 1000, **(HAND | override))


def test_dtype_without_a_peak():
    with pytest.raises(ValueError, match="tpu_v4 has no float16 peak"):
        estimate.estimate_cost(1e15, 10, **(HAND | {"hardware": "tpu_v4", "dtype": "float16"}))


def _mlp_config(hidden: int = 32, batch: int = 128):
    c = get_config()
    c.model = model_config("mlp", norm="none", features=(hidden,))
    c.model.dropout = 0.0
    c.batch_size = batch
    c.total_steps = 500
    return c


def test_estimate_config_cost_counts_the_real_step():
    """XLA's count of the MLP step is its matmuls (forward, weight grads, one input grad) plus a
    few element-wise FLOPs per parameter and activation (ReLU, softmax, AdamW)."""
    c = _mlp_config()
    out = estimate.estimate_config_cost(
        c, hardware="a100", price_per_hour=1.0, mfu=0.5, compare_to="h100", num_devices=2
    )
    b, weights = c.batch_size, 784 * 32 + 32 * 10
    matmuls = 2 * b * weights * 2 + 2 * b * 32 * 10
    step_flops = out["estimate"]["flops_per_step"]
    assert matmuls <= step_flops <= 1.15 * matmuls
    assert out["estimate"]["num_devices"] == 2
    assert out["estimate"]["peak_dtype"] == "tfloat32"  # image models compute in float32
    assert out["compare"]["hardware"] == "h100"
    assert not out["flops_lower_bound"]
    printed = estimate.format_estimate_report(c, out)
    assert "mlp on fashion_mnist: batch 128, 500 steps" in printed
    assert "| | a100 | h100 |" in printed


def test_estimate_config_cost_counts_accumulated_steps_in_full():
    """With grad accumulation the step is a scan XLA counts once; the estimator compiles the same
    global batch without it, so the count does not drop to 1/A."""
    c = _mlp_config(hidden=64)
    plain = estimate.count_step_flops(c, estimate.dataset_info(c))[0]
    c.optimizer.grad_accum_steps = 4
    assert estimate.count_step_flops(c, estimate.dataset_info(c))[0] == plain
    step = estimate.compile_train_step(
        c, estimate.sharding.create_mesh(1), estimate.dataset_info(c)
    )
    assert estimate.flops_lib.has_matmul_loop(step.compiled)
    assert estimate.flops_lib.compiled_flops(step.compiled) < 0.5 * plain


def test_estimate_config_cost_checks_before_compiling():
    c = _mlp_config()
    with pytest.raises(ConfigError, match="'tpu_v9' is unknown"):
        estimate.estimate_config_cost(c, hardware="tpu_v9", price_per_hour=1.0, mfu=0.4)
    with pytest.raises(ConfigError, match="'b200' is unknown"):
        estimate.estimate_config_cost(
            c, hardware="h100", price_per_hour=1.0, mfu=0.4, compare_to="b200"
        )
    c.batch_size = 100
    with pytest.raises(ConfigError, match="config.batch_size: 100 is not divisible"):
        estimate.estimate_config_cost(
            c, hardware="h100", price_per_hour=1.0, mfu=0.4, num_devices=8
        )
