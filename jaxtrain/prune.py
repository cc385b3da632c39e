"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune") as an optax wrapper.

Each pruned weight array gets a boolean mask, kept in the optimizer state
(`TrainState.opt_state.masks`, mirroring params, so it is sharded like them and checkpointed).
The masks are recomputed every `every` steps between `start_step` and `end_step`: the smallest
weights by magnitude are masked until the array reaches the sparsity of the cubic schedule

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))^3,   s_i = 0, t0 = start_step,
    n dt = end_step - start_step,

where t counts finished optimizer updates (the `step` of metrics.jsonl). Every array is pruned to
the same s_t (layer-wise, as in the paper), and a pruned weight stays pruned.

Exactness: incoming gradients are masked (so clipping and momentum ignore pruned weights) and the
final update of a pruned weight is -w, so `w + update` is exactly 0 whatever the optimizer's
momentum or weight decay would have added. With pruning off nothing here is used.

Which params: every param with >= 2 dimensions whose name does not end in "bias" or "scale":
Dense/Conv kernels, GPT's qkv/out/up/down matrices and head, embedding tables. Biases (also
GPT's 3-D qkv_bias) and norm scales are never pruned.
Pattern "2:4": in every group of 4 consecutive weights along the second-to-last axis (the input
channels of Dense [in, out] and Conv [h, w, in, out] kernels) round(4 s_t) are pruned, so the
final mask keeps 2 of every 4; arrays whose second-to-last axis is not a multiple of 4 stay dense.
"""

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtrain.errors import ConfigError

PATTERNS = ("unstructured", "2:4")
GROUP = 4  # M of the N:M pattern "2:4"


@dataclasses.dataclass(frozen=True)
class PruneSettings:
    """config.prune, with end_step resolved (-1: total_steps)."""

    target_sparsity: float  # s_f; 0 turns pruning off
    start_step: int
    end_step: int
    every: int
    pattern: str
    total_steps: int

    def __post_init__(self):
        s = self.target_sparsity
        _check(0.0 <= s < 1.0, "target_sparsity", f"must be in [0, 1) (0: off), got {s}")
        _check(self.pattern in PATTERNS, "pattern", f"{self.pattern!r} is not one of {PATTERNS}")
        if not self.enabled:
            return
        _check(self.every >= 1, "every", f"must be >= 1, got {self.every}")
        _check(self.start_step >= 0, "start_step", f"must be >= 0, got {self.start_step}")
        _check(
            self.end_step > self.start_step,
            "end_step",
            f"{self.end_step} must be after prune.start_step={self.start_step}",
        )
        _check(
            self.end_step <= self.total_steps,
            "end_step",
            f"{self.end_step} is beyond total_steps={self.total_steps}; -1 means total_steps",
        )
        _check(
            self.pattern != "2:4" or s == 0.5,
            "target_sparsity",
            f"pattern 2:4 keeps 2 of every 4 weights: set it to 0.5, got {s}",
        )

    @property
    def enabled(self) -> bool:
        return self.target_sparsity > 0


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.prune.{field}: {message}")


def prune_settings(c: ml_collections.ConfigDict) -> PruneSettings:
    """config.prune unpacked (and validated); raises ConfigError naming the field."""
    p = c.prune
    end = c.total_steps if p.end_step == -1 else p.end_step
    return PruneSettings(
        target_sparsity=float(p.target_sparsity),
        start_step=p.start_step,
        end_step=end,
        every=p.every,
        pattern=p.pattern,
        total_steps=c.total_steps,
    )


def sparsity_at(t: jax.Array, s: PruneSettings) -> jax.Array:
    """The cubic schedule's sparsity after t updates (0 before start_step, s_f after end_step)."""
    frac = jnp.clip((t - s.start_step) / (s.end_step - s.start_step), 0.0, 1.0)
    return s.target_sparsity * (1.0 - (1.0 - frac.astype(jnp.float32)) ** 3)


def is_mask_update(t: jax.Array, s: PruneSettings) -> jax.Array:
    """True after the updates t = start + every, start + 2 every, ..., and t = end_step."""
    inside = (t > s.start_step) & (t <= s.end_step)
    return inside & (((t - s.start_step) % s.every == 0) | (t == s.end_step))


def _name(path: tuple) -> str:
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    names = [n for n in names if n != "value"]  # nnx Variables add a trailing .value
    return names[-1] if names else ""


def is_prunable(path: tuple, shape: tuple[int, ...], pattern: str) -> bool:
    """Weight matrices and kernels (see the module docstring); for 2:4 also divisible groups."""
    name = _name(path)
    if len(shape) < 2 or name.endswith(("bias", "scale")):
        return False
    return pattern == "unstructured" or shape[-2] % GROUP == 0


