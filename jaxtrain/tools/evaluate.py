"""Evaluate a saved checkpoint of a run on the test split: `python -m jaxtrain eval`."""

import dataclasses
import os
from typing import Any

import jax
import ml_collections

from jaxtrain import data as data_lib
from jaxtrain.build import (
    abstract_like,
    create_state_and_steps,
    make_carry,
    model_graphdef,
    zero_train_metrics,
)
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.errors import CheckpointError
from jaxtrain.evaluation import data_options, evaluate_split
from jaxtrain.parallel import sharding
from jaxtrain.run_config import load_run_config, open_run_checkpoints
from jaxtrain.writers import write_json


def _pick_step(ckpt: Checkpointer, which: str) -> int:
    steps = ckpt.steps()
    if not steps:
        raise CheckpointError(f"no checkpoints in {ckpt.directory}")
    if which == "latest":
        return steps[-1]
    if which == "best":
        best = ckpt.best_step()
        if best is None:
            raise CheckpointError(f"no checkpoint in {ckpt.directory} has a validation metric")
        return best
    if which.isdigit() and int(which) in steps:
        return int(which)
    raise CheckpointError(
        f"--checkpoint={which!r}: use best, latest or one of the saved steps {steps}"
    )


@dataclasses.dataclass
class SavedRun:
    config: ml_collections.ConfigDict
    info: data_lib.DatasetInfo
    state: Any  # TrainState, on `mesh`
    graphdef: Any
    step: int
    eval_fn: Any
    mesh: Any


def restore_run_state(workdir: str, which: str) -> SavedRun:
    """A run's config, dataset info and the train state of checkpoint `which`."""
    c = load_run_config(workdir)
    ckpt = open_run_checkpoints(workdir, c)
    step = _pick_step(ckpt, which)
    info = data_lib.get_dataset_info(data_options(c))
    mesh = sharding.create_mesh(-1, tuple(c.mesh.shape))
    state, train_fn, eval_fn = create_state_and_steps(c, mesh, info)
    pending = zero_train_metrics(
        train_fn, state, info, c.batch_size, sharding.batch_sharding(mesh), c.num_seeds
    )
    restored = ckpt.restore(step, abstract_like(make_carry(state, pending, 0)))
    ckpt.close()
    graphdef = model_graphdef(c, info)
    return SavedRun(c, info, restored.state["train_state"], graphdef, step, eval_fn, mesh)


def evaluate_checkpoint(workdir: str, which: str) -> dict[str, float]:
    """Restores checkpoint `which` (best, latest or a step) and evaluates the test split."""
    run = restore_run_state(workdir, which)
    scalars, confusion = evaluate_split(
        run.config, "test", run.state, run.eval_fn, run.mesh, run.info
    )
    step = run.step
    # weights: "ema" when the run kept an average of its weights (evaluated instead of them).
    result = {"checkpoint": which, "step": step, "weights": run.state.weights, **scalars}
    if jax.process_index() == 0:
        out = os.path.join(workdir, "eval", f"eval_{which}_step{step}.json")
        record = dict(result)
        if confusion is not None:
            record["test/confusion_rows_true_cols_pred"] = confusion.tolist()
        write_json(out, record)
    return result
