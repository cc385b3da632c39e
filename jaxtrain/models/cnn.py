"""A small VGG-style convolutional classifier.

Letters: B batch, H/W spatial, C channels, K classes.
"""

import dataclasses
from collections.abc import Sequence

import jax
from flax import nnx

from jaxtrain.models import settings as S
from jaxtrain.models.conv import CONV_IMPLS, Conv, max_pool_2x2
from jaxtrain.models.layers import Norm, get_initializer


@dataclasses.dataclass(frozen=True)
class CNNSettings:
    """config.model for model.name=cnn."""

    num_classes: int = 10
    init: str = "he"
    norm: str = "batchnorm"
    dropout: float = 0.1
    features: tuple[int, ...] = (32, 64)  # channels per stage
    convs_per_stage: int = 1
    hidden: int = 256  # width of the dense layer before the classifier
    # How convs and max pools are formulated: auto | xla | im2col (jaxtrain/models/conv.py).
    conv_impl: str = "auto"
    in_shape: tuple[int, ...] = S.dataset_field("input_shape", (28, 28, 1))

    def __post_init__(self):
        S.check_image_classifier(self)
        S.check_positive(self, "convs_per_stage", "hidden")
        S.check_choice(self.conv_impl, "conv_impl", CONV_IMPLS)
        S.check(len(self.in_shape) == 3, "name", f"needs (H, W, C) images, got {self.in_shape}")


def create_cnn(s: CNNSettings, *, rngs: nnx.Rngs) -> "CNN":
    return CNN(
        in_shape=tuple(s.in_shape),
        features=tuple(s.features),
        convs_per_stage=s.convs_per_stage,
        hidden=s.hidden,
        num_classes=s.num_classes,
        init=s.init,
        norm=s.norm,
        dropout=s.dropout,
        conv_impl=s.conv_impl,
        rngs=rngs,
    )


class ConvBlock(nnx.Module):
    """3x3 conv -> norm -> relu."""

    def __init__(
        self, cin: int, cout: int, *, init: str, norm: str, conv_impl: str, rngs: nnx.Rngs
    ):
        # The conv bias is redundant before a norm layer, so it is dropped there.
        self.conv = Conv(
            cin,
            cout,
            (3, 3),
            use_bias=norm == "none",
            kernel_init=get_initializer(init),
            impl=conv_impl,
            rngs=rngs,
        )
        self.norm = Norm(norm, cout, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return nnx.relu(self.norm(self.conv(x), train=train))


class CNN(nnx.Module):
    """[conv block x convs_per_stage -> 2x2 max-pool] per stage -> dense -> dropout -> dense."""

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        features: Sequence[int],
        convs_per_stage: int,
        hidden: int,
        num_classes: int,
        init: str,
        norm: str,
        dropout: float,
        conv_impl: str = "xla",
        rngs: nnx.Rngs,
    ):
        height, width, cin = in_shape
        blocks = []
        for cout in features:
            for _ in range(convs_per_stage):
                blocks.append(
                    ConvBlock(cin, cout, init=init, norm=norm, conv_impl=conv_impl, rngs=rngs)
                )
                cin = cout
        self.blocks = nnx.List(blocks)
        self.convs_per_stage = convs_per_stage
        self.conv_impl = conv_impl
        self.dropout = nnx.Dropout(dropout)
        kinit = get_initializer(init)
        # Each stage halves H and W (floor), so the flattened size is known up front.
        pooled = (height >> len(features)) * (width >> len(features))
        self.hidden = nnx.Linear(cin * pooled, hidden, kernel_init=kinit, rngs=rngs)
        self.head = nnx.Linear(hidden, num_classes, kernel_init=kinit, rngs=rngs)

    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool, dropout_key: jax.Array) -> jax.Array:
        x = x_BxHxWxC
        for i, block in enumerate(self.blocks):
            x = block(x, train=train)
            if (i + 1) % self.convs_per_stage == 0:
                x = max_pool_2x2(x, self.conv_impl)
        x = nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))
        x = self.dropout(x, deterministic=not train, rngs=dropout_key)
        return self.head(x)  # logits_BxK