def _unstructured_mask(score: jax.Array, sparsity: jax.Array) -> jax.Array:
    """Keeps all but the round(s * n) lowest scores (ties: the earlier index is pruned)."""
    n = score.size
    k = jnp.round(sparsity * n).astype(jnp.int32)
    order = jnp.argsort(score.ravel(), stable=True)
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return (rank >= k).reshape(score.shape)


def _n_of_m_mask(score: jax.Array, sparsity: jax.Array) -> jax.Array:
    """In each group of GROUP along axis -2, prunes the round(GROUP * s) lowest scores."""
    *lead, cin, cout = score.shape
    grouped = score.reshape(*lead, cin // GROUP, GROUP, cout)
    k = jnp.round(sparsity * GROUP).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(grouped, axis=-2, stable=True), axis=-2, stable=True)
    return (rank >= k).reshape(score.shape)


def _new_masks(candidate, masks, sparsity, pattern: str):
    """Masks at `sparsity` from the magnitudes of `candidate` (the params after this update).

    Already pruned weights score -1, below any magnitude, so they stay pruned."""
    make = _unstructured_mask if pattern == "unstructured" else _n_of_m_mask

    def one(path, w, m):
        if not is_prunable(path, w.shape, pattern):
            return m
        return make(jnp.where(m, jnp.abs(w), -1.0), sparsity)

    return jax.tree_util.tree_map_with_path(one, candidate, masks)


class PruneState(NamedTuple):
    count: jax.Array  # optimizer updates done: TrainState.step, as both start with the state
    masks: Any  # bool, shaped like params; all True for params that are never pruned
    inner: optax.OptState


def with_pruning(
    inner: optax.GradientTransformation, s: PruneSettings
) -> optax.GradientTransformation:
    """`inner` with gradual magnitude pruning: masked gradients in, masked updates out."""

    def init(params):
        masks = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.bool_), params)
        return PruneState(jnp.zeros((), jnp.int32), masks, inner.init(params))

    def update(grads, state: PruneState, params=None):
        grads = jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros_like(g)), grads, state.masks)
        updates, inner_state = inner.update(grads, state.inner, params)
        t = state.count + 1
        candidate = jax.tree.map(jnp.add, params, updates)
        masks = jax.lax.cond(
            is_mask_update(t, s),
            lambda: _new_masks(candidate, state.masks, sparsity_at(t, s), s.pattern),
            lambda: state.masks,
        )
        # A pruned weight's update is -w: w + (-w) is exactly 0.
        updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)
        return updates, PruneState(t, masks, inner_state)

    return optax.GradientTransformation(init, update)


def sparsity_of(params: Any, pattern: str, *, leading_axes: int = 0) -> float:
    """Fraction of exact zeros over the prunable arrays (host numbers, for logs and reports).

    leading_axes: axes in front of each param's own shape (1 for num_seeds members)."""
    zeros = total = 0
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
        if is_prunable(path, tuple(w.shape[leading_axes:]), pattern):
            w = np.asarray(w)
            zeros += int(np.sum(w == 0))
            total += w.size
    return zeros / total if total else math.nan


def final_metrics(c: ml_collections.ConfigDict, params: Any) -> dict[str, float]:
    """{"prune/sparsity": measured fraction of zeros in the pruned arrays}; {} when off."""
    if c.prune.target_sparsity == 0:
        return {}
    lead = int(c.num_seeds > 1)
    return {"prune/sparsity": sparsity_of(params, c.prune.pattern, leading_axes=lead)}


def describe(abstract_params: Any, s: PruneSettings, *, leading_axes: int = 0) -> str:
    """One line for the log: what is pruned, to what, when, and which weight arrays stay dense."""
    pruned, dense = [], []
    for path, w in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        shape = tuple(w.shape[leading_axes:])
        name = jax.tree_util.keystr(path).replace(".value", "")
        if is_prunable(path, shape, s.pattern):
            pruned.append(name)
        elif len(shape) >= 2 and not _name(path).endswith(("bias", "scale")):
            dense.append(name)
    text = (
        f"pruning {len(pruned)} weight arrays to sparsity {s.target_sparsity} ({s.pattern}), "
        f"mask updates every {s.every} steps from step {s.start_step} to {s.end_step}"
    )
    if dense:
        text += f"; left dense (second-to-last axis not a multiple of {GROUP}): {', '.join(dense)}"
    return text
