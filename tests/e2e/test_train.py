"""End-to-end runs on real Fashion-MNIST: CLI, reproducibility, 1-vs-8 devices, bad input."""

import json
import os
import re

import numpy as np
import pytest

from jaxtrain.build import params_digest
from jaxtrain.config import get_config
from jaxtrain.models import model_config
from jaxtrain.train import train_and_evaluate
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))


def _tiny_config(**overrides):
    c = get_config()
    c.data.data_dir = DATA_DIR
    c.total_steps, c.log_every, c.eval_every = 12, 4, 6
    c.batch_size, c.eval_batch_size = 64, 2000
    c.model.features, c.model.hidden, c.model.dropout = (8, 16), 32, 0.3
    c.optimizer.warmup_steps = 2
    c.loss.label_smoothing = 0.1
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def _values(records, prefixes=("train/", "validation/", "test/")):
    return [{k: v for k, v in r.items() if k == "step" or k.startswith(prefixes)} for r in records]


def test_same_seed_is_bitwise_reproducible(tmp_path):
    # Evaluations on the first 2 batches of each split, batches read as needed (no decoding of
    # the whole split): what is compared is exact equality. (The in-memory source's exactness
    # is test_checkpoint's SIGKILL test.)
    # A tiny MLP with batchnorm and dropout: every kind of state, a fraction of the CNN's cost.
    mlp = model_config("mlp", features=(32,), norm="batchnorm", dropout=0.3)
    cheap = {"eval_steps": 2, "eval_batch_size": 500, "data.in_memory": False, "model": mlp}
    a = train_and_evaluate(_tiny_config(**cheap), str(tmp_path / "a"), progress=False)
    b = train_and_evaluate(_tiny_config(**cheap), str(tmp_path / "b"), progress=False)
    np.testing.assert_array_equal(params_digest(a.state), params_digest(b.state))
    ma, mb = _values(read_metrics(tmp_path / "a")), _values(read_metrics(tmp_path / "b"))
    assert ma == mb  # exact float equality, key by key
    assert any("test/accuracy" in r for r in ma)
    c = train_and_evaluate(_tiny_config(seed=1, **cheap), str(tmp_path / "c"), progress=False)
    assert not np.array_equal(params_digest(a.state), params_digest(c.state))


@pytest.mark.multidevice
def test_one_and_eight_devices_give_the_same_loss_curve(tmp_path):
    # Full evaluations (the last validation and test batches are partial and padded across the
    # devices), from the decoded splits that `prepare` leaves mapped on disk.
    one = train_and_evaluate(_tiny_config(num_devices=1), str(tmp_path / "1"), progress=False)
    eight = train_and_evaluate(_tiny_config(num_devices=8), str(tmp_path / "8"), progress=False)
    curve = lambda d: [r["train/loss"] for r in read_metrics(d) if "train/loss" in r]
    c1, c8 = curve(tmp_path / "1"), curve(tmp_path / "8")
    assert len(c1) == len(c8) == 3
    np.testing.assert_allclose(c8, c1, rtol=1e-4)
    np.testing.assert_allclose(params_digest(eight.state), params_digest(one.state), atol=2e-4)
    assert one.metrics["test/accuracy"] == pytest.approx(eight.metrics["test/accuracy"], abs=2e-3)


