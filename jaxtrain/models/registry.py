"""The one model registry: model.name -> family (settings dataclass, constructor, tasks).

Adding a family is one file in jaxtrain/models/ plus one line in MODELS (see
docs/adding_a_model.md). Config validation, the CLI and the docs read the names from here.
`config.model` holds `name` plus exactly the family's settings fields; `model_config` builds it.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
from flax import nnx

from jaxtrain.errors import ConfigError
from jaxtrain.models import bert, cnn, gpt, llama, mlp, resnet, vit
from jaxtrain.models import settings as S

IMAGES = ("image_classification",)
# Saved values of fields whose type changed, read as today's: (family, field) -> {old: new}.
_LEGACY_VALUES = {("gpt", "remat"): {False: "none", True: "full"}}
# Fields added to a family later: their value in runs saved before (so those still resume).
# conv_impl: runs saved before it convolved with XLA's conv, so resuming one bitwise needs "xla".
_ADDED_FIELDS = {
    ("gpt", "pretrained"): "",
    ("llama", "pretrained"): "",
    ("cnn", "conv_impl"): "xla",
    ("resnet", "conv_impl"): "xla",
}


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """One model family: its settings dataclass, its constructor and the tasks it trains on."""

    settings: type  # frozen dataclass, validated in __post_init__
    create: Callable[..., nnx.Module]  # create(settings, *, rngs) -> module
    tasks: tuple[str, ...]  # image_classification, text_classification, language_modeling


MODELS: dict[str, ModelFamily] = {
    "mlp": ModelFamily(mlp.MLPSettings, mlp.create_mlp, IMAGES),
    "cnn": ModelFamily(cnn.CNNSettings, cnn.create_cnn, IMAGES),
    "resnet": ModelFamily(resnet.ResNetSettings, resnet.create_resnet, IMAGES),
    "gpt": ModelFamily(gpt.GPTConfig, gpt.GPT, ("language_modeling",)),
    "bert": ModelFamily(bert.BertConfig, bert.BertClassifier, ("text_classification",)),
    "llama": ModelFamily(llama.LlamaConfig, llama.Llama, ("language_modeling",)),
    "vit": ModelFamily(vit.ViTSettings, vit.create_vit, IMAGES),
}


def model_names() -> tuple[str, ...]:
    return tuple(MODELS)


def get_family(name: str) -> ModelFamily:
    if name not in MODELS:
        raise ConfigError(f"config.model.name: {name!r} is not one of {', '.join(MODELS)}")
    return MODELS[name]


def model_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
    """`config.model` for family `name`: its fields at their defaults, updated by `fields`."""
    values = {"name": name, **S.config_fields(get_family(name).settings)}
    _check_known(name, fields)
    values.update(fields)
    return ml_collections.ConfigDict(values)


def settings_from_config(model: Any, info: Any = None) -> Any:
    """config.model -> the family's validated settings; `info` (a DatasetInfo) fills the
    dataset's fields. Without `info` the dataset fields keep placeholder defaults, which is
    enough to validate the config before any data is read."""
    values = dict(model.to_dict() if hasattr(model, "to_dict") else model)
    name = values.pop("name", None)
    family = get_family(name)
    _check_known(name, values)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if info is not None:
        values = S.fill_from_dataset(family.settings, values, info)
    try:
        return family.settings(**values)
    except TypeError as e:  # a value of the wrong kind, e.g. a string for a tuple
        raise ConfigError(f"config.model: {e}") from e


def create_model_factory(settings: Any) -> Callable[[nnx.Rngs], nnx.Module]:
    """rngs -> model, for any family's settings."""
    for family in MODELS.values():
        if type(settings) is family.settings:
            return lambda rngs: family.create(settings, rngs=rngs)
    raise ValueError(f"no model family has settings of type {type(settings).__name__}")


def create_model(name: str, *, rngs: nnx.Rngs, **fields: Any) -> nnx.Module:
    """Family `name`'s module from keyword settings (config and dataset fields alike)."""
    family = get_family(name)
    return family.create(family.settings(**fields), rngs=rngs)


def family_config_of(saved_model: dict) -> dict:
    """A saved config's model part reduced to its family's fields (runs saved before models
    had per-family configs stored every family's fields), with legacy values (gpt's boolean
    `remat`) read as today's."""
    name = saved_model.get("name")
    if name not in MODELS:
        return dict(saved_model)
    known = S.config_fields(MODELS[name].settings)
    out = {k: v for k, v in saved_model.items() if k == "name" or k in known}
    for (family, field), default in _ADDED_FIELDS.items():
        if family == name:
            out.setdefault(field, default)
    for (family, field), renamed in _LEGACY_VALUES.items():
        if family == name and isinstance(out.get(field), bool):
            out[field] = renamed[out[field]]
    return out


def _check_known(name: str, values: dict[str, Any]) -> None:
    known = S.config_fields(get_family(name).settings)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"config.model.name: model {name!r} has no field {unknown[0]!r} (its fields: "
            f"{', '.join(known)}); build config.model with jaxtrain.models.model_config({name!r})"
        )
