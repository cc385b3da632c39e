"""A multilayer perceptron classifier."""

import dataclasses
import math
from collections.abc import Sequence

import jax
from flax import nnx

from jaxtrain.models import settings as S
from jaxtrain.models.layers import Norm, get_initializer


@dataclasses.dataclass(frozen=True)
class MLPSettings:
    """config.model for model.name=mlp."""

    num_classes: int = 10
    init: str = "he"
    norm: str = "batchnorm"
    dropout: float = 0.1
    features: tuple[int, ...] = (32, 64)  # hidden widths
    in_shape: tuple[int, ...] = S.dataset_field("input_shape", (28, 28, 1))

    def __post_init__(self):
        S.check_image_classifier(self)


def create_mlp(s: MLPSettings, *, rngs: nnx.Rngs) -> "MLP":
    return MLP(
        in_features=math.prod(s.in_shape),
        features=tuple(s.features),
        num_classes=s.num_classes,
        init=s.init,
        norm=s.norm,
        dropout=s.dropout,
        rngs=rngs,
    )


class MLP(nnx.Module):
    """Flatten -> [dense -> norm -> relu -> dropout] x len(features) -> dense."""

    def __init__(
        self,
        *,
        in_features: int,
        features: Sequence[int],
        num_classes: int,
        init: str,
        norm: str,
        dropout: float,
        rngs: nnx.Rngs,
    ):
        kinit = get_initializer(init)
        widths = [in_features, *features]
        self.dense = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=kinit, rngs=rngs)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        self.norms = nnx.List([Norm(norm, f, rngs=rngs) for f in features])
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(widths[-1], num_classes, kernel_init=kinit, rngs=rngs)

    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool, dropout_key: jax.Array) -> jax.Array:
        x = x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)
        for i, (dense, norm) in enumerate(zip(self.dense, self.norms, strict=True)):
            x = nnx.relu(norm(dense(x), train=train))
            x = self.dropout(x, deterministic=not train, rngs=jax.random.fold_in(dropout_key, i))
        return self.head(x)
