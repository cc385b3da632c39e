"""`reproduce` end to end on a test-only experiment (tests/data/tiny_mlp_experiment.py: 20 steps
of a tiny MLP on real Fashion-MNIST): a run that meets its declaration passes, one that misses it
fails with exit code 1; both are recorded, and the results table shows the latest."""

import json
import os
import shutil

import pytest

from jaxtrain.errors import ConfigError
from jaxtrain.tools.reproduce import reproduce, results_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
TINY = ("tiny_mlp_experiment.py", "tiny_mlp_experiment_wrong.py")


@pytest.fixture
def experiments(tmp_path, monkeypatch):
    """The two test experiments in a folder of their own (so results.jsonl is written there)."""
    monkeypatch.setenv("JAXTRAIN_DATA_DIR", DATA_DIR)
    folder = tmp_path / "experiments"
    folder.mkdir()
    for name in TINY:
        shutil.copy(os.path.join(REPO, "tests", "data", name), folder / name)
    return folder


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_a_run_that_meets_its_declaration_passes_and_is_recorded(experiments, tmp_path):
    out = reproduce(str(experiments / TINY[0]), workdir=str(tmp_path / "run"), progress=False)
    assert out.passed and abs(out.measured - 0.422) <= 0.01
    (record,) = _records(experiments)
    assert record["experiment"] == "tiny_mlp_experiment" and record["value"] == out.measured
    assert record["passed"] and record["how"] == "reproduce" and record["steps"] == 20
    assert record["machine"] and record["date"] and record["jax"]
    row = results_table(str(experiments)).splitlines()[2]
    assert row.startswith("| `tiny_mlp_experiment` | test accuracy | 0.422 ± 0.01 | 2 CPU cores")
    assert f"| {out.measured:.4g} | yes |" in row and "(reproduce)" in row
    # The finished run is not rerun (nor recorded twice) in the same workdir.
    with pytest.raises(ConfigError, match="holds a finished run"):
        reproduce(str(experiments / TINY[0]), workdir=str(tmp_path / "run"), progress=False)
    assert len(_records(experiments)) == 1


def test_a_run_that_misses_its_declaration_fails_with_exit_code_1(experiments, tmp_path, run_cli):
    path, workdir = str(experiments / TINY[1]), str(tmp_path / "run")
    out = run_cli("reproduce", path, "--seeds", "2", "--workdir", workdir, "--noprogress")
    assert out.returncode == 1, out.stderr[-3000:]
    assert out.stdout.startswith("FAIL: tiny_mlp_experiment_wrong test/accuracy = 0.")
    assert "expected 0.9 ± 0.01" in out.stdout
    (record,) = _records(experiments)
    assert not record["passed"] and record["seeds"] == 2 and len(record["values"]) == 2
    assert record["value"] == pytest.approx(sum(record["values"]) / 2)
    row = results_table(str(experiments)).splitlines()[3]
    assert "(mean of 2 seeds) | **no** |" in row
