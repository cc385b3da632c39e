"""ViT end to end on real Fashion-MNIST: a few steps through train_and_evaluate, and (8 devices)
an FSDP x tensor-parallel mesh that follows the 1-device loss curve."""

import os

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
    """7x7 patches (16 tokens), one block of width 32: compiles and runs in seconds."""
    c = get_config()
    c.data.data_dir = DATA_DIR
    c.total_steps, c.log_every, c.eval_every = 16, 4, 8
    c.batch_size, c.eval_batch_size = 64, 2000
    c.model = model_config(
        "vit", patch_size=7, num_layers=1, d_model=32, num_heads=4, d_ff=64, dropout=0.1
    )
    c.optimizer.name, c.optimizer.learning_rate = "adamw", 3e-3
    c.optimizer.warmup_steps = 2
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def _losses(workdir) -> list[float]:
    return [r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r]


@pytest.mark.slow  # ~40 s of CPU: compiling the train, eval and stats steps dominates
def test_vit_trains_on_fashion_mnist_and_writes_metrics(tmp_path):
    result = train_and_evaluate(_tiny_config(), str(tmp_path), progress=False)
    losses = _losses(tmp_path)
    assert len(losses) == 4 and np.all(np.isfinite(losses))
    # It learns: seen 2.31 -> 2.14 over the 16 steps (2026-12-02).
    assert losses[-1] < losses[0] - 0.08, losses
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records if "validation/accuracy" in r] == [8, 16]
    # 16 steps of 64 images beat chance (0.1) on the real test split: seen 0.2002.
    assert 0.15 < result.metrics["test/accuracy"] <= 1.0, result.metrics


@pytest.mark.slow  # ~60 s of CPU: two runs, the sharded one compiled for 8 devices
@pytest.mark.multidevice
def test_vit_on_fsdp_and_tensor_parallel_mesh_matches_one_device(tmp_path):
    """FSDP 4 x TP 2 over the ViT's logical axes (blocks: embed/heads/mlp; patch, positions and
    head: embed) follows the 1-device run: a missing reduction would move params by ~lr."""
    overrides = {"total_steps": 8, "eval_every": 8, "model.dropout": 0.0}
    one = train_and_evaluate(
        _tiny_config(num_devices=1, **overrides), str(tmp_path / "1"), progress=False
    )
    sharded_config = _tiny_config(num_devices=8, **overrides)
    sharded_config.mesh.shape = (1, 4, 2)
    sharded = train_and_evaluate(sharded_config, str(tmp_path / "8"), progress=False)
    np.testing.assert_allclose(_losses(tmp_path / "8"), _losses(tmp_path / "1"), rtol=1e-5)
    np.testing.assert_allclose(
        params_digest(sharded.state), params_digest(one.state), rtol=1e-5, atol=2e-5
    )
    up = sharded.state.params["blocks"][0]["up"].get_value()  # [32, 64] ("embed", "mlp")
    assert tuple(up.addressable_shards[0].data.shape) == (32 // 4, 64 // 2)
    patch = sharded.state.params["patch"]["kernel"].get_value()  # [49, 32] (None, "embed")
    assert tuple(patch.addressable_shards[0].data.shape) == (49, 32 // 4)
