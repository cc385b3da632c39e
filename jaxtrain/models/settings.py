"""What every model family's settings dataclass shares: dataset-filled fields and checks.

A family's settings are one frozen dataclass. Its fields with defaults are exactly what
`config.model` holds for that family (plus `name`); fields made with `dataset_field` are not in
the config: the dataset fills them (number of classes, input shape, vocabulary, pad id). Each
dataclass validates itself in `__post_init__` and names the config field it rejects.
"""

import dataclasses
from typing import Any

from jaxtrain.errors import ConfigError

INIT_NAMES = ("he", "xavier")
NORM_NAMES = ("batchnorm", "layernorm", "none")
DTYPE_NAMES = ("float32", "bfloat16")

_DATASET_KEY = "jaxtrain_dataset_attr"
_IN_CONFIG_KEY = "jaxtrain_in_config"


def dataset_field(attr: str, default: Any) -> Any:
    """A settings field filled from `DatasetInfo.<attr>`; it is not in the config."""
    return dataclasses.field(default=default, metadata={_DATASET_KEY: attr})


def dataset_default(attr: str) -> Any:
    """A config field whose value 0 means "take `DatasetInfo.<attr>`" (e.g. vocab_size)."""
    return dataclasses.field(default=0, metadata={_DATASET_KEY: attr, _IN_CONFIG_KEY: True})


def dataset_attr(field: dataclasses.Field) -> str | None:
    """The DatasetInfo attribute that fills (or defaults) `field`; None for plain config fields."""
    return field.metadata.get(_DATASET_KEY)


def in_config(field: dataclasses.Field) -> bool:
    return dataset_attr(field) is None or field.metadata.get(_IN_CONFIG_KEY, False)


def config_fields(settings_cls: type) -> dict[str, Any]:
    """{field: default} of the fields that `config.model` holds for this family."""
    return {f.name: f.default for f in dataclasses.fields(settings_cls) if in_config(f)}


def fill_from_dataset(settings_cls: type, values: dict[str, Any], info: Any) -> dict[str, Any]:
    """`values` plus the dataset-filled fields read off `info` (a DatasetInfo)."""
    out = dict(values)
    for f in dataclasses.fields(settings_cls):
        attr = dataset_attr(f)
        if attr is not None and (not in_config(f) or not out.get(f.name)):
            out[f.name] = getattr(info, attr)
    return out


def check(ok: bool, field: str, message: str) -> None:
    """Raises ConfigError naming `config.model.<field>` unless `ok`."""
    if not ok:
        raise ConfigError(f"config.model.{field}: {message}")


def check_choice(value: str, field: str, names: tuple[str, ...]) -> None:
    check(value in names, field, f"{value!r} is not one of {', '.join(names)}")


def check_positive(settings: Any, *fields: str) -> None:
    for field in fields:
        value = getattr(settings, field)
        check(value > 0, field, f"must be > 0, got {value}")


def check_dropout(dropout: float) -> None:
    check(0.0 <= dropout < 1.0, "dropout", f"must be in [0, 1), got {dropout}")


def check_widths(features: tuple[int, ...]) -> None:
    check(len(features) > 0, "features", "must name at least one width")
    check(all(f > 0 for f in features), "features", f"widths must be > 0: {features}")


def check_pad_id(s: Any) -> None:
    """The tokenizer's pad id lies in the vocabulary (text models; vocab_size 0: the tokenizer's,
    filled in from the dataset)."""
    check(
        s.vocab_size == 0 or 0 <= s.pad_id < s.vocab_size,
        "vocab_size",
        f"the tokenizer's pad_id {s.pad_id} is outside [0, {s.vocab_size})",
    )


def check_image_classifier(s: Any) -> None:
    """The fields every image classifier family shares (mlp, cnn, resnet)."""
    check(s.num_classes >= 2, "num_classes", f"must be >= 2, got {s.num_classes}")
    check_choice(s.init, "init", INIT_NAMES)
    check_choice(s.norm, "norm", NORM_NAMES)
    check_dropout(s.dropout)
    check_widths(tuple(s.features))
