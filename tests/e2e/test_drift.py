"""Drift monitoring on real Fashion-MNIST: the reference a tiny run writes, drift/... metrics
during training, and `python -m jaxtrain drift` flagging shifted test images (brightness,
rotation) but not the test split as it is."""

import json
import os
import subprocess
import sys

import pytest

from jaxtrain.config import get_config
from jaxtrain.drift import REFERENCE_FILE
from jaxtrain.errors import DataError
from jaxtrain.models import model_config
from jaxtrain.tools.drift import run_drift
from jaxtrain.train import train_and_evaluate
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
SAMPLE = 256


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """20 steps of a small MLP; evaluations at 10 and 20 on one batch; samples of 256."""
    c = get_config()
    c.data.data_dir, c.data.in_memory = DATA_DIR, False  # reads only the batches it uses
    c.model = model_config("mlp", features=(32,))
    c.total_steps, c.log_every, c.eval_every, c.eval_steps = 20, 10, 10, 1
    c.batch_size, c.eval_batch_size = 64, 256
    c.drift.num_examples = SAMPLE
    workdir = str(tmp_path_factory.mktemp("drift") / "run")
    train_and_evaluate(c, workdir, progress=False)
    return workdir


def test_training_writes_the_reference_and_drift_metrics_beside_the_old_keys(run):
    with open(os.path.join(run, REFERENCE_FILE)) as f:
        reference = json.load(f)
    assert reference["dataset"] == "fashion_mnist" and reference["split"] == "validation"
    assert reference["checkpoint_step"] == 20 and reference["sample_size"] == SAMPLE
    stats = reference["statistics"]
    assert stats["num_examples"] == SAMPLE
    assert sum(stats["distributions"]["predictions/class"]) == SAMPLE
    assert len(stats["distributions"]["inputs/pixels"]) == 32
    records = read_metrics(run)
    drift_records = [r for r in records if "drift/max_psi" in r]
    assert [r["step"] for r in drift_records] == [10, 20]
    # Own records: the validation records hold only validation/ keys, as before.
    for r in records:
        prefixes = {k.split("/")[0] for k in r if k != "step"}
        assert len(prefixes) == 1 or prefixes == {"train", "perf"}, r
    # Validation against the train sample: the same images, no input drift (predictions also
    # differ by overfitting, so they are not pinned here).
    for r in drift_records:
        assert r["drift/inputs/pixels/psi"] < 0.05 and r["drift/inputs/spatial/psi"] < 0.05, r
        assert r["drift/max_psi"] >= r["drift/predictions/class/psi"] >= 0.0


def test_the_reference_split_itself_has_zero_drift(run, tmp_path):
    """The tool recomputes the statistics the run saved: exactly the same numbers."""
    report = run_drift(run, "fashion_mnist:validation", threshold=0.2, out=str(tmp_path / "v.json"))
    assert all(f == {"psi": 0.0, "kl": 0.0} for f in report["figures"].values()), report
    assert json.loads((tmp_path / "v.json").read_text())["figures"] == report["figures"]


def test_shifted_test_images_are_flagged_and_the_test_split_is_not(run, tmp_path):
    plain = run_drift(run, "fashion_mnist", threshold=0.2, out=str(tmp_path / "t.json"))
    assert plain["data"] == "fashion_mnist:test" and plain["flagged"] == [], plain["figures"]
    bright = run_drift(run, "fashion_mnist", threshold=0.2, transforms=["brightness:0.3"],
                       out=str(tmp_path / "b.json"))  # fmt: skip
    assert "inputs/pixels" in bright["flagged"], bright["figures"]
    assert bright["channels"]["compared"]["mean"][0] > plain["channels"]["compared"]["mean"][0]
    rotated = run_drift(run, "fashion_mnist", threshold=0.2, transforms=["rotate:90"],
                        out=str(tmp_path / "r.json"))  # fmt: skip
    assert "inputs/spatial" in rotated["flagged"], rotated["figures"]
    # Rotation keeps every pixel value: the value histogram cannot see it.
    assert rotated["figures"]["inputs/pixels"] == plain["figures"]["inputs/pixels"]
    for report in (bright, rotated):
        assert max(f["psi"] for f in report["figures"].values()) > 2 * max(
            f["psi"] for f in plain["figures"].values()
        )


def test_bad_threshold_is_refused_before_anything_is_read(tmp_path):
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(DataError, match="--threshold must be a finite PSI > 0"):
            run_drift(str(tmp_path / "no_run"), "fashion_mnist", threshold=bad)


@pytest.mark.slow  # two CLI processes (~15 s of CPU); bad input (exit 2) is in test_bad_input
def test_cli_exits_1_on_drift_and_0_without(run, tmp_path):
    def start(*args):
        return subprocess.Popen(
            [sys.executable, "-m", "jaxtrain", "drift", "--workdir", run, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "JAXTRAIN_DATA_DIR": DATA_DIR},
        )

    rotated = start("--data", "fashion_mnist", "--transform", "rotate:90")
    plain = start("--data", "fashion_mnist:test", "--out", str(tmp_path / "plain.json"))
    out_r, err_r = rotated.communicate(timeout=300)
    out_p, err_p = plain.communicate(timeout=300)
    assert rotated.returncode == 1, err_r[-3000:]
    assert "inputs/spatial" in out_r and "DRIFT" in out_r and "Traceback" not in err_r
    with open(os.path.join(run, "drift", "fashion_mnist_test_rotate90.json")) as f:
        assert json.load(f)["flagged"]
    assert plain.returncode == 0, err_p[-3000:]
    assert "drifted: none" in out_p
    assert json.loads((tmp_path / "plain.json").read_text())["flagged"] == []
