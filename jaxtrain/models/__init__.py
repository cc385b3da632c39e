"""Model families and the registries that name them (models/registry.py, models/pretrained.py).

Each family is one file with its settings dataclass (what `config.model` holds) and its module.
"""

from jaxtrain.models.bert import BertClassifier, BertConfig, BertEncoder
from jaxtrain.models.cnn import CNN, CNNSettings
from jaxtrain.models.gpt import GPT, GPTConfig
from jaxtrain.models.mlp import MLP, MLPSettings
from jaxtrain.models.registry import (
    MODELS,
    ModelFamily,
    create_model,
    create_model_factory,
    family_config_of,
    get_family,
    model_config,
    model_names,
    settings_from_config,
)
from jaxtrain.models.resnet import ResNet, ResNetSettings

__all__ = [
    "CNN",
    "GPT",
    "MLP",
    "MODELS",
    "BertClassifier",
    "BertConfig",
    "BertEncoder",
    "CNNSettings",
    "GPTConfig",
    "MLPSettings",
    "ModelFamily",
    "ResNet",
    "ResNetSettings",
    "create_model",
    "create_model_factory",
    "family_config_of",
    "get_family",
    "model_config",
    "model_names",
    "settings_from_config",
]
