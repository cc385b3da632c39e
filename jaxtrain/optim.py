"""Optimizers and learning-rate schedules, built from optax with explicit dispatch."""

from collections.abc import Sequence

import jax
import optax

from jaxtrain.errors import ConfigError

# Muon is for hidden weight matrices: params whose path names one of these (embeddings, the
# output head) stay with AdamW even when they are 2-D.
EMBEDDING_AND_HEAD_NAMES = ("embed", "pos_embed", "embedding", "head", "lm_head")
# Muon's update is rescaled to this RMS (Liu et al. 2025, "Muon is Scalable for LLM Training"),
# about AdamW's, so one learning rate (and schedule) serves both halves of the optimizer.
MUON_CONSISTENT_RMS = 0.2


def get_schedule(
    name: str,
    *,
    learning_rate: float,
    total_steps: int,
    warmup_steps: int,
    end_lr_factor: float,
    decay_rate: float,
    boundaries: Sequence[float],
    decay_steps: int,
    restart_period: int,
    restart_mult: float,
) -> optax.Schedule:
    """Returns the learning rate as a function of the optimizer step.

    A linear warmup from 0 over `warmup_steps` precedes every schedule; the schedule proper then
    runs over the remaining `total_steps - warmup_steps` steps.
    """
    steps = total_steps - warmup_steps
    end_lr = learning_rate * end_lr_factor
    if name == "constant":
        main = optax.constant_schedule(learning_rate)
    elif name == "piecewise":
        # Boundaries are fractions of the whole run; the main schedule starts after warmup.
        scales = {max(1, int(b * total_steps) - warmup_steps): decay_rate for b in boundaries}
        main = optax.piecewise_constant_schedule(learning_rate, scales)
    elif name == "exponential":
        main = optax.exponential_decay(learning_rate, decay_steps, decay_rate)
    elif name in ("cosine", "warmup_cosine"):
        main = optax.cosine_decay_schedule(learning_rate, steps, alpha=end_lr_factor)
    elif name == "sgdr":
        main = _sgdr(learning_rate, end_lr, steps, restart_period, restart_mult)
    else:
        raise ValueError(
            f"unknown schedule {name!r}; valid: constant, piecewise, exponential, cosine, "
            "warmup_cosine, sgdr"
        )
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def _sgdr(lr: float, end_lr: float, steps: int, period: int, mult: float) -> optax.Schedule:
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017): cycles grow by `mult`."""
    cycles, boundaries, start, length = [], [], 0, float(period)
    while start < steps:
        n = max(1, int(round(length)))
        cycles.append(optax.cosine_decay_schedule(lr, n, alpha=end_lr / lr))
        start += n
        boundaries.append(start)
        length *= mult
    return optax.join_schedules(cycles, boundaries[:-1])


def decay_mask(params: optax.Params) -> optax.Params:
    """True for weights that get weight decay: kernels and embeddings, not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _path_names(path: tuple) -> set[str]:
    return {str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path}


def muon_labels(params: optax.Params) -> optax.Params:
    """Labels 2-D hidden weight matrices "muon" and the rest "adamw": embeddings and the output
    head (by name, EMBEDDING_AND_HEAD_NAMES), biases, norm scales, and kernels with more than 2
    dimensions (convolutions; GPT's fused [D, 3, H, K] q/k/v and [H, K, D] output projection).

    Raises ConfigError when nothing is left for Muon (it would silently be AdamW)."""

    def label(path: tuple, p) -> str:
        hidden = p.ndim == 2 and not _path_names(path) & set(EMBEDDING_AND_HEAD_NAMES)
        return "muon" if hidden else "adamw"

    labels = jax.tree_util.tree_map_with_path(label, params)
    if "muon" not in jax.tree.leaves(labels):
        raise ConfigError(
            "config.optimizer.name: muon acts on 2-D hidden weight matrices and this model has "
            "none (all its weights are embeddings, the head, or have more than 2 dimensions); "
            "use adamw"
        )
    return labels


def _muon(learning_rate, *, weight_decay: float, b1: float, b2: float, eps: float):
    """optax's Muon on the hidden matrices, AdamW (decay masked as for adamw) on the rest."""
    return optax.partition(
        {
            # Given only the hidden matrices, optax's muon applies Muon to every leaf it sees
            # (its own 2-D rule); Nesterov momentum 0.95 and 5 Newton-Schulz steps (defaults).
            "muon": optax.contrib.muon(
                learning_rate, weight_decay=weight_decay, consistent_rms=MUON_CONSISTENT_RMS
            ),
            "adamw": optax.adamw(
                learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask
            ),
        },
        muon_labels,
    )


def get_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float,
    clip_norm: float,
    momentum: float,
    b1: float,
    b2: float,
    eps: float,
) -> optax.GradientTransformation:
    """Returns clip -> (weight decay) -> optimizer as one optax chain.

    adamw and muon decay decoupled from the update (Loshchilov & Hutter); for every other
    optimizer weight decay is L2 added to the gradient before the update. muon: Muon
    (Jordan 2024; optax.contrib.muon) on 2-D hidden weight matrices, AdamW on every other param
    (see muon_labels), one learning rate for both.
    """
    if name == "sgd":
        base = optax.sgd(learning_rate)
    elif name == "momentum":
        base = optax.sgd(learning_rate, momentum=momentum)
    elif name == "nesterov":
        base = optax.sgd(learning_rate, momentum=momentum, nesterov=True)
    elif name == "adam":
        base = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        base = optax.adamw(
            learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask
        )
    elif name == "adagrad":
        base = optax.adagrad(learning_rate, eps=eps)
    elif name == "rmsprop":
        base = optax.rmsprop(learning_rate, eps=eps, momentum=momentum)
    elif name == "muon":
        base = _muon(learning_rate, weight_decay=weight_decay, b1=b1, b2=b2, eps=eps)
    else:
        raise ValueError(
            f"unknown optimizer {name!r}; valid: sgd, momentum, nesterov, adam, adamw, adagrad, "
            "rmsprop, muon"
        )
    parts = []
    if clip_norm > 0:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if weight_decay > 0 and name not in ("adamw", "muon"):
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    return optax.chain(*parts, base)
