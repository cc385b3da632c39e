"""`compare` on real Fashion-MNIST: two arms of 8 vmapped seeds each (a tiny MLP, 30 steps, two
eval batches), paired seed by seed; skipping a finished arm and resuming an interrupted one."""

import json
import os
import shutil

import pytest

from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.tools.compare import Arm, arm_b_config, run_compare
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
SEEDS = 8  # the exact sign-flip p-value can go down to 2 / 2^8 = 0.0078
FINAL = ("test/accuracy", "test/loss", "validation/accuracy", "validation/loss")


def _config():
    c = get_config()
    c.data.data_dir = DATA_DIR
    c.data.in_memory = False  # reads ~8k train examples; decoding all 60k would take longer
    c.total_steps, c.log_every, c.eval_every = 30, 1, 15
    c.batch_size, c.eval_batch_size, c.eval_steps = 32, 500, 2
    c.model = model_config("mlp", features=(32,), dropout=0.1)
    c.optimizer.warmup_steps = 0
    c.checkpoint.every = 15
    return c


def _first_losses(arm_dir) -> list[float]:
    first = next(r for r in read_metrics(arm_dir) if r["step"] == 1)
    return [first[f"train/loss/seed_{s}"] for s in range(SEEDS)]


# 2 arms x 8 seeds trained, resumed and re-run (~40 CPU-s): `make test-slow`. The default
# session keeps the pipeline (test_an_arm_against_itself_differs_by_exactly_zero) and the
# statistics (tests/unit/test_compare_stats.py).
@pytest.mark.slow
def test_a_100x_smaller_learning_rate_is_significantly_worse(tmp_path):
    workdir = str(tmp_path / "cmp")
    a = _config()
    b = arm_b_config(a, b=["optimizer.learning_rate=1e-5"])  # A's is 1e-3
    report = run_compare(Arm("A", a), Arm("B", b), workdir, seeds=SEEDS, progress=False)

    for metric in FINAL:
        s = report["final"][metric]
        worse = s["diff_mean"] < 0 if metric.endswith("accuracy") else s["diff_mean"] > 0
        assert worse and s["p_t"] < 0.01 and s["p_sign_flip"] == 2 / 2**SEEDS, (metric, s)
        assert s["ci_high"] < 0 or s["ci_low"] > 0, (metric, s)  # the interval excludes 0
    assert set(report["steps"]["validation/accuracy"]) == {"15", "30"}
    # Seed k of both arms starts from the same params, draws the same dropout masks and reads
    # the same first batch: the first step's loss (before any update) is equal, seed by seed,
    # and differs between seeds.
    first_a, first_b = _first_losses(f"{workdir}/a"), _first_losses(f"{workdir}/b")
    assert first_a == first_b and len(set(first_a)) == SEEDS
    assert report["pairing"]["same_data_order"] and report["pairing"]["same_init"]
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| test/accuracy |" in text and "Same data order per seed: yes" in text
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    stored = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert stored["final"]["test/accuracy"]["b"] == report["final"]["test/accuracy"]["b"]

    # Re-running skips both finished arms (nothing is retrained) and writes the same report.
    mtime = os.path.getmtime(f"{workdir}/a/final_metrics.json")
    assert run_compare(Arm("A", a), Arm("B", b), workdir, seeds=SEEDS, progress=False) == report
    assert os.path.getmtime(f"{workdir}/a/final_metrics.json") == mtime
    # Arm B interrupted after its step-15 checkpoint: re-running resumes it to the same end.
    os.remove(f"{workdir}/b/final_metrics.json")
    shutil.rmtree(f"{workdir}/b/checkpoints/30")
    resumed = run_compare(Arm("A", a), Arm("B", b), workdir, seeds=SEEDS, progress=False)
    assert resumed["final"] == report["final"] and resumed["steps"] == report["steps"]
    # Another comparison in the same directory is refused.
    other = arm_b_config(a, b=["optimizer.learning_rate=1e-4"])
    with pytest.raises(ConfigError, match="holds another comparison \\(different b\\)"):
        run_compare(Arm("A", a), Arm("B", other), workdir, seeds=SEEDS, progress=False)


def test_an_arm_against_itself_differs_by_exactly_zero(tmp_path):
    report = run_compare(
        Arm("A", _config()), Arm("A again", _config()), str(tmp_path), seeds=SEEDS, progress=False
    )
    for stats in [*report["final"].values(), *report["steps"]["validation/loss"].values()]:
        assert stats["a"] == stats["b"]
        assert stats["diff_mean"] == stats["ci_low"] == stats["ci_high"] == 0.0
        assert stats["t"] is None and stats["p_t"] == 1.0 and stats["p_sign_flip"] == 1.0
    assert "| undefined |" not in (tmp_path / "compare.md").read_text()  # t is not shown
