"""Shared building blocks: initializer and normalization choices."""

import jax
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
