"""Cheap on-device fingerprints of the train state, the gradient and the batch, for `diverge`.

With `config.fingerprint_every = N > 0`, the loop writes a record (jaxtrain/fingerprint_records.py)
at step 0 (the initial state) and every N steps:
- `step`, `rng`, `params`, `opt_state`, `model_state`: the state after S updates;
- `grads`, `batch`: update S's gradient and batch (none at step 0). The gradient is recomputed
  from the state before update S by a separate jitted function: the train step's program is
  never touched, so turning fingerprints on changes no number of the run.

Per leaf, all computed in one jitted pass and fetched together:
- `checksum`: the wrapping 32-bit sum over elements of mix(bits ^ index * 0x9E3779B9), where
  bits is the element's bit pattern and mix a bijection of 32-bit words (murmur3's finalizer).
  Any change of one element changes it; integer sums are exact in any order, so it does not
  depend on the mesh. This decides whether two leaves differ.
- `sum`, `sumsq` (float32) and `p0..p3`, projections on pseudo-random +-1 vectors drawn from
  position hashes: they size a difference, ||a - b||^2 ~ mean_k (p_k(a) - p_k(b))^2.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxtrain.fingerprint_records import (
    NUM_PROJECTIONS,
    append_record,
    supersede_fingerprints,
    to_record,
)
from jaxtrain.parallel import sharding
from jaxtrain.step import StepSpec, TrainState, compute_grads


def _i32(c: int) -> jax.Array:
    """A uint32 constant as the int32 with the same bits."""
    return jnp.asarray(np.asarray(c, np.uint32).view(np.int32))


# Integer hashing runs in int32 (wrapping, logical shifts): the same bits as uint32 arithmetic,
# and XLA's CPU backend vectorizes it, which it does not for uint32 (~4x slower measured).
def _mix32(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit finalizer: a bijection of 32-bit words that spreads every bit."""
    h = h ^ lax.shift_right_logical(h, 16)
    h = h * _i32(0x85EBCA6B)
    h = h ^ lax.shift_right_logical(h, 13)
    h = h * _i32(0xC2B2AE35)
    return h ^ lax.shift_right_logical(h, 16)


def _bits32(x: jax.Array) -> jax.Array:
    """Each element's bit pattern as an int32 word (same shape)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.int32)
    width = x.dtype.itemsize
    if width == 4:
        return lax.bitcast_convert_type(x, jnp.int32)
    if width in (1, 2):
        unsigned = jnp.uint8 if width == 1 else jnp.uint16
        return lax.bitcast_convert_type(x, unsigned).astype(jnp.int32)
    words = lax.bitcast_convert_type(x, jnp.int32)  # 8 bytes: [..., 2]
    return words[..., 0] ^ _mix32(words[..., 1])


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """Row-major element index (wrapping int32), built elementwise so it shards like the leaf."""
    index = jnp.zeros(shape, jnp.int32)
    stride = 1
    for dim in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.int32, shape, dim) * _i32(stride % 2**32)
        stride *= shape[dim]
    return index


def _signs(shape: tuple[int, ...], salt: int) -> jax.Array:
    """[*shape, NUM_PROJECTIONS] pseudo-random +-1.0 from a hash of each position."""
    hashed = _mix32(_flat_index(shape) ^ _i32(salt))
    out_shape = (*shape, NUM_PROJECTIONS)
    shifts = jnp.broadcast_to(jnp.arange(NUM_PROJECTIONS, dtype=jnp.int32), out_shape)
    bits = lax.shift_right_logical(jnp.broadcast_to(hashed[..., None], shifts.shape), shifts)
    return 1.0 - 2.0 * (bits & 1).astype(jnp.float32)


def leaf_fingerprint(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(float32[len(MOMENTS)] moments, uint32 checksum) of one array; see the module docstring.

    Element (r, c) of a leaf seen as [rows, last axis] gets the sign col_k[c] * row_k[r]: these
    are pairwise independent, so the projections estimate norms, and they cost one thin matmul
    instead of hashing every element again.
    """
    x = jnp.asarray(x)
    x = x.reshape(1) if x.ndim == 0 else x
    xf = x.astype(jnp.float32)
    cols = _signs(x.shape[-1:], 0x5BD1E995)
    per_row = jnp.einsum("...d,dk->...k", xf, cols, precision=lax.Precision.HIGHEST)
    rows = _signs(x.shape[:-1], 0x27D4EB2F)
    projections = jnp.sum(per_row * rows, axis=tuple(range(x.ndim - 1)))
    words = _mix32(_bits32(x) ^ (_flat_index(x.shape) * _i32(0x9E3779B9)))
    checksum = lax.bitcast_convert_type(jnp.sum(words), jnp.uint32)  # int32 sums wrap
    moments = jnp.concatenate([jnp.stack([jnp.sum(xf), jnp.sum(xf * xf)]), projections])
    return moments, checksum


