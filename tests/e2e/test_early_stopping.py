"""Early stopping: the tracker's arithmetic, and a real run that stops and tests its best step."""

import os

import pytest

from jaxtrain.config import get_config
from jaxtrain.early_stopping import EarlyStopping
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.tools.evaluate import evaluate_checkpoint
from jaxtrain.train import train_and_evaluate
from jaxtrain.validation import validate_config
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))


@pytest.mark.parametrize(
    "mode, values, min_delta, patience, stop_at, best_at",
    [
        ("max", [0.5, 0.6, 0.6, 0.59], 0.0, 2, 3, 1),  # ties do not count as improvement
        ("max", [0.5, 0.6, 0.61, 0.615], 0.02, 2, 3, 1),  # +0.01 and +0.015 < min_delta
        ("min", [1.0, 0.8, 0.9, 0.7, 0.75, 0.76], 0.0, 2, 5, 3),
        ("min", [1.0, 0.9, 0.8], 0.0, 1, None, 2),
    ],
)
def test_tracker(mode, values, min_delta, patience, stop_at, best_at):
    tracker = EarlyStopping(mode=mode, patience=patience, min_delta=min_delta)
    stops = [tracker.update(step, v) for step, v in enumerate(values)]
    assert (stops.index(True) if True in stops else None) == stop_at
    assert tracker.best_step == best_at
    assert EarlyStopping.from_dict(tracker.to_dict()) == tracker


def test_run_stops_and_tests_the_best_checkpoint(tmp_path):
    c = get_config()
    c.data.data_dir, c.data.validation_size = DATA_DIR, 1000
    c.total_steps, c.log_every, c.eval_every = 200, 5, 5
    c.batch_size, c.eval_batch_size = 64, 500
    # The stopping rule is what is tested, not the model: a tiny MLP, the batches read as
    # needed (no decoding of the whole split) and 2 evaluation batches per split.
    c.data.in_memory, c.eval_steps = False, 2
    c.model = model_config("mlp", features=(32,), dropout=0.3)
    c.optimizer.warmup_steps = 2
    # No later evaluation can beat the first by a whole accuracy point: stop after 2 more.
    c.early_stopping.patience, c.early_stopping.min_delta = 2, 1.0
    result = train_and_evaluate(c, str(tmp_path), progress=False)
    assert result.metrics["early_stopping/best_step"] == 5
    assert result.metrics["early_stopping/stopped_at"] == 15
    records = read_metrics(tmp_path)
    assert max(r["step"] for r in records) == 15
    assert [r["step"] for r in records if "test/accuracy" in r] == [15]
    from_checkpoint = evaluate_checkpoint(str(tmp_path), "5")
    assert result.metrics["test/accuracy"] == from_checkpoint["test/accuracy"]
    assert result.metrics["test/loss"] == from_checkpoint["test/loss"]


def test_early_stopping_needs_a_kept_best_checkpoint():
    c = get_config()
    c.early_stopping.patience, c.checkpoint.keep_best = 3, 0
    with pytest.raises(ConfigError, match="checkpoint.keep_best"):
        validate_config(c, num_devices=1)
