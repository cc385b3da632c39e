"""Knowledge distillation (Hinton et al. 2015) from a finished jaxtrain run.

`config.distill.teacher` names a run directory. Its model is built from the run's own saved
config, its params and batch statistics are read from the run's best checkpoint (by its
checkpoint.best_metric; the latest if none has a validation metric) and placed on the student's
mesh by the student's param rules. The teacher is frozen and not part of the TrainState: a resumed
student reloads it, so resume stays bitwise. Its eval-mode forward pass runs inside the jitted
train step on the same (augmented) batch and adds `batch["teacher_logits"]`; the step then mixes
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * label loss (jaxtrain/losses.py).

With num_seeds = K the one teacher is shared by all members (vmapped over their batches).
"""

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from flax import nnx

from jaxtrain import models
from jaxtrain.data.loader import DatasetInfo
from jaxtrain.data.registry import IMAGE_CLASSIFICATION
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.parallel import partitioning, sharding
from jaxtrain.run_config import load_run_config, open_run_checkpoints
from jaxtrain.step import split_model
from jaxtrain.warm_start import flatten_by_path, read_host_tree

FIELD = "config.distill.teacher"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Teacher:
    graphdef: nnx.GraphDef
    variables: tuple[Any, Any]  # (params, model_state) on the student's mesh
    shardings: tuple[Any, Any]
    compute_sharding: Any  # FSDP: where params are used (gathered); None without fsdp
    source: str  # the checkpoint step directory it was read from


def _error(message: str) -> ConfigError:
    return ConfigError(f"{FIELD}: {message}")


def _teacher_step_dir(run: str, tc: ml_collections.ConfigDict) -> str:
    """The run's best checkpoint step by its own best_metric, else its latest."""
    ckpt = open_run_checkpoints(run, tc)
    try:
        step = ckpt.best_step()
        step = ckpt.steps()[-1] if step is None else step
    finally:
        ckpt.close()
    return os.path.join(ckpt.directory, str(step))


def _read_teacher_config(run: str) -> ml_collections.ConfigDict:
    """The teacher run's config; ConfigError unless `run` is a jaxtrain run with a checkpoint."""
    checkpoints = os.path.join(run, "checkpoints")
    has_steps = os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))
    if not (os.path.isfile(os.path.join(run, "config.json")) and has_steps):
        raise _error(
            f"{run!r} is not a finished jaxtrain run (it needs config.json and a checkpoint in "
            "checkpoints/); give the --workdir of a `python -m jaxtrain train` run"
        )
    try:
        return load_run_config(run)
    except CheckpointError as e:
        raise _error(str(e)) from e


def check_teacher_matches(
    tc: ml_collections.ConfigDict, c: ml_collections.ConfigDict, info: DatasetInfo, run: str
) -> None:
    """The teacher must see the student's inputs and predict the student's classes."""
    if tc.data.name != c.data.name:
        raise _error(
            f"the teacher {run} was trained on dataset {tc.data.name!r} but the student trains "
            f"on {c.data.name!r}; distill from a run on the same dataset"
        )
    if tc.num_seeds != 1:
        raise _error(
            f"the teacher {run} holds {tc.num_seeds} vmapped members (num_seeds); distill from a "
            "num_seeds=1 run"
        )
    if "num_classes" in tc.model and tc.model.num_classes != info.num_classes:
        raise _error(
            f"the teacher {run} predicts {tc.model.num_classes} classes (model.num_classes) but "
            f"the student's dataset {c.data.name!r} has {info.num_classes}"
        )
    if info.task != IMAGE_CLASSIFICATION:
        # Text: the input shape is (seq_len,) token ids of the tokenizer.
        for field in ("tokenizer", "seq_len"):
            t, s = tc.data[field], c.data[field]
            if t != s:
                raise _error(
                    f"the teacher {run} reads inputs with data.{field}={t!r} but the student "
                    f"with data.{field}={s!r}; the input shapes and token ids must match"
                )


def _place(abstract: Any, shardings: Any, saved: dict, group: str, where: str) -> Any:
    """`abstract`'s tree filled from the checkpoint's host arrays, placed by `shardings`."""
    leaves, treedef = jax.tree.flatten(abstract)
    out = []
    for key, a, s in zip(
        flatten_by_path(abstract), leaves, jax.tree.leaves(shardings), strict=True
    ):
        got = saved.get(key)
        if got is None or got.shape != a.shape:
            found = "is missing" if got is None else f"has shape {got.shape}"
            raise _error(
                f"{group}/{key} {found} in {where}, but the teacher's model (built from its "
                f"config for the student's input shape) needs {a.shape}"
            )
        out.append(jax.device_put(got.astype(a.dtype), s))
    return jax.tree.unflatten(treedef, out)


def load_teacher(c: ml_collections.ConfigDict, mesh, info: DatasetInfo) -> Teacher | None:
    """The frozen teacher of config.distill.teacher on `mesh`; None when distillation is off.

    Raises ConfigError naming the field for a directory that is not a run, or a teacher whose
    dataset, classes or input shape differ from the student's. Runs before anything compiles.
    """
    run = c.distill.teacher
    if not run:
        return None
    tc = _read_teacher_config(run)
    check_teacher_matches(tc, c, info, run)
    step_dir = _teacher_step_dir(run, tc)
    create = models.create_model_factory(models.settings_from_config(tc.model, info))
    graphdef, params, model_state = split_model(nnx.eval_shape(lambda: create(nnx.Rngs(0))))
    param_shardings = partitioning.param_shardings(params, mesh, tuple(c.mesh.rules))
    state_shardings = jax.tree.map(lambda _: sharding.replicated(mesh), model_state)
    saved = read_host_tree(step_dir, FIELD)["train_state"]
    variables = (
        _place(params, param_shardings, flatten_by_path(saved["params"]), "params", step_dir),
        _place(
            model_state,
            state_shardings,
            flatten_by_path(saved.get("model_state") or {}),
            "model_state",
            step_dir,
        ),
    )
    log.info("distilling from teacher %s (%s)", step_dir, tc.model.name)
    return Teacher(
        graphdef=graphdef,
        variables=variables,
        shardings=(param_shardings, state_shardings),
        compute_sharding=partitioning.compute_shardings(param_shardings, mesh),
        source=step_dir,
    )


def teacher_logits(teacher: Teacher, variables: tuple[Any, Any], inputs: jax.Array) -> jax.Array:
    """The teacher's eval-mode logits (running batch statistics, no dropout), no gradient."""
    params, model_state = variables
    if teacher.compute_sharding is not None:
        params = jax.lax.with_sharding_constraint(params, teacher.compute_sharding)
    model = nnx.merge(teacher.graphdef, params, model_state, copy=True)
    logits = model(inputs, train=False, dropout_key=jax.random.key(0))
    return jax.lax.stop_gradient(logits)


def with_teacher(step_fn: Callable, teacher: Teacher, num_members: int) -> Callable:
    """A (state, batch) train step -> a (state, batch, teacher variables) one that first adds
    batch["teacher_logits"]. With members the batch is [K, B, ...] and the teacher is shared."""

    def forward(variables, inputs):
        return teacher_logits(teacher, variables, inputs)

    if num_members > 1:
        forward = jax.vmap(forward, in_axes=(None, 0))

    def step(state, batch, variables):
        return step_fn(state, {**batch, "teacher_logits": forward(variables, batch["inputs"])})

    return step


def bind_teacher(train: Callable, teacher: Teacher) -> Callable:
    """The compiled 3-argument step back to the loop's train(state, batch)."""

    def step(state, batch):
        return train(state, batch, teacher.variables)

    return step
