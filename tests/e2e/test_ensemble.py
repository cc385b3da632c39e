"""Many seeds in one program: each vmapped member equals the run trained alone with its seed."""

import os
import shutil

import numpy as np
import pytest

from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.train import train_and_evaluate
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))


def _config(**overrides):
    c = get_config()
    c.data.data_dir = DATA_DIR
    c.num_devices = -1  # members are replicated; any device count gives the same numbers
    c.total_steps, c.log_every, c.eval_every = 8, 4, 8
    c.batch_size, c.eval_batch_size = 32, 2000
    # Reads only the batches it uses (no decoding of the whole split) and evaluates the first
    # 2 batches (4000 examples) of each split.
    c.data.in_memory, c.eval_steps = False, 2
    c.model = model_config("mlp", features=(32,), dropout=0.3)
    c.model.norm = "layernorm"
    c.optimizer.warmup_steps = 2
    c.checkpoint.every = 4
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def _train_losses(workdir, key="train/loss"):
    return [r[key] for r in read_metrics(workdir) if key in r]


def test_each_member_equals_its_seed_trained_alone(tmp_path):
    both = train_and_evaluate(_config(seed=3, num_seeds=2), str(tmp_path / "k2"), progress=False)
    for k, seed in enumerate((3, 4)):
        alone = train_and_evaluate(_config(seed=seed), str(tmp_path / f"s{seed}"), progress=False)
        np.testing.assert_allclose(
            _train_losses(tmp_path / "k2", f"train/loss/seed_{seed}"),
            _train_losses(tmp_path / f"s{seed}"),
            rtol=1e-5,
        )
        member = np.concatenate([np.asarray(x)[k].ravel() for x in _leaves(both.state.params)])
        single = np.concatenate([np.asarray(x).ravel() for x in _leaves(alone.state.params)])
        np.testing.assert_allclose(member, single, rtol=1e-4, atol=1e-6)
        assert both.metrics[f"test/accuracy/seed_{seed}"] == pytest.approx(
            alone.metrics["test/accuracy"], abs=1e-3
        )
    accs = [both.metrics[f"test/accuracy/seed_{s}"] for s in (3, 4)]
    assert both.metrics["test/accuracy"] == pytest.approx(np.mean(accs))
    assert both.metrics["test/accuracy_std"] == pytest.approx(np.std(accs))
    # The members really are different models.
    assert _train_losses(tmp_path / "k2", "train/loss/seed_3") != _train_losses(
        tmp_path / "k2", "train/loss/seed_4"
    )


@pytest.mark.slow
def test_member_run_resumes_from_its_checkpoint(tmp_path):
    full = train_and_evaluate(_config(num_seeds=2), str(tmp_path / "a"), progress=False)
    # The same run, cut back to its step-4 checkpoint (member iterators' states included).
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "8")
    resumed = train_and_evaluate(_config(num_seeds=2), str(tmp_path / "b"), progress=False)
    assert resumed.metrics["test/accuracy"] == full.metrics["test/accuracy"]
    for seed in (0, 1):
        key = f"train/loss/seed_{seed}"
        assert _train_losses(tmp_path / "b", key) == _train_losses(tmp_path / "a", key)


@pytest.mark.multidevice  # a (1, 2, 1) mesh needs 2 devices
def test_bad_num_seeds_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="num_seeds"):
        train_and_evaluate(_config(num_seeds=0), str(tmp_path / "x"), progress=False)
    with pytest.raises(ConfigError, match="num_seeds=2 trains replicated members"):
        train_and_evaluate(
            _config(num_seeds=2, num_devices=2, **{"mesh.shape": (1, 2, 1)}),
            str(tmp_path / "y"),
            progress=False,
        )


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)