def test_cli_end_to_end_writes_the_workdir_contract(tmp_path, run_cli):
    workdir = tmp_path / "run"
    out = run_cli(
        "train",
        "--config",
        "experiments/fashion_mnist_cnn.py",
        "--workdir",
        str(workdir),
        "--config.total_steps=30",
        "--config.log_every=10",
        "--config.eval_every=15",
        "--config.model.features=(8, 16)",
        "--config.eval_batch_size=2000",
        "--config.data.in_memory=false",
        "--config.data.validation_size=1000",
        "--config.optimizer.warmup_steps=5",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done: 30 steps" in out.stdout
    config = json.loads((workdir / "config.json").read_text())
    assert config["total_steps"] == 30 and config["model"]["features"] == [8, 16]
    prov = json.loads((workdir / "provenance.json").read_text())
    assert prov["packages"]["jax"] and prov["device_count"] >= 1
    records = read_metrics(workdir)
    assert [r["step"] for r in records if "train/loss" in r] == [10, 20, 30]
    assert [r["step"] for r in records if "validation/accuracy" in r] == [15, 30]
    final = [r for r in records if "test/accuracy" in r]
    assert len(final) == 1 and 0.5 < final[0]["test/accuracy"] <= 1.0  # 30 steps beat chance
    for key in ("test/precision_macro", "test/recall_macro", "test/f1_macro", "test/loss"):
        assert key in final[0]
    cm = json.loads((workdir / "eval" / "confusion_test_step30.json").read_text())
    assert np.array(cm["rows_true_cols_pred"]).sum() == 10000
    assert any(p.startswith("events.out.tfevents") for p in os.listdir(workdir / "tensorboard"))


def test_smoke_run_clips_the_warmup_and_evaluates_a_few_batches(tmp_path, run_cli):
    """The demo's 200-step warmup with total_steps=30: one warning line, and the run trains.
    eval_steps=2 evaluates two batches of eval_batch_size=500 per split."""
    workdir = tmp_path / "smoke"
    out = run_cli(
        "train",
        "--config",
        "experiments/fashion_mnist_cnn.py",
        "--workdir",
        str(workdir),
        "--config.total_steps=30",
        "--config.eval_every=30",
        "--config.eval_steps=2",
        "--config.eval_batch_size=500",
        "--config.model.features=(8, 16)",
        "--config.data.in_memory=false",
        "--config.model.hidden=32",
        "--noprogress",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [line for line in out.stderr.splitlines() if "warmup" in line]
    assert warnings == [
        "warning: optimizer.warmup_steps=200 is not shorter than total_steps=30; clipped to 29"
    ]
    assert "done: 30 steps" in out.stdout and "(first 2 eval batches)" in out.stdout
    for split in ("validation", "test"):
        cm = json.loads((workdir / "eval" / f"confusion_{split}_step30.json").read_text())
        assert np.array(cm["rows_true_cols_pred"]).sum() == 2 * 500


def test_cli_missing_dataset_says_how_to_prepare(tmp_path, run_cli):
    out = run_cli(
        "train",
        "--config",
        "experiments/fashion_mnist_cnn.py",
        "--workdir",
        str(tmp_path / "r"),
        f"--config.data.data_dir={tmp_path / 'empty'}",
    )
    assert out.returncode == 2
    assert "jaxtrain prepare fashion_mnist" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_num_classes_smaller_than_labels_is_rejected(tmp_path, run_cli):
    out = run_cli(
        "train",
        "--config",
        "experiments/fashion_mnist_cnn.py",
        "--workdir",
        str(tmp_path / "r"),
        "--config.model.num_classes=5",
    )
    assert out.returncode == 2
    assert "num_classes" in out.stderr and "Traceback" not in out.stderr


def test_cli_nonfinite_loss_stops_and_names_the_step(tmp_path, run_cli):
    out = run_cli(
        "train",
        "--config",
        "experiments/fashion_mnist_mlp.py",
        "--workdir",
        str(tmp_path / "r"),
        "--config.optimizer.name=sgd",
        "--config.optimizer.learning_rate=1e6",
        "--config.optimizer.schedule=constant",
        "--config.optimizer.warmup_steps=0",
        "--config.total_steps=20",
        "--config.log_every=10",
        "--config.data.in_memory=false",
        "--progress=false",
    )
    assert out.returncode == 3, out.stderr[-2000:]
    assert re.search(r"non-finite train loss at step \d+ \(checked at step 10\)", out.stderr)
    assert not (tmp_path / "r" / "final_metrics.json").exists()
