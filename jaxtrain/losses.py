"""Loss functions. Letters: B batch, K classes (or V vocabulary); `...` is any leading shape."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(
    logits_BxK: jax.Array, labels_B: jax.Array, *, label_smoothing: float
) -> jax.Array:
    """Per-example (or per-token) softmax cross-entropy in float32, with optional smoothing.

    Works on any leading shape: logits [..., K] and integer labels [...]. Without smoothing the
    integer-label form avoids materialising a one-hot [..., K] array (large for a vocabulary).
    """
    logits = logits_BxK.astype(jnp.float32)
    if label_smoothing == 0:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels_B)
    targets_BxK = jax.nn.one_hot(labels_B, logits.shape[-1], dtype=jnp.float32)
    targets_BxK = optax.smooth_labels(targets_BxK, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets_BxK)
