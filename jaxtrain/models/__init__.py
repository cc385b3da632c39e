"""Model families. `create_model` dispatches on an explicit name -> constructor dict."""

from collections.abc import Sequence

from flax import nnx

from jaxtrain.models.cnn import CNN
from jaxtrain.models.mlp import MLP

MODELS = {"mlp": MLP, "cnn": CNN}


def create_model(
    name: str,
    *,
    num_classes: int,
    init: str,
    norm: str,
    dropout: float,
    features: Sequence[int],
    convs_per_stage: int,
    hidden: int,
    in_shape: Sequence[int],
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Builds the named classifier. `in_shape` is one example's shape, e.g. (28, 28, 1)."""
    if name == "mlp":
        return MLP(
            in_features=int(_prod(in_shape)),
            features=features,
            num_classes=num_classes,
            init=init,
            norm=norm,
            dropout=dropout,
            rngs=rngs,
        )
    if name == "cnn":
        return CNN(
            in_shape=tuple(in_shape),
            features=features,
            convs_per_stage=convs_per_stage,
            hidden=hidden,
            num_classes=num_classes,
            init=init,
            norm=norm,
            dropout=dropout,
            rngs=rngs,
        )
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out
