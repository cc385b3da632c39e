"""Export a trained model: `python -m jaxtrain export [--format jax_export|hf]`.

--format jax_export (the default) writes the model's inference function with jax.export. The file
holds the serialized StableHLO of `uint8 images [b, H, W, C] -> logits [b, K]` with the
params baked in as constants and a symbolic batch size `b`. A run that kept an EMA of its weights
(config.optimizer.ema_decay > 0) exports the average, as its evaluations used. Loading it needs
only jax:

    exported = jax.export.deserialize(open(path, "rb").read())
    logits = exported.call(images_uint8)

--format hf writes a folder that HuggingFace transformers loads (config.json, model.safetensors,
and the run's tokenizer.json when it has one): gpt -> GPT2LMHeadModel (learned positions only),
llama -> LlamaForCausalLM, bert -> BertModel (the classifier's encoder; its head goes to
classifier_head.safetensors). The conversion is hf_families.to_hf, a pure function of the params.
"""

import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtrain import data as data_lib
from jaxtrain.build import resolve_data_dir
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import hf_configs, hf_families, hf_weights
from jaxtrain.models.registry import settings_from_config
from jaxtrain.run_config import load_run_config
from jaxtrain.step import TrainState
from jaxtrain.tools import quantize
from jaxtrain.tools.evaluate import restore_run_state


def inference_fn(graphdef: nnx.GraphDef, state: TrainState, mean: float, std: float):
    """uint8 images -> logits, in eval mode (running batch stats, no dropout), with the weights
    evaluation uses (the EMA average when the state keeps one)."""
    params, model_state = jax.device_get((state.inference_params(), state.model_state))

    def predict(images_BxHxWxC: jax.Array) -> jax.Array:
        x = (images_BxHxWxC.astype(jnp.float32) / 255.0 - mean) / std
        model = nnx.merge(graphdef, params, model_state, copy=True)
        return model(x, train=False, dropout_key=jax.random.key(0))

    return predict


def token_inference_fn(graphdef: nnx.GraphDef, state: TrainState):
    """int32 token ids (right-padded) -> logits, in eval mode."""
    params, model_state = jax.device_get((state.inference_params(), state.model_state))

    def predict(tokens_BxL: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, params, model_state, copy=True)
        return model(tokens_BxL, train=False, dropout_key=jax.random.key(0))

    return predict


FORMATS = ("jax_export", "hf")


def check_format(fmt: str, *, int8: bool) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format={fmt!r}: use one of {', '.join(FORMATS)}")
    if int8 and fmt != "jax_export":
        raise ConfigError("--int8 is for --format jax_export (image classifiers) only")


def export_model(
    workdir: str, which: str, out: str, *, int8: bool = False, fmt: str = "jax_export"
) -> dict:
    """Restores checkpoint `which` of a run and writes it in format `fmt` (FORMATS): the
    serialized inference function (jax_export), or an HF folder at `out` (hf, export_hf).

    Images: uint8 [b, H, W, C] -> logits (normalisation baked in). Text: int32 token ids
    [b, seq_len] from the run's tokenizer -> logits [b, K] or [b, seq_len, V].
    int8=True stores every kernel as int8 with per-output-channel scales (dequantized inside
    the exported function): ~4x smaller; image classifiers only.
    """
    check_format(fmt, int8=int8)
    if fmt == "hf":
        return export_hf(workdir, which, out)
    run = restore_run_state(workdir, which)
    info, step = run.info, run.step
    dims = ", ".join(str(d) for d in info.input_shape)
    shape = jax.export.symbolic_shape(f"b, {dims}")
    _check_one_model(run, workdir)
    if info.task == data_lib.IMAGE_CLASSIFICATION:
        mean, std = data_lib.pixel_stats(
            run.config.data.name, resolve_data_dir(run.config.data.data_dir)
        )
        make = quantize.quantized_inference_fn if int8 else inference_fn
        predict = make(run.graphdef, run.state, mean, std)
        dtype = jnp.uint8
    elif int8:
        raise CheckpointError("--int8 export supports image classifiers only")
    else:
        predict = token_inference_fn(run.graphdef, run.state)
        dtype = jnp.int32
    exported = jax.export.export(jax.jit(predict))(jax.ShapeDtypeStruct(shape, dtype))
    try:
        with open(out, "wb") as f:
            f.write(exported.serialize())
    except OSError as e:
        raise CheckpointError(f"--out {out}: cannot write the exported model ({e})") from e
    summary = {
        "out": os.path.abspath(out),
        "step": step,
        "bytes": os.path.getsize(out),
        "input": f"{jnp.dtype(dtype).name}{list(shape)}",
        "int8": int8,
        # "ema", "params", or "params+lora" (adapters merged: the file holds plain weights)
        "weights": run.state.weights,
        "classes": list(info.class_names),
    }
    return summary


def _check_one_model(run, workdir: str) -> None:
    if run.config.num_seeds > 1:
        raise CheckpointError(
            f"{workdir} holds {run.config.num_seeds} vmapped members; export trains one model: "
            "re-run with num_seeds=1 and the chosen seed"
        )


def _check_hf_family(name: str) -> None:
    if name not in hf_families.FAMILIES:
        raise CheckpointError(
            f"--format hf: the run trained a {name!r} (config.model.name); HF export exists for "
            f"{', '.join(hf_families.FAMILIES)}. Image models export with --format jax_export"
        )


def _write_tokenizer(config, out_dir: str) -> str | None:
    """The run's tokenizer as out_dir/tokenizer.json; None when the run has none."""
    spec = config.data.tokenizer
    if not spec:
        return None
    tok = data_lib.load_tokenizer(spec, resolve_data_dir(config.data.data_dir))
    path = os.path.join(out_dir, "tokenizer.json")
    try:
        tok.save(path)
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types
        raise CheckpointError(f"--out {out_dir}: cannot write tokenizer.json ({e})") from e
    return path


def export_hf(workdir: str, which: str, out_dir: str) -> dict:
    """Restores checkpoint `which` of a gpt, llama or bert run and writes the HF folder out_dir:
    config.json, model.safetensors (float32), tokenizer.json (the run's, when it has one) and,
    for bert, classifier_head.safetensors (classifier.weight [K, D], classifier.bias: logits =
    pool(last_hidden_state) @ weight.T + bias, pooling as config.json's jaxtrain_pooling)."""
    saved = load_run_config(workdir).model  # checked before the (slow) restore
    _check_hf_family(saved.name)
    hf_configs.hf_config(settings_from_config(saved))  # refuses a rotary GPT
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"--out {out_dir}: cannot write the HF model ({e})") from e
    run = restore_run_state(workdir, which)
    _check_one_model(run, workdir)
    settings = settings_from_config(run.config.model, run.info)
    params = jax.device_get(run.state.inference_params())
    # inference_params(): the EMA when kept, and LoRA adapters merged into their kernels.
    tensors = hf_families.to_hf(params, settings)
    extra = {}
    if run.config.model.name == "bert":
        extra["classifier_head.safetensors"] = hf_families.bert_head_to_hf(params)
    config = hf_configs.hf_config(settings)
    paths = hf_weights.write_hf_folder(out_dir, config, tensors, extra)
    tokenizer = _write_tokenizer(run.config, out_dir)
    return {
        "out": os.path.abspath(out_dir),
        "format": "hf",
        "step": run.step,
        "architecture": config["architectures"][0],
        "tensors": len(tensors),
        "bytes": sum(os.path.getsize(p) for p in paths.values()),
        "weights": run.state.weights,  # "ema" or "params"
        "tokenizer": tokenizer,
    }
