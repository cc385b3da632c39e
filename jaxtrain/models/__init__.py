"""Model families. `create_model` dispatches on an explicit name -> constructor dict;
`model_factory` turns a family's frozen settings into a function rngs -> model."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from flax import nnx

from jaxtrain.models.bert import BertClassifier, BertConfig
from jaxtrain.models.cnn import CNN
from jaxtrain.models.gpt import GPT, GPTConfig
from jaxtrain.models.mlp import MLP
from jaxtrain.models.resnet import ResNet

MODELS = {"mlp": MLP, "cnn": CNN, "resnet": ResNet, "gpt": GPT, "bert": BertClassifier}


@dataclasses.dataclass(frozen=True)
class ImageModelSettings:
    """The image classifiers' settings (mlp, cnn, resnet)."""

    name: str
    num_classes: int
    init: str
    norm: str
    dropout: float
    features: tuple[int, ...]
    convs_per_stage: int
    hidden: int
    blocks_per_stage: int
    in_shape: tuple[int, ...]


def model_factory(settings: Any) -> Callable[[nnx.Rngs], nnx.Module]:
    """rngs -> model for ImageModelSettings, GPTConfig or BertConfig."""
    if isinstance(settings, GPTConfig):
        return lambda rngs: GPT(settings, rngs=rngs)
    if isinstance(settings, BertConfig):
        return lambda rngs: BertClassifier(settings, rngs=rngs)
    if isinstance(settings, ImageModelSettings):
        kwargs = dataclasses.asdict(settings)
        name = kwargs.pop("name")
        return lambda rngs: create_model(name, **kwargs, rngs=rngs)
    raise ValueError(f"no model for settings of type {type(settings).__name__}")


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
    blocks_per_stage: int = 2,
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
    if name == "resnet":
        return ResNet(
            in_shape=tuple(in_shape),
            features=features,
            blocks_per_stage=blocks_per_stage,
            num_classes=num_classes,
            init=init,
            norm=norm,
            dropout=dropout,
            rngs=rngs,
        )
    raise ValueError(f"unknown model {name!r}; valid: mlp, cnn, resnet")


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out
