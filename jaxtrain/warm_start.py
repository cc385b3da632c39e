"""Warm start: load params (and batch statistics) from another run's checkpoint, not its optimizer.

Matching is by parameter path, so a model that shares only some layers with the source (say, a
new classifier head) takes what matches and keeps its own init for the rest.
"""

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxtrain.errors import CheckpointError

log = logging.getLogger(__name__)


def resolve_checkpoint_step(path: str) -> str:
    """A run dir, its checkpoints/ dir, or one step dir -> the step dir to read."""
    for candidate in (os.path.join(path, "checkpoints"), path):
        if os.path.isdir(candidate) and not os.path.isdir(os.path.join(candidate, "state")):
            steps = [int(d) for d in os.listdir(candidate) if d.isdigit()]
            if steps:
                return os.path.join(candidate, str(max(steps)))
    if os.path.isdir(os.path.join(path, "state")):
        return path
    raise CheckpointError(
        f"config.init_from: no checkpoint found at {path!r}; give a run directory, its "
        "checkpoints/ directory, or one step directory"
    )


def _path_key(path: tuple) -> str:
    parts = []
    for entry in path:
        name = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
        if name != "value":  # nnx Variables add a trailing .value; the saved dicts do not
            parts.append(str(name))
    return "/".join(parts)


def flatten_by_path(tree: Any) -> dict[str, Any]:
    """{"a/b/kernel": leaf}: the keys a checkpoint's host tree and a model's params share."""
    return {_path_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _not_item_metadata_warning(record: logging.LogRecord) -> bool:
    """Orbax warns that the `state` item directory has no _CHECKPOINT_METADATA when it is read
    alone: that file belongs to the step directory one level up, so the warning is noise here."""
    return "Metadata file does not exist" not in record.getMessage()


def read_host_tree(step_dir: str, field: str = "config.init_from") -> dict[str, Any]:
    """A checkpoint step's `state` item as host numpy arrays; errors name `field`."""
    path = os.path.join(step_dir, "state")
    checkpointer = ocp.PyTreeCheckpointer()
    absl_logger = logging.getLogger("absl")  # orbax logs through absl
    absl_logger.addFilter(_not_item_metadata_warning)
    try:
        layout = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), layout)
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    except Exception as e:  # noqa: BLE001 - report any unreadable checkpoint the same way
        raise CheckpointError(f"{field}: cannot read {path}: {e}") from e
    finally:
        absl_logger.removeFilter(_not_item_metadata_warning)


def _merge(current: Any, saved: dict[str, np.ndarray], group: str, used: set[str]) -> Any:
    def take(path: tuple, leaf: jax.Array) -> jax.Array:
        key = f"{group}/{_path_key(path)}"
        if key not in saved:
            return leaf
        if saved[key].shape != leaf.shape:
            raise CheckpointError(
                f"config.init_from: parameter {key} has shape {saved[key].shape} in the "
                f"checkpoint but {leaf.shape} in this model"
            )
        used.add(key)
        return jax.device_put(saved[key].astype(leaf.dtype), leaf.sharding)

    return jax.tree_util.tree_map_with_path(take, current)


def warm_start(state: Any, path: str) -> Any:
    """Returns `state` with params and model collections replaced where paths match (the
    source's params, not its EMA average)."""
    step_dir = resolve_checkpoint_step(path)
    saved_state = read_host_tree(step_dir)["train_state"]
    saved = {f"params/{k}": v for k, v in flatten_by_path(saved_state["params"]).items()}
    saved |= {f"model_state/{k}": v for k, v in flatten_by_path(saved_state["model_state"]).items()}
    used: set[str] = set()
    # The model's own params (LoRA: the merged base, which with_params splits again).
    current = state.inference_params()
    params = _merge(current, saved, "params", used)
    model_state = _merge(state.model_state, saved, "model_state", used)
    if not used:
        raise CheckpointError(
            f"config.init_from: no parameter of this model matches {step_dir} by name"
        )
    kept = sorted(
        k
        for k in flatten_by_path({"params": current, "model_state": state.model_state})
        if k not in used
    )
    log.info(
        "warm start from %s: loaded %d arrays; kept init for %d (%s); ignored %d from checkpoint",
        step_dir,
        len(used),
        len(kept),
        ", ".join(kept[:8]),
        len(set(saved) - used),
    )
    # With EMA the average restarts from the loaded params.
    return state.with_params(params).replace(model_state=model_state)
