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


def distillation_loss(
    student_logits_BxK: jax.Array, teacher_logits_BxK: jax.Array, *, temperature: float
) -> jax.Array:
    """Per-example T^2 * KL(softmax(teacher / T) || softmax(student / T)) in float32 (Hinton et
    al. 2015); the T^2 keeps its gradient on the scale of the label loss. Any leading shape."""
    t = temperature
    log_p_student = jax.nn.log_softmax(student_logits_BxK.astype(jnp.float32) / t)
    log_p_teacher = jax.nn.log_softmax(teacher_logits_BxK.astype(jnp.float32) / t)
    kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return t * t * kl