def fingerprint_tree(tree: Any) -> tuple[jax.Array, jax.Array]:
    """(float32[L, len(MOMENTS)], uint32[L]) for the L leaves of `tree`, in leaf_names order."""
    parts = [leaf_fingerprint(x) for x in jax.tree.leaves(tree)]
    return jnp.stack([m for m, _ in parts]), jnp.stack([c for _, c in parts])


def _key_name(key: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_names(tree: Any) -> list[str]:
    """'params/dense/0/kernel'-style names of the leaves, in jax.tree.leaves order (nnx
    Variables' trailing `.value` dropped)."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [_key_name(k) for k in path]
        if len(parts) > 1 and parts[-1] == "value":
            parts = parts[:-1]
        names.append("/".join(parts))
    return names


def state_fingerprints(state: TrainState) -> tuple[jax.Array, jax.Array]:
    return fingerprint_tree(state)


def grad_fingerprints(spec: StepSpec, state: TrainState, batch: dict) -> tuple[Any, Any]:
    """Fingerprints of {batch, grads}: the batch and gradient of the update from `state`."""
    grads = compute_grads(spec, state, batch)[0]
    return fingerprint_tree({"batch": batch, "grads": grads})


class FingerprintLog:
    """Writes fingerprints every `every` steps (0: never). The loop calls `start` after
    restoring, `grads` before each step and `write` after it; process 0 writes the file."""

    def __init__(self, spec: StepSpec, mesh, workdir: str, *, every: int, enabled: bool):
        self.every = every
        self._workdir = workdir
        self._enabled = enabled
        replicated = sharding.replicated(mesh)
        self._state_fn = jax.jit(state_fingerprints, out_shardings=replicated)
        self._grad_fn = jax.jit(
            lambda state, batch: grad_fingerprints(spec, state, batch), out_shardings=replicated
        )
        self._state_meta: tuple[list[str], list[int]] | None = None
        self._grad_meta: tuple[list[str], list[int]] | None = None

    def start(self, state: TrainState, start_step: int) -> None:
        """Drops records of lost work on resume; on a fresh start records the initial state."""
        if self._enabled:
            supersede_fingerprints(self._workdir, start_step)
        if self.every and start_step == 0:
            self.write(0, state, None)

    def grads(self, state: TrainState, batch: dict, done: int):
        """On device, not fetched: the batch and gradient of update `done`, if it is due."""
        if not self.every or done % self.every:
            return None
        if self._grad_meta is None:
            tree = {"batch": batch, "grads": state.params}  # grads mirror params
            self._grad_meta = (leaf_names(tree), [x.size for x in jax.tree.leaves(tree)])
        return self._grad_fn(state, batch)

    def write(self, step: int, state: TrainState, grads_fp) -> None:
        """Appends the record of `step` (the state after it, and `grads_fp` from `grads`);
        nothing unless this step is due (`grads_fp` given, or the initial state)."""
        if grads_fp is None and step != 0:
            return
        if self._state_meta is None:
            self._state_meta = (leaf_names(state), [x.size for x in jax.tree.leaves(state)])
        # A host sync every `every` steps: the fingerprints are fetched now.
        state_fp = jax.device_get(self._state_fn(state))
        names, sizes = self._state_meta
        moments, checksums = state_fp
        if grads_fp is not None:
            g_moments, g_checksums = jax.device_get(grads_fp)
            names, sizes = self._grad_meta[0] + names, self._grad_meta[1] + sizes
            moments = np.concatenate([g_moments, moments])
            checksums = np.concatenate([g_checksums, checksums])
        if self._enabled:
            append_record(self._workdir, to_record(step, names, moments, checksums, sizes))
