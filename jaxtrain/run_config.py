"""A finished run's saved config (config.json), read back over today's defaults, and its
checkpoints opened read-only."""

import json
import os

import ml_collections

from jaxtrain.checkpoint import Checkpointer
from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError
from jaxtrain.models.registry import family_config_of, model_config


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's saved config over today's defaults, so fields added since the run was made
    take their default values."""
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the run's config ({e})") from e
    base = get_config()
    if isinstance(saved.get("model"), dict) and "name" in saved["model"]:
        # config.model holds the run's family's fields; older runs saved every family's.
        saved["model"] = family_config_of(saved["model"])
        base.model = model_config(saved["model"]["name"])
    return ml_collections.ConfigDict(_merge(base.to_dict(), saved))


def open_run_checkpoints(workdir: str, c: ml_collections.ConfigDict) -> Checkpointer:
    """The run's checkpoints/, read-only, ranked by the run's own best_metric."""
    k = c.checkpoint
    return Checkpointer(
        os.path.join(workdir, "checkpoints"),
        keep=k.keep,
        keep_best=k.keep_best,
        best_metric=k.best_metric,
        best_mode=k.best_mode,
        async_save=False,
        read_only=True,
    )


def _merge(base: dict, saved: dict) -> dict:
    out = dict(base)
    for key, value in saved.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), tuple):
            out[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            out[key] = value
    return out
