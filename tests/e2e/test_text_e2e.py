"""End-to-end text runs on the real prepared datasets: GPT on Shakespeare (train, resume,
sample), BERT on MR, the tokenizer CLI, and bad input that must fail before compiling."""

import json
import os

import pytest

from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError, ConfigError, DataError
from jaxtrain.models import model_config
from jaxtrain.tools.sample import sample_from_run
from jaxtrain.train import train_and_evaluate
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))


def _gpt_config(**overrides):
    c = get_config()
    c.data.data_dir, c.data.name, c.data.tokenizer = DATA_DIR, "shakespeare", "shakespeare_char"
    c.data.seq_len = 32
    c.total_steps, c.log_every, c.eval_every, c.checkpoint.every = 6, 3, 6, 3
    # Evaluations read the first 2 batches of 256 windows per split (not all of Shakespeare).
    c.batch_size, c.eval_batch_size, c.eval_steps = 16, 256, 2
    c.model = model_config("gpt", max_len=64, num_layers=1, d_model=32, num_heads=2, d_ff=64)
    c.checkpoint.best_metric, c.checkpoint.best_mode = "validation/loss", "min"
    # Constant lr: a shorter run then follows the same schedule (resume test below).
    c.optimizer.schedule, c.optimizer.learning_rate = "constant", 1e-2
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def _bert_config(**overrides):
    c = get_config()
    c.data.data_dir, c.data.name, c.data.tokenizer = DATA_DIR, "mr_polarity", "minilm"
    c.data.seq_len = 32
    c.total_steps, c.log_every, c.eval_every = 4, 2, 4
    c.batch_size, c.eval_batch_size = 16, 512
    c.model = model_config(
        "bert", num_classes=2, max_len=64, num_layers=1, d_model=32, num_heads=2, d_ff=64
    )
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def test_gpt_on_shakespeare_trains_resumes_and_samples(tmp_path):
    full = train_and_evaluate(_gpt_config(), str(tmp_path / "a"), progress=False)
    records = read_metrics(tmp_path / "a")
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses[-1] < losses[0]  # learning something
    assert full.metrics["validation/loss"] < 4.0  # below uniform over ~85 characters (4.44)
    assert full.metrics["test/perplexity"] > 1 and "perf/tokens_per_sec" in records[0]
    # Resume from the step-3 checkpoint reproduces the uninterrupted run exactly.
    train_and_evaluate(_gpt_config(total_steps=3), str(tmp_path / "b"), progress=False)
    resumed = train_and_evaluate(_gpt_config(), str(tmp_path / "b"), progress=False)
    assert resumed.metrics["test/loss"] == full.metrics["test/loss"]

    text = sample_from_run(
        str(tmp_path / "a"), "ROMEO:", max_new_tokens=20, temperature=0.0, top_k=0, seed=0
    )
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 20
    again = sample_from_run(
        str(tmp_path / "a"), "ROMEO:", max_new_tokens=20, temperature=0.0, top_k=0, seed=1
    )
    assert again == text  # greedy ignores the seed
    with pytest.raises(DataError, match="max_len"):
        sample_from_run(
            str(tmp_path / "a"), "ROMEO:", max_new_tokens=80, temperature=0.0, top_k=0, seed=0
        )


def test_bert_on_mr_trains_and_reports_classification_metrics(tmp_path):
    result = train_and_evaluate(_bert_config(), str(tmp_path / "m"), progress=False)
    assert 0.0 <= result.metrics["test/accuracy"] <= 1.0 and "test/f1_macro" in result.metrics
    confusion = json.loads((tmp_path / "m" / "eval" / "confusion_test_step4.json").read_text())
    assert confusion["classes"] == ["rotten", "fresh"]
    assert sum(map(sum, confusion["rows_true_cols_pred"])) == 1282  # every test example once
    with pytest.raises(DataError, match="gpt"):
        sample_from_run(str(tmp_path / "m"), "x", max_new_tokens=1, temperature=0, top_k=0, seed=0)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"model.vocab_size": 100}, ConfigError, "model.vocab_size"),
        ({"data.seq_len": 128}, ConfigError, "data.seq_len"),
        ({"model.name": "cnn"}, ConfigError, "model.name"),
        ({"data.tokenizer": "/nonexistent/tokenizer.json"}, DataError, "tokenizer"),
        ({"data.tokenizer": ""}, DataError, "tokenizer"),
    ],
)
def test_text_bad_input_fails_before_compiling(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        train_and_evaluate(_bert_config(**overrides), str(tmp_path / "x"), progress=False)


def test_pretrained_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    c = _bert_config(**{"model.pretrained": "minilm"})  # 1 x 32 is not MiniLM's 6 x 384
    with pytest.raises(CheckpointError, match="num_layers|d_model"):
        train_and_evaluate(c, str(tmp_path / "p"), progress=False)


def test_tokenizer_cli_trains_a_bpe_tokenizer(tmp_path, run_cli):
    out = tmp_path / "bpe.json"
    cmd = ["tokenizer", "train", "--kind", "bpe"]
    done = run_cli(*cmd, "--corpus", "mr_polarity", "--vocab_size", "500", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["vocab_size"] == 500 and out.exists()
    bad = run_cli(*cmd[:2], "--kind", "nope", "--corpus", "mr_polarity", "--out", str(out))
    assert bad.returncode == 2 and "bpe" in bad.stderr
