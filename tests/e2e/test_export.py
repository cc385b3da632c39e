"""Export: a fresh process with only jax reproduces the trained model's predictions exactly."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxtrain.config import get_config
from jaxtrain.data import read_image_split
from jaxtrain.errors import CheckpointError
from jaxtrain.tools.evaluate import restore_run_state
from jaxtrain.tools.export import export_model, inference_fn
from jaxtrain.train import train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))

LOADER = """
import sys, jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
images = np.load(sys.argv[2])
logits = np.concatenate([np.asarray(exported.call(images[i:i + 1000]))
                         for i in range(0, len(images), 1000)])
np.save(sys.argv[3], logits)
assert not any(m.startswith(("jaxtrain", "flax")) for m in sys.modules), "model code was loaded"
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    c = get_config()
    c.data.data_dir, c.data.validation_size = DATA_DIR, 1000
    c.total_steps, c.log_every, c.eval_every, c.checkpoint.every = 30, 10, 30, 30
    c.batch_size, c.eval_batch_size = 64, 1000
    c.model.features, c.model.hidden, c.optimizer.warmup_steps = (8, 16), 32, 5
    result = train_and_evaluate(c, str(workdir), progress=False)
    return str(workdir), result.metrics


def test_exported_model_reproduces_predictions_in_a_fresh_process(tmp_path, trained_run):
    workdir, metrics = trained_run
    out = tmp_path / "model.jaxexport"
    export_model(workdir, "latest", str(out))
    images, labels = read_image_split(
        "fashion_mnist", "test", data_dir=DATA_DIR, validation_size=1000, num_classes=10
    )
    np.save(tmp_path / "images.npy", images)

    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(out), str(tmp_path / "images.npy"),
         str(tmp_path / "logits.npy")],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    exported_logits = np.load(tmp_path / "logits.npy")

    run = restore_run_state(workdir, "latest")
    predict = jax.jit(inference_fn(run.graphdef, run.state, 0.2860, 0.3530))
    local = np.concatenate(
        [np.asarray(predict(images[i : i + 1000])) for i in range(0, 10000, 1000)]
    )
    np.testing.assert_array_equal(exported_logits, local)
    accuracy = float(np.mean(exported_logits.argmax(-1) == labels))
    assert accuracy == pytest.approx(metrics["test/accuracy"], abs=1e-4)


def test_export_bad_input(tmp_path, trained_run):
    workdir, _ = trained_run
    with pytest.raises(CheckpointError, match="cannot write"):
        export_model(workdir, "latest", str(tmp_path / "missing_dir" / "m.jaxexport"))
    with pytest.raises(CheckpointError, match="use best, latest or one of the saved steps"):
        export_model(workdir, "7", str(tmp_path / "m.jaxexport"))
    with pytest.raises(CheckpointError, match="config.json"):
        export_model(str(tmp_path), "latest", str(tmp_path / "m.jaxexport"))
    with pytest.raises(CheckpointError, match="trained a 'cnn'.*--format jax_export"):
        export_model(workdir, "latest", str(tmp_path / "hf"), fmt="hf")
    assert not (tmp_path / "hf").exists()
