"""Optimizers and learning-rate schedules, built from optax with explicit dispatch."""

from collections.abc import Sequence

import jax
import optax


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

    adamw decays decoupled from the adaptive update (Loshchilov & Hutter); for every other
    optimizer weight decay is L2 added to the gradient before the update.
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
    else:
        raise ValueError(
            f"unknown optimizer {name!r}; valid: sgd, momentum, nesterov, adam, adamw, adagrad, "
            "rmsprop"
        )
    parts = []
    if clip_norm > 0:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if weight_decay > 0 and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    return optax.chain(*parts, base)
