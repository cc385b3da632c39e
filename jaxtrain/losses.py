"""Loss functions. Letters: B batch, K classes."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(
    logits_BxK: jax.Array, labels_B: jax.Array, *, label_smoothing: float
) -> jax.Array:
    """Per-example softmax cross-entropy in float32, with optional label smoothing."""
    num_classes = logits_BxK.shape[-1]
    targets_BxK = jax.nn.one_hot(labels_B, num_classes, dtype=jnp.float32)
    if label_smoothing > 0:
        targets_BxK = optax.smooth_labels(targets_BxK, label_smoothing)
    return optax.softmax_cross_entropy(logits_BxK.astype(jnp.float32), targets_BxK)
