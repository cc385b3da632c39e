"""int8 weight-only quantization for export: `python -m jaxtrain export --int8`.

Kernels (ndim > 1) are stored as int8 with one float32 scale per output channel (the last axis,
as in flax's Linear [in, out] and Conv [kh, kw, in, out] kernels): symmetric, so
w ~= q * scale with q in [-127, 127] and scale = max|w| / 127 over the other axes. Biases and
norm parameters stay float32: they are tiny and sensitive. The exported function dequantizes
inside, so the serialized StableHLO carries int8 constants (about 4x smaller) and computes in
float32.

Letters: O output channels.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtrain.step import TrainState

QMAX = 127  # symmetric: -128 is never used, so negation cannot overflow


def quantize_array(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float kernel -> (int8 of the same shape, float32 scale_O broadcastable to it)."""
    w = np.asarray(w, np.float32)
    reduce_axes = tuple(range(w.ndim - 1))
    absmax = np.max(np.abs(w), axis=reduce_axes, keepdims=True)
    # An all-zero channel would divide by zero; any scale reproduces it exactly.
    scale = np.where(absmax > 0, absmax / QMAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale


def _should_quantize(w: Any) -> bool:
    return np.ndim(w) > 1 and np.issubdtype(np.asarray(w).dtype, np.floating)


def quantize_params(params: Any) -> tuple[Any, Any]:
    """Returns (tree with int8 kernels and untouched float leaves, tree of scales).

    Both trees have the structure of `params` (an nnx.State or any pytree); leaves that are not
    quantized get the scale 1.0 (float32 scalar) and keep their dtype.
    """
    params = jax.device_get(params)
    pairs = jax.tree.map(
        lambda w: quantize_array(w) if _should_quantize(w) else (np.asarray(w), np.float32(1)),
        params,
    )
    is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
    values = jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair)
    scales = jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair)
    return values, scales


def dequantize(values: Any, scales: Any) -> Any:
    """int8 leaves -> float32 (q * scale); other leaves unchanged. Works under jit."""
    return jax.tree.map(
        lambda q, s: jnp.asarray(q).astype(jnp.float32) * s if q.dtype == jnp.int8 else q,
        values,
        scales,
    )


def quantization_error_bound(scales: Any) -> Any:
    """Per-element bound on |w - dequantize(quantize(w))|: half a quantization step."""
    return jax.tree.map(lambda s: s / 2, scales)


def param_bytes(tree: Any) -> int:
    """Bytes of all array leaves."""
    return sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(tree))


def quantized_inference_fn(graphdef: nnx.GraphDef, state: TrainState, mean: float, std: float):
    """Like export.inference_fn (uint8 images -> logits, eval mode), with int8 kernels baked in.

    The int8 values and float32 scales are closed over, so `jax.export` serializes them as
    constants; dequantization runs inside the exported function.
    """
    values, scales = quantize_params(state.inference_params())
    model_state = jax.device_get(state.model_state)

    def predict(images_BxHxWxC: jax.Array) -> jax.Array:
        x = (images_BxHxWxC.astype(jnp.float32) / 255.0 - mean) / std
        params = dequantize(values, scales)
        model = nnx.merge(graphdef, params, model_state, copy=True)
        return model(x, train=False, dropout_key=jax.random.key(0))

    return predict
