"""Shared building blocks: initializer and normalization choices, rematerialisation policies,
logically named params."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def get_initializer(name: str) -> jax.nn.initializers.Initializer:
    """He (Kaiming) normal for ReLU nets, or Xavier (Glorot) uniform."""
    if name == "he":
        return jax.nn.initializers.he_normal()
    if name == "xavier":
        return jax.nn.initializers.glorot_uniform()
    raise ValueError(f"unknown init {name!r}; valid: he, xavier")


class Norm(nnx.Module):
    """BatchNorm, LayerNorm or identity over the last axis, chosen by name."""

    def __init__(self, name: str, features: int, *, rngs: nnx.Rngs):
        if name == "batchnorm":
            self.layer = nnx.BatchNorm(features, momentum=0.9, rngs=rngs)
        elif name == "layernorm":
            self.layer = nnx.LayerNorm(features, rngs=rngs)
        elif name == "none":
            self.layer = None
        else:
            raise ValueError(f"unknown norm {name!r}; valid: batchnorm, layernorm, none")
        self.kind = name

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.kind == "batchnorm":
            # Under jit with a data-sharded batch, the mean is over the global batch: XLA inserts
            # the cross-device reduction, so 1 and N devices compute the same statistics.
            return self.layer(x, use_running_average=not train)
        if self.kind == "layernorm":
            return self.layer(x)
        return x


# model.remat: what a rematerialised block keeps for the backward pass (jax.checkpoint_policies).
# "full" keeps only the block's inputs and recomputes the rest; the "dots" policies keep matmul
# outputs (all of them, or those without batch dimensions: weight-like products) and recompute
# the cheap elementwise work around them.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "none": None,  # no rematerialisation: the backward pass reads the saved activations
    "full": None,  # jax.checkpoint's default policy: save nothing inside the block
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_NAMES = tuple(REMAT_POLICIES)


def remat(fn: Callable, policy: str, *, static_argnums: tuple[int, ...] = ()) -> Callable:
    """`fn` rematerialised under the named policy (`fn` itself for "none"); NNX-aware, so `fn`
    may take modules. ValueError lists the valid names."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {policy!r}; valid: {', '.join(REMAT_NAMES)}")
    if policy == "none":
        return fn
    return nnx.remat(fn, static_argnums=static_argnums, policy=REMAT_POLICIES[policy])


def logical_param(
    rngs: nnx.Rngs, init: jax.nn.initializers.Initializer, shape: tuple[int, ...], names: tuple
) -> nnx.Param:
    """A float32 param annotated with logical axis names (jaxtrain/parallel/partitioning.py).

    `eager_sharding=False`: the names are logical, not mesh axes, so the variable must not be
    placed at creation; the trainer maps names to mesh axes. Draws one key from rngs.params()
    even for constant initializers, so adding a param shifts the keys of those after it."""
    init = nnx.with_partitioning(init, names, eager_sharding=False)
    return nnx.Param(init(rngs.params(), shape, jnp.float32))
