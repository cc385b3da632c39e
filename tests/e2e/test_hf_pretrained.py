"""model.pretrained=hf:FOLDER in a real run: a random jaxtrain Llama written as an HF folder
(config.json + model.safetensors, as `export --format hf` writes it) starts 2 steps
of a char-level Shakespeare run (its own state creation and train step). Its step-0 params are
the folder's weights bitwise, and the loss of its first step (computed with the step-0 params)
is the loss transformers' LlamaForCausalLM gives on the same batch from the same folder. A run
whose settings do not match fails in train_and_evaluate before anything is built."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jaxtrain import data as data_lib
from jaxtrain.build import compile_steps, create_state_and_spec
from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.evaluation import data_options
from jaxtrain.models import hf_configs, hf_families, hf_weights, model_config
from jaxtrain.models.llama import Llama, LlamaConfig
from jaxtrain.parallel import sharding
from jaxtrain.train import train_and_evaluate

ARCH = dict(max_len=32, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2, d_ff=48)


def _config(folder, **model):
    c = get_config()
    c.data.name, c.data.tokenizer, c.data.seq_len = "shakespeare", "shakespeare_char", 24
    c.total_steps, c.batch_size, c.eval_batch_size = 2, 8, 16
    c.log_every, c.eval_every, c.checkpoint.every, c.eval_steps = 1, 2, 2, 1
    c.drift.num_examples = 0
    c.model = model_config("llama", **{**ARCH, **model}, pretrained=f"hf:{folder}")
    return c


def _random_llama_folder(folder, vocab_size: int, pad_id: int):
    """A Llama with params ~ N(0, 0.3) (its 0.02 init gives near-uniform logits, which would
    hide a wrong loss), written as an HF folder. Returns {param path: array}."""
    cfg = LlamaConfig(vocab_size=vocab_size, pad_id=pad_id, **ARCH)
    abstract = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))
    _, params = nnx.split(abstract, nnx.Param)
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(7)
    params = jax.tree.unflatten(
        tree, [jnp.asarray(rng.normal(0, 0.3, x.shape), x.dtype) for x in leaves]
    )
    hf_weights.write_hf_folder(
        str(folder), hf_configs.hf_config(cfg), hf_families.to_hf(params, cfg)
    )
    return hf_weights.flat_params(params)


def _hf_loss(folder, batch) -> float:
    model = transformers.LlamaForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(np.asarray(batch["inputs"]), dtype=torch.long)).logits
    losses = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), torch.as_tensor(np.asarray(batch["labels"]), dtype=torch.long),
        reduction="none",
    )  # fmt: skip
    mask = torch.as_tensor(np.asarray(batch["mask"]), dtype=torch.float32)
    return float((losses * mask).sum() / mask.sum())


@pytest.mark.slow  # ~26 CPU-s, most of it XLA compiling the Llama's init (~14 s on 2 cores)
def test_run_starts_from_the_folders_weights_and_loss(tmp_path):
    folder = tmp_path / "hf"
    c = _config(folder)
    opts = data_options(c)
    info = data_lib.get_dataset_info(opts)
    source = _random_llama_folder(folder, info.vocab_size, info.pad_id)

    # The run's own state creation and step (what train_and_evaluate builds), 2 steps on the
    # first two batches of its train iterator.
    mesh = sharding.create_mesh(c.num_devices, tuple(c.mesh.shape))
    state, spec, state_sharding = create_state_and_spec(c, mesh, info)
    step0 = hf_weights.flat_params(state.params)
    assert set(step0) == set(source)
    for path, value in step0.items():
        assert value.tobytes() == source[path].tobytes(), path
    train, _ = compile_steps(c, mesh, spec, state_sharding, info=info, state=state)
    batches = data_lib.create_train_iterator(
        dataclasses.replace(opts, seed=c.seed),
        global_batch_size=c.batch_size,
        num_classes=info.num_classes,
    )
    first = next(batches)
    data = sharding.batch_sharding(mesh)
    state, metrics = train(state, jax.device_put(first, data))
    state, _ = train(state, jax.device_put(next(batches), data))
    assert int(state.step) == 2
    np.testing.assert_allclose(float(metrics["loss"]), _hf_loss(folder, first), rtol=1e-5)
    moved = hf_weights.flat_params(state.params)
    assert any(moved[p].tobytes() != source[p].tobytes() for p in source)  # it did train


def test_a_mismatching_run_fails_before_training(tmp_path):
    folder = tmp_path / "hf"
    c = _config(folder)
    info = data_lib.get_dataset_info(data_options(c))
    _random_llama_folder(folder, info.vocab_size, info.pad_id)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="num_kv_heads=4 but hf config num_key_value_heads=2"):
        train_and_evaluate(_config(folder, num_kv_heads=4), str(run), progress=False)
    # vocab_size=0 is the tokenizer's; a tokenizer of another size is named once known
    c = _config(folder)
    c.data.name, c.data.tokenizer = "mr_polarity", "minilm"
    c.model = model_config("gpt", pretrained=f"hf:{folder}")
    with pytest.raises(ConfigError, match="holds a Llama .* set model.name=llama"):
        train_and_evaluate(c, str(run), progress=False)
    assert not (run / "checkpoints").exists()
