"""LoRA end to end on the real MR data with a tiny BERT: a resumed run is bitwise identical to
an uninterrupted one, the checkpoint holds the adapters, and `eval` and `export` of the run use
the merged weights."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrain.config import get_config
from jaxtrain.models import model_config
from jaxtrain.tools.evaluate import evaluate_checkpoint, restore_run_state
from jaxtrain.tools.export import export_model
from jaxtrain.train import train_and_evaluate
from jaxtrain.warm_start import flatten_by_path, read_host_tree
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))


def _config():
    c = get_config()
    c.data.data_dir, c.data.name, c.data.tokenizer = DATA_DIR, "mr_polarity", "minilm"
    c.data.seq_len = 32
    c.total_steps, c.log_every, c.eval_every, c.eval_steps = 8, 2, 4, 1
    c.checkpoint.every = 4
    c.batch_size, c.eval_batch_size = 16, 256
    c.drift.num_examples = 64  # drift statistics run on the merged weights too
    c.model = model_config(
        "bert", num_classes=2, max_len=64, num_layers=1, d_model=32, num_heads=2, d_ff=64
    )
    c.optimizer.name, c.optimizer.learning_rate, c.optimizer.warmup_steps = "adamw", 1e-2, 2
    c.finetune.lora_rank = 4
    c.finetune.lora_targets = ("*/query/kernel", "*/value/kernel", "*/mlp_out/kernel")
    c.finetune.trainable = ("head/*",)
    return c


def _train_state_leaves(workdir, step):
    tree = read_host_tree(os.path.join(workdir, "checkpoints", str(step)))["train_state"]
    return flatten_by_path(tree)


def _values(workdir):
    prefixes = ("train/", "validation/", "test/")
    return [
        {k: v for k, v in r.items() if k == "step" or k.startswith(prefixes)}
        for r in read_metrics(workdir)
    ]


@pytest.mark.slow
def test_lora_run_resumes_bitwise_and_exports_merged_weights(tmp_path):
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    result = train_and_evaluate(_config(), ref, progress=False)
    assert result.metrics["lora/trainable_params"] < result.metrics["lora/model_params"] / 10

    # The checkpoint holds adapters (A and B per target), the head, their optimizer state and
    # the frozen base; the optimizer holds nothing shaped like a frozen weight.
    saved = _train_state_leaves(ref, 8)
    adapters = [k for k in saved if k.startswith("params/adapters/")]
    assert len(adapters) == 2 * 3 and all(k.endswith(("lora_a", "lora_b")) for k in adapters)
    assert "params/trainable/head/kernel" in saved
    assert "frozen/encoder/layers/0/query/kernel" in saved
    frozen_names = {k.removeprefix("frozen/") for k in saved if k.startswith("frozen/")}
    assert not any(k.split("/", 2)[-1] in frozen_names for k in saved if k.startswith("opt_state"))

    # An interrupted run: the same config, its last checkpoint removed, then run again.
    train_and_evaluate(_config(), cut, progress=False)
    shutil.rmtree(os.path.join(cut, "checkpoints", "8"))
    train_and_evaluate(_config(), cut, progress=False)
    assert _values(cut) == _values(ref)
    resumed = _train_state_leaves(cut, 8)
    assert resumed.keys() == saved.keys()
    for k, x in saved.items():
        np.testing.assert_array_equal(resumed[k], x, err_msg=k)

    # eval and export of the run use the merged weights: same test metrics as the run's own.
    evaluated = evaluate_checkpoint(ref, "latest")
    assert evaluated["weights"] == "params+lora"
    assert evaluated["test/accuracy"] == result.metrics["test/accuracy"]
    out = str(tmp_path / "model.jax")
    assert export_model(ref, "latest", out)["weights"] == "params+lora"
    with open(out, "rb") as f:
        exported = jax.export.deserialize(f.read())
    run = restore_run_state(ref, "latest")
    tokens = np.random.default_rng(0).integers(1, 1000, (4, 32)).astype(np.int32)
    model = nnx.merge(run.graphdef, run.state.inference_params(), run.state.model_state)
    np.testing.assert_allclose(
        exported.call(tokens), model(tokens, train=False), rtol=1e-5, atol=1e-6
    )
