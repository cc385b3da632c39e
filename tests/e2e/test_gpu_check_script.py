"""benchmarks/gpu_check.sh end to end on a CPU: --smoke runs every part at tiny sizes through the
real train loop and data, then the report; without --smoke and without a GPU it stops at once,
saying how to get a GPU build of jax."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.sh")


def _run(*args, env=None):
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_smoke_runs_every_part_and_writes_the_report(tmp_path):
    out = tmp_path / "gc"
    r = _run("--smoke", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    merged = json.loads((out / "gpu_check.json").read_text())
    assert merged["missing"] == []
    p = merged["parts"]
    for size in ("124m", "350m"):
        m = p[f"mfu_{size}"]
        assert 0 < m["mfu_6n"] < m["mfu_6n_attention"] < 1 and m["steps_per_sec"] > 0
    rows = p["attention"]["rows"]
    assert all(row["xla"]["seconds"] > 0 and "error" in row["cudnn"] for row in rows)  # CPU
    h = p["host"]["host"]
    assert h["host_cpu_us_per_step"] > 0 and h["hand_cpu_us_per_step"] > 0
    s = p["shakespeare"]
    assert s["steps"] == 4 and s["metric"] == "validation/loss" and s["passed"] is False
    text = (out / "gpu_check.md").read_text()
    assert "| model | params |" in text and "| seq len | batch |" in text and "Shakespeare" in text
    assert "== shakespeare" in (out / "gpu_check.log").read_text()


@pytest.mark.slow
def test_without_a_gpu_it_stops_and_says_how_to_get_one(tmp_path):
    r = _run("--out", str(tmp_path / "gc"), env={"JAX_PLATFORMS": "cpu"})
    assert r.returncode == 2
    assert 'pip install -U "jax[cuda12]==' in r.stderr and "has no GPU backend" in r.stderr
    assert not (tmp_path / "gc" / "gpu_check.json").exists()


def test_unknown_option_is_refused():
    r = _run("--fast")
    assert r.returncode == 2 and "gpu_check.sh: unknown option --fast" in r.stderr
