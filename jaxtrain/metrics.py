"""Classification metrics: computed on device as sums and counts, finalized on the host.

Sums and counts (rather than means) make averaging over steps, devices and padded eval batches
exact: every mean is one division at the end, weighted by the real number of examples.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.errors import DataError


def confusion_matrix(
    labels_B: jax.Array, preds_B: jax.Array, mask_B: jax.Array, num_classes: int
) -> jax.Array:
    """Weighted counts [true, predicted] as float32 (exact for counts below 2**24)."""
    onehot_true = jax.nn.one_hot(labels_B, num_classes) * mask_B[:, None]
    onehot_pred = jax.nn.one_hot(preds_B, num_classes)
    return onehot_true.T @ onehot_pred


def accumulate(total: dict | None, new: dict) -> dict:
    """Adds two dicts of device arrays; stays on device (no host sync)."""
    if total is None:
        return new
    return jax.tree.map(jnp.add, total, new)


def summarize_confusion(confusion_KxK: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 from a confusion matrix [true, predicted].

    A class that is never predicted (or never present) has precision (recall) 0, so it pulls the
    macro average down instead of being silently dropped.
    """
    cm = np.asarray(confusion_KxK, dtype=np.float64)
    tp, precision, recall, f1, _ = _precision_recall_f1(cm)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1.0)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
    }


def check_finite(loss: float, first_bad_step: int, step: int) -> None:
    """Stops the run loudly; `first_bad_step` is tracked on device so it names the exact step."""
    if first_bad_step >= 0:
        raise FloatingPointError(
            f"non-finite train loss at step {first_bad_step} (checked at step {step}); "
            "lower optimizer.learning_rate or set optimizer.clip_norm"
        )
    if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite train loss at or before step {step}")


def balanced_class_weights(counts_K: np.ndarray) -> tuple[float, ...]:
    """n / (K * n_k): each class contributes equally to the loss (sklearn's "balanced")."""
    counts = np.asarray(counts_K, dtype=np.float64)
    if (counts <= 0).any():
        missing = [int(k) for k in np.flatnonzero(counts <= 0)]
        raise DataError(f"balanced class weights: classes {missing} have no train examples")
    return tuple(float(w) for w in counts.sum() / (len(counts) * counts))


def per_class_metrics(confusion_KxK: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Precision, recall, F1 and support for every class, keyed by class name."""
    _, precision, recall, f1, actual = _precision_recall_f1(np.asarray(confusion_KxK, np.float64))
    names = class_names or tuple(str(k) for k in range(len(actual)))
    return {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(actual[k]),
        }
        for k, name in enumerate(names)
    }


def _precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class (tp, precision, recall, f1, support); 0 where undefined."""
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return tp, precision, recall, f1, actual
