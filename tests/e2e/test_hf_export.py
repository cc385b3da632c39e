"""`export --format hf` of real runs: a few steps of a char-level GPT / Llama on Shakespeare,
exported through the command line, loads in transformers and gives the run's own logits; the
run's tokenizer comes along."""

import json

import jax
import numpy as np
import pytest
import tokenizers
import torch
import transformers
from flax import nnx

from jaxtrain.config import get_config
from jaxtrain.models import model_config
from jaxtrain.tools.evaluate import restore_run_state
from jaxtrain.train import train_and_evaluate


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_exported_run_loads_in_transformers_with_its_logits(tmp_path, run_cli, model):
    run = tmp_path / "run"
    c = get_config()
    c.data.name, c.data.tokenizer, c.data.seq_len = "shakespeare", "shakespeare_char", 32
    c.total_steps, c.batch_size, c.eval_batch_size = 3, 8, 64
    c.log_every, c.eval_every, c.checkpoint.every, c.eval_steps = 1, 3, 3, 1
    c.optimizer.warmup_steps = 0
    c.model = model_config(model, max_len=40, num_layers=2, d_model=32, num_heads=4, d_ff=64)
    if model == "llama":
        c.model.num_kv_heads = 2
    train_and_evaluate(c, str(run), progress=False)

    out = tmp_path / "hf"
    done = run_cli("export", "--format", "hf", "--workdir", str(run), "--out", str(out),
                   timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"
    ]  # fmt: skip

    tok = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = np.asarray([tok.encode("ROMEO: but soft, what light").ids[:24]], np.int32)
    saved = restore_run_state(str(run), "latest")
    ours = np.asarray(
        nnx.merge(saved.graphdef, saved.state.inference_params())(
            ids, train=False, dropout_key=jax.random.key(0)
        )
    )
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    config = json.loads((out / "config.json").read_text())
    assert type(hf_model).__name__ == config["architectures"][0]
    assert config["vocab_size"] == tok.get_vocab_size()
    with torch.no_grad():
        theirs = hf_model(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_exported_bert_run_rebuilds_its_classifier_logits(tmp_path):
    """A 3-step BERT classifier on MR: the exported BertModel's last hidden state, pooled as
    config.json says and put through classifier_head.safetensors, gives the run's logits."""
    from safetensors.numpy import load_file

    from jaxtrain.models.bert import mean_pool
    from jaxtrain.tools.export import export_model

    run = tmp_path / "run"
    c = get_config()
    c.data.name, c.data.tokenizer, c.data.seq_len = "mr_polarity", "minilm", 24
    c.total_steps, c.batch_size, c.eval_batch_size = 3, 8, 64
    c.log_every, c.eval_every, c.checkpoint.every, c.eval_steps = 1, 3, 3, 1
    c.optimizer.warmup_steps = 0
    c.model = model_config("bert", max_len=24, num_layers=2, d_model=32, num_heads=4, d_ff=64,
                           num_classes=2, pooling="mean")  # fmt: skip
    train_and_evaluate(c, str(run), progress=False)
    out = tmp_path / "hf"
    summary = export_model(str(run), "latest", str(out), fmt="hf")
    assert summary["architecture"] == "BertModel" and summary["tokenizer"]

    tok = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    config = json.loads((out / "config.json").read_text())
    ids = np.full((2, 16), config["pad_token_id"], np.int32)
    for row, text in enumerate(["a gripping , funny film", "dull and far too long"]):
        enc = tok.encode(text).ids[:16]
        ids[row, : len(enc)] = enc
    saved = restore_run_state(str(run), "latest")
    model = nnx.merge(saved.graphdef, saved.state.inference_params())
    ours = np.asarray(model(ids, train=False))

    hf_model = transformers.AutoModel.from_pretrained(str(out), add_pooling_layer=False)
    mask = ids != config["pad_token_id"]
    with torch.no_grad():
        last = hf_model(
            torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
        ).last_hidden_state
    head = load_file(str(out / "classifier_head.safetensors"))
    assert config["jaxtrain_pooling"] == "mean"
    theirs = np.asarray(mean_pool(last.numpy(), mask)) @ head["classifier.weight"].T
    np.testing.assert_allclose(theirs + head["classifier.bias"], ours, rtol=1e-5, atol=1e-5)
