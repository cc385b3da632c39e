"""benchmarks/gpu_check.py without a GPU: model sizes, the MFU arithmetic, the report, and the
clear failure without a GPU backend. The whole chain runs in tests/e2e/test_gpu_check_script.py."""

import importlib.util
import json
import os

import jax
import pytest
from synthetic_data import lm_info

from jaxtrain.models import gpt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location(
        "gpu_check", os.path.join(REPO, "benchmarks", "gpu_check.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_gpu_check()
VOCAB = 28_979  # the BPE the check trains on shakespeare saturates here


def _info(seq_len: int, vocab: int = VOCAB):
    return lm_info(seq_len, vocab)


@pytest.mark.parametrize(("size", "low", "high"), [("124m", 100e6, 130e6), ("350m", 300e6, 370e6)])
def test_model_sizes_are_of_their_class(size, low, high):
    c = gpu_check.mfu_config(size, "bpe.json", smoke=False)
    m = c.model
    assert m.compute_dtype == "bfloat16" and m.dropout == 0.0 and c.data.seq_len == 1024
    settings = gpt.GPTConfig(**{k: v for k, v in m.items() if k != "name"} | {"vocab_size": VOCAB})
    assert low <= gpt.count_params(settings) <= high
    other = gpu_check.mfu_config(size, "bpe.json", smoke=False, attention="jax")
    assert other.model.attention_impl == "jax"


def test_mfu_from_6n_and_with_attention_by_hand():
    c = gpu_check.mfu_config("124m", "bpe.json", smoke=False)
    info = _info(1024)
    n = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * VOCAB  # block kernels + the output matmul
    tokens = 16 * 1024
    six_n, attention = 6 * n * tokens, 12 * 12 * 768 * 1024 * tokens
    peak = 989e12
    steps_per_sec = 0.4 * peak / (six_n + attention)  # exactly 40% MFU counting attention
    m = gpu_check.mfu_summary(c, info, steps_per_sec, peak, goal=0.40)
    assert m["matmul_params"] == n and m["tokens_per_step"] == tokens
    assert m["mfu_6n_attention"] == pytest.approx(0.40)
    assert m["mfu_6n"] == pytest.approx(0.40 * six_n / (six_n + attention))
    assert m["goal_met_6n_attention"] and not m["goal_met_6n"]
    assert m["tokens_per_sec"] == pytest.approx(steps_per_sec * tokens)


def test_attention_flops_and_shapes():
    # 2 forward matmuls of 2 B H L^2 D each, backward twice that, causal half.
    assert gpu_check.attention_flops(2, 8, 3, 4) == 3 * 4 * 2 * 3 * 64 * 4 / 2
    shapes = gpu_check.attention_shapes(smoke=False)
    assert [s[1] for s in shapes] == [512, 1024, 2048, 4096]
    assert all(b * n == 16384 for b, n, _, _ in shapes)


def test_an_attention_implementation_that_cannot_run_is_recorded_not_raised():
    if jax.default_backend() != "cpu":
        pytest.skip("cuDNN attention may run on this backend")
    out = gpu_check.time_attention("cudnn", (1, 16, 2, 8), repeats=1)
    assert "error" in out and "seconds" not in out


def test_without_a_gpu_backend_it_says_how_to_get_one():
    if jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU backend")
    with pytest.raises(SystemExit, match=r'pip install -U "jax\[cuda12\]==' + jax.__version__):
        gpu_check.run_backend(smoke=False)
    assert gpu_check.run_backend(smoke=True)["backend"] == jax.default_backend()


def _mfu_part(size: str, mfu: float) -> dict:
    return {
        "layers_x_width": "12 x 768",
        "vocab_size": VOCAB,
        "attention_impl": "blocked",
        "params": 108e6,
        "tokens_per_step": 16384,
        "steps_per_sec": 20.0,
        "tokens_per_sec": 327680.0,
        "mfu_6n": mfu - 0.05,
        "mfu_6n_attention": mfu,
        "goal": gpu_check.SIZES[size][3],
        "goal_met_6n_attention": mfu >= gpu_check.SIZES[size][3],
        "peak_flops_per_device": 989e12,
        "peak_source": "datasheet: h100 bfloat16 dense",
    }


def test_report_tables_and_missing_parts(tmp_path):
    rows = [
        {"seq_len": 512, "batch": 32, "xla": {"seconds": 0.004, "tflops": 50.0}},
        {"seq_len": 1024, "batch": 16, "xla": {"seconds": 0.008, "tflops": 50.0}},
    ]
    rows[0]["cudnn"] = {"seconds": 0.002, "tflops": 100.0}
    rows[0]["cudnn_speedup"] = 2.0
    rows[1]["cudnn"] = {"error": "RuntimeError: cuDNN is not detected."}
    parts = {
        "mfu_124m": _mfu_part("124m", 0.45),
        "attention": {"rows": rows},
        "shakespeare": {
            "experiment": "experiments/shakespeare_char_gpt.py",
            "metric": "validation/loss",
            "measured": 1.55,
            "target": "at_most 1.6 (tolerance 0.0)",
            "passed": True,
            "steps": 5000,
            "train_seconds": 61.0,
        },
    }
    for name, part in parts.items():
        (tmp_path / f"part_{name}.json").write_text(json.dumps(part))
    merged = gpu_check.collect(str(tmp_path))
    assert sorted(merged["parts"]) == sorted(parts)
    assert merged["missing"] == ["backend", "mfu_350m", "host"]
    text = gpu_check.format_report(merged)
    assert "| 124m: 12 x 768, vocab 28,979, blocked attention | 108.0M |" in text
    assert "| 40.0% | 45.0% | >= 40.0%: met |" in text
    assert "| 512 | 32 | 4.00 | 2.00 | 2.00x | 50.0 | 100.0 |" in text
    assert "| 1024 | 16 | 8.00 | - | - | 50.0 | - |" in text
    assert "Not run: RuntimeError: cuDNN is not detected." in text
    assert "validation/loss = 1.5500, target at_most 1.6 (tolerance 0.0): **PASS**" in text
    assert "Did not finish (see gpu_check.log): backend, mfu_350m, host." in text
    assert "nan" not in text.lower()
