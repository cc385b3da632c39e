"""Export a trained model's inference function with jax.export: `python -m jaxtrain export`.

The file holds the serialized StableHLO of `uint8 images [b, H, W, C] -> logits [b, K]` with the
params baked in as constants and a symbolic batch size `b`. A run that kept an EMA of its weights
(config.optimizer.ema_decay > 0) exports the average, as its evaluations used. Loading it needs
only jax:

    exported = jax.export.deserialize(open(path, "rb").read())
    logits = exported.call(images_uint8)
"""

import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtrain import data as data_lib
from jaxtrain.build import resolve_data_dir
from jaxtrain.errors import CheckpointError
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


def export_model(workdir: str, which: str, out: str, *, int8: bool = False) -> dict:
    """Restores checkpoint `which` of a run and writes the serialized inference function.

    Images: uint8 [b, H, W, C] -> logits (normalisation baked in). Text: int32 token ids
    [b, seq_len] from the run's tokenizer -> logits [b, K] or [b, seq_len, V].
    int8=True stores every kernel as int8 with per-output-channel scales (dequantized inside
    the exported function): ~4x smaller; image classifiers only.
    """
    run = restore_run_state(workdir, which)
    info, step = run.info, run.step
    dims = ", ".join(str(d) for d in info.input_shape)
    shape = jax.export.symbolic_shape(f"b, {dims}")
    if run.config.num_seeds > 1:
        raise CheckpointError(
            f"{workdir} holds {run.config.num_seeds} vmapped members; export trains one model: "
            "re-run with num_seeds=1 and the chosen seed"
        )
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
