"""A CIFAR-style residual network (He et al. 2016) for small images such as 28x28x1.

conv3x3 stem -> stages of BasicBlocks (the first block of every stage after the first halves H
and W) -> global average pool -> dropout -> dense head. With features (32, 64, 128) a 28x28 input
is seen at 28x28, 14x14 and 7x7.

Parameters carry logical axis names (kernel_h, kernel_w, conv_in, conv_out, norm, classes) as
metadata only (`eager_sharding=False`): creating the model needs no mesh, and the training code
decides how names map to mesh axes.

Letters: B batch, H/W spatial, C channels, K classes.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtrain.models import settings as S
from jaxtrain.models.conv import CONV_IMPLS, Conv
from jaxtrain.models.layers import Norm, get_initializer

CONV_AXES = ("kernel_h", "kernel_w", "conv_in", "conv_out")


@dataclasses.dataclass(frozen=True)
class ResNetSettings:
    """config.model for model.name=resnet."""

    num_classes: int = 10
    init: str = "he"
    norm: str = "batchnorm"
    dropout: float = 0.1
    features: tuple[int, ...] = (32, 64)  # stage widths
    blocks_per_stage: int = 2
    # How convs are formulated: auto | xla | im2col (jaxtrain/models/conv.py).
    conv_impl: str = "auto"
    in_shape: tuple[int, ...] = S.dataset_field("input_shape", (28, 28, 1))

    def __post_init__(self):
        S.check_image_classifier(self)
        S.check_positive(self, "blocks_per_stage")
        S.check_choice(self.conv_impl, "conv_impl", CONV_IMPLS)
        S.check(
            len(self.in_shape) == 3, "name", f"resnet needs (H, W, C) images, got {self.in_shape}"
        )


def create_resnet(s: ResNetSettings, *, rngs: nnx.Rngs) -> "ResNet":
    return ResNet(
        in_shape=tuple(s.in_shape),
        features=tuple(s.features),
        blocks_per_stage=s.blocks_per_stage,
        num_classes=s.num_classes,
        init=s.init,
        norm=s.norm,
        dropout=s.dropout,
        conv_impl=s.conv_impl,
        rngs=rngs,
    )


def _partitioned(init: jax.nn.initializers.Initializer, names: tuple[str, ...]):
    # Metadata only: eager sharding would need an active mesh just to build the model.
    return nnx.with_partitioning(init, names, eager_sharding=False)


def _conv(
    cin: int, cout: int, size: int, stride: int, *, init: str, norm: str, impl: str, rngs: nnx.Rngs
) -> Conv:
    # A bias right before a norm layer is redundant (the norm's shift replaces it).
    return Conv(
        cin,
        cout,
        (size, size),
        strides=stride,
        padding="SAME",
        use_bias=norm == "none",
        kernel_init=_partitioned(get_initializer(init), CONV_AXES),
        bias_init=_partitioned(jax.nn.initializers.zeros, ("conv_out",)),
        impl=impl,
        rngs=rngs,
    )


def _norm(name: str, features: int, *, rngs: nnx.Rngs) -> Norm:
    """layers.Norm with its scale/bias annotated with the "norm" logical axis."""
    norm = Norm(name, features, rngs=rngs)
    if norm.layer is not None:
        for param in (norm.layer.scale, norm.layer.bias):
            if param is not None:
                param.set_metadata(out_sharding=("norm",))
    return norm


class BasicBlock(nnx.Module):
    """relu(norm(conv3x3(relu(norm(conv3x3(x))))) + shortcut(x)); 1x1 projection when needed."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        *,
        init: str,
        norm: str,
        conv_impl: str = "xla",
        rngs: nnx.Rngs,
    ):
        conv = functools.partial(_conv, init=init, norm=norm, impl=conv_impl, rngs=rngs)
        self.conv1 = conv(cin, cout, 3, stride)
        self.norm1 = _norm(norm, cout, rngs=rngs)
        self.conv2 = conv(cout, cout, 3, 1)
        self.norm2 = _norm(norm, cout, rngs=rngs)
        if stride != 1 or cin != cout:
            self.proj = conv(cin, cout, 1, stride)
            self.proj_norm = _norm(norm, cout, rngs=rngs)
        else:
            self.proj = None
            self.proj_norm = None

    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        y = nnx.relu(self.norm1(self.conv1(x_BxHxWxC), train=train))
        y = self.norm2(self.conv2(y), train=train)
        shortcut = x_BxHxWxC
        if self.proj is not None:
            shortcut = self.proj_norm(self.proj(x_BxHxWxC), train=train)
        return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
    """Stem -> len(features) stages x blocks_per_stage BasicBlocks -> mean pool -> head."""

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        features: Sequence[int],
        blocks_per_stage: int,
        num_classes: int,
        init: str,
        norm: str,
        dropout: float,
        conv_impl: str = "xla",
        rngs: nnx.Rngs,
    ):
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if not features:
            raise ValueError("features must name at least one stage width")
        cin = in_shape[-1]
        self.stem = _conv(cin, features[0], 3, 1, init=init, norm=norm, impl=conv_impl, rngs=rngs)
        self.stem_norm = _norm(norm, features[0], rngs=rngs)
        blocks = []
        cin = features[0]
        for stage, cout in enumerate(features):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    BasicBlock(
                        cin, cout, stride, init=init, norm=norm, conv_impl=conv_impl, rngs=rngs
                    )
                )
                cin = cout
        self.blocks = nnx.List(blocks)
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(
            cin,
            num_classes,
            kernel_init=_partitioned(get_initializer(init), ("conv_out", "classes")),
            bias_init=_partitioned(jax.nn.initializers.zeros, ("classes",)),
            rngs=rngs,
        )

    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool, dropout_key: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_norm(self.stem(x_BxHxWxC), train=train))
        for block in self.blocks:
            x = block(x, train=train)
        x_BxC = jnp.mean(x, axis=(1, 2))
        x_BxC = self.dropout(x_BxC, deterministic=not train, rngs=dropout_key)
        return self.head(x_BxC)  # logits_BxK
