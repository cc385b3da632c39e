"""Builds what the loop runs from a config: the sharded train state, the compiled steps, and the
checkpointed carry around them.
"""

import dataclasses
import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxtrain import batch_fit, distill, ensemble, lora, models, optim, prune
from jaxtrain.data.loader import DatasetInfo
from jaxtrain.models.pretrained import check_pretrained, import_pretrained
from jaxtrain.parallel import partitioning, sharding
from jaxtrain.step import (
    StepSpec,
    TrainState,
    accumulate_train_metrics,
    eval_step,
    init_train_state,
    split_model,
    train_step,
)
from jaxtrain.validation import warmup_steps

log = logging.getLogger(__name__)


def resolve_data_dir(data_dir: str) -> str:
    """config.data.data_dir, else $JAXTRAIN_DATA_DIR, else ./.data/tfds."""
    return data_dir or os.environ.get("JAXTRAIN_DATA_DIR") or os.path.join(".data", "tfds")


def _make_schedule(c: ml_collections.ConfigDict) -> optax.Schedule:
    o = c.optimizer
    warmup, warning = warmup_steps(c)
    if warning:
        log.warning(warning)
    return optim.get_schedule(
        o.schedule,
        learning_rate=o.learning_rate,
        total_steps=c.total_steps,
        warmup_steps=warmup,
        end_lr_factor=o.end_lr_factor,
        decay_rate=o.decay_rate,
        boundaries=tuple(o.boundaries),
        decay_steps=o.decay_steps,
        restart_period=o.restart_period,
        restart_mult=o.restart_mult,
    )


def _make_optimizer(c: ml_collections.ConfigDict, schedule: optax.Schedule):
    o = c.optimizer
    tx = optim.get_optimizer(
        o.name,
        schedule,
        weight_decay=o.weight_decay,
        clip_norm=o.clip_norm,
        momentum=o.momentum,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
    )
    pruning = prune.prune_settings(c)
    return prune.with_pruning(tx, pruning) if pruning.enabled else tx


def model_settings(c: ml_collections.ConfigDict, info: DatasetInfo):
    """config.model unpacked into its family's frozen settings, with the dataset's fields."""
    return models.settings_from_config(c.model, info)


def _model_factory(c: ml_collections.ConfigDict, info: DatasetInfo):
    """A function rngs -> model, for the configured model and the dataset it trains on."""
    return models.create_model_factory(model_settings(c, info))


def model_graphdef(c: ml_collections.ConfigDict, info: DatasetInfo) -> nnx.GraphDef:
    """The model's static structure, built abstractly (no arrays allocated)."""
    create = _model_factory(c, info)
    graphdef, _, _ = split_model(nnx.eval_shape(lambda: create(nnx.Rngs(0))))
    return graphdef


def create_state_and_steps(
    c: ml_collections.ConfigDict,
    mesh,
    info: DatasetInfo,
    class_weights: tuple[float, ...] = (),
    teacher: distill.Teacher | None = None,
):
    """Initializes the state sharded over `mesh` and compiles-on-first-call the two steps.
    `teacher` (distill.load_teacher): the train step also runs the frozen teacher and mixes in
    its soft targets."""
    state, spec, state_sharding = create_state_and_spec(c, mesh, info, class_weights, teacher)
    steps = compile_steps(c, mesh, spec, state_sharding, info=info, state=state, teacher=teacher)
    return (state, *steps)


def create_state_and_spec(
    c: ml_collections.ConfigDict,
    mesh,
    info: DatasetInfo,
    class_weights: tuple[float, ...] = (),
    teacher: distill.Teacher | None = None,
) -> tuple[TrainState, StepSpec, Any]:
    """The state sharded over `mesh`, the step's static spec and the state's shardings.

    Init goes eval_shape -> shardings -> jit(init, out_shardings), so params are created directly
    where they live instead of on one device first. With a `teacher` the spec mixes in its soft
    targets (config.distill).
    """
    schedule = _make_schedule(c)
    tx = _make_optimizer(c, schedule)
    settings = model_settings(c, info)
    # Pretrained weights against the settings the dataset filled in (vocab_size), before init
    # compiles.
    check_pretrained(getattr(settings, "pretrained", ""), c.model.name, settings)
    create = models.create_model_factory(settings)
    graphdef = model_graphdef(c, info)
    accum = c.optimizer.grad_accum_steps
    auto = accum == batch_fit.AUTO
    ema = c.optimizer.ema_decay > 0  # the state then carries the average (EMATrainState)
    sharding.check_batch_size(c.batch_size, mesh, grad_accum_steps=1 if auto else accum)
    sharding.check_batch_size(c.eval_batch_size, mesh, field="eval_batch_size")
    lora_cfg = lora.lora_settings(c)
    if lora_cfg.enabled:
        init, plan = _lora_init(c, create, tx, lora_cfg)
        abstract = jax.eval_shape(init)
        state_sharding = lora.state_shardings(abstract, mesh, tuple(c.mesh.rules))
        log.info(lora.describe(plan, *lora.count_params(abstract)))
    elif c.num_seeds == 1:
        init = functools.partial(
            init_train_state, create, tx, c.seed, rng_impl=c.dropout_rng, ema=ema
        )
        abstract = jax.eval_shape(init)
        # Params, and optimizer state mirroring them, are sharded by config.mesh.rules
        # (FSDP/TP); every sharded dimension's divisibility is checked here, before compiling.
        state_sharding = partitioning.state_shardings(abstract, mesh, tuple(c.mesh.rules))
    else:
        # K members: states stacked on a leading axis, replicated (validate_config allows only
        # data-parallel meshes here); each member is initialized exactly as its seed alone.
        seeds = ensemble.member_seeds(c.seed, c.num_seeds)
        init = ensemble.stacked_init(
            functools.partial(init_train_state, create, tx, rng_impl=c.dropout_rng, ema=ema),
            seeds,
        )
        abstract = jax.eval_shape(init)
        state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
    pruning = prune.prune_settings(c)
    if pruning.enabled:
        log.info(prune.describe(abstract.params, pruning, leading_axes=int(c.num_seeds > 1)))
    state = jax.jit(init, out_shardings=state_sharding)()
    if getattr(settings, "pretrained", ""):
        data_dir = resolve_data_dir(c.data.data_dir)
        # Into the model's own params (LoRA: the merged ones, split again by with_params).
        params = import_pretrained(
            settings.pretrained, data_dir, settings, state.inference_params()
        )
        state = state.with_params(params)
    model_shardings = (
        lora.model_param_shardings(state_sharding) if lora_cfg.enabled else state_sharding.params
    )
    spec = StepSpec(
        graphdef=graphdef,
        tx=tx,
        schedule=schedule,
        num_classes=info.num_classes,
        label_smoothing=c.loss.label_smoothing,
        grad_accum_steps=1 if auto else accum,
        class_weights=tuple(class_weights),
        param_compute_sharding=partitioning.compute_shardings(model_shardings, mesh),
        rng_impl=c.dropout_rng,
        ema_decay=c.optimizer.ema_decay,
        distill_alpha=c.distill.alpha if teacher else 0.0,
        distill_temperature=c.distill.temperature if teacher else 1.0,
    )
    return state, spec, state_sharding


def _lora_init(c: ml_collections.ConfigDict, create, tx, settings: lora.LoRASettings):
    """(init for a LoRATrainState, its plan). The base is initialized as usual (no optimizer
    state), then split into frozen weights, trained params and new adapters. The targets are
    matched against the abstract params here: a bad pattern fails before anything compiles."""
    base = functools.partial(
        init_train_state, create, optax.identity(), c.seed, rng_impl=c.dropout_rng
    )
    plan = lora.plan_lora(jax.eval_shape(base).params, settings)
    return lambda: lora.to_lora_state(base(), tx, plan, c.seed), plan


def compile_steps(
    c: ml_collections.ConfigDict,
    mesh,
    spec: StepSpec,
    state_sharding,
    *,
    info=None,
    state=None,
    teacher: distill.Teacher | None = None,
):
    """(train, evaluate): the jitted steps with explicit shardings; train donates the state.
    grad_accum_steps=auto also needs the dataset's `info` and the (abstract) `state`; a
    `teacher` runs inside the train step."""
    data_sharding = sharding.batch_sharding(mesh)
    metrics_sharding = sharding.replicated(mesh)
    step_fn = functools.partial(train_step, spec)
    eval_fn = functools.partial(eval_step, spec)
    train_data_sharding = data_sharding
    if c.num_seeds > 1:
        step_fn, eval_fn = ensemble.vmap_train_step(step_fn), ensemble.vmap_eval_step(eval_fn)
        train_data_sharding = ensemble.member_sharding(data_sharding)

    def jit_train(step):
        train_in = (state_sharding, train_data_sharding)
        if teacher is not None:
            step = distill.with_teacher(step, teacher, c.num_seeds)
            train_in = (*train_in, teacher.shardings)
        train = jax.jit(
            step,
            in_shardings=train_in,
            out_shardings=(state_sharding, metrics_sharding),
            donate_argnums=(0,),
        )
        return train if teacher is None else distill.bind_teacher(train, teacher)

    if c.optimizer.grad_accum_steps == batch_fit.AUTO:
        if info is None or state is None:
            raise ValueError("grad_accum_steps=auto: compile_steps needs info= and state=")
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
        train = _auto_accum_train(c, mesh, info, spec, jit_train, abstract, state_sharding)
    else:
        train = jit_train(step_fn)
    evaluate = jax.jit(
        eval_fn,
        in_shardings=(state_sharding, data_sharding),
        out_shardings=metrics_sharding,
    )
    return train, evaluate


def _auto_accum_train(c, mesh, info, spec, jit_train, abstract, state_sharding):
    """optimizer.grad_accum_steps=auto: the step at the fewest micro-batches that fit
    optimizer.memory_budget_gb (jaxtrain/batch_fit.py), fitted on its first call."""

    def make_step(accum: int):
        step = functools.partial(train_step, dataclasses.replace(spec, grad_accum_steps=accum))
        return jit_train(ensemble.vmap_train_step(step) if c.num_seeds > 1 else step)

    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding
    )
    data_sharding = sharding.batch_sharding(mesh)
    batch = train_batch_shapes(info, c.batch_size, data_sharding, c.num_seeds)
    candidates = batch_fit.accum_candidates(c.batch_size, sharding.num_batch_shards(mesh))
    budget = batch_fit.memory_budget(c.optimizer.memory_budget_gb, mesh.devices.flat[0])
    return batch_fit.AutoAccumStep(make_step, (state, batch), candidates, budget)


def train_batch_shapes(info: DatasetInfo, batch_size: int, data_sharding, num_members: int = 1):
    """The abstract global train batch; [K, B, ...] for an ensemble of K members."""
    if num_members > 1:
        member = ensemble.member_sharding(data_sharding)
        return ensemble.add_member_axis(info.batch_shapes(batch_size), num_members, member)
    return info.batch_shapes(batch_size, data_sharding)


def fuse_metric_sums(train_fn, state: TrainState, pending: dict, data_sharding) -> Any:
    """(state, pending, batch) -> (state, pending + this step's metrics): the train step and
    accumulate_train_metrics compiled as one program, so the loop dispatches one call per step,
    not two. The same arithmetic as calling them in turn (tested bitwise); the state is donated.

    The shardings are pinned to those `state` and `pending` already have, so the outputs feed
    the next call unchanged (no resharding, no recompilation). Only a plain jitted step is
    fused; the others keep two calls: grad_accum_steps=auto fits its step (and refits it after
    running out of memory) on the host at call time, and a distillation step closes over the
    teacher's weights, which tracing would bake into the program as constants.
    """
    if isinstance(train_fn, batch_fit.AutoAccumStep) or not hasattr(train_fn, "lower"):
        accumulate = jax.jit(accumulate_train_metrics)

        def two_calls(state, pending, batch):
            state, metrics = train_fn(state, batch)
            return state, accumulate(pending, metrics)

        return two_calls

    def step_and_sum(state, pending, batch):
        state, metrics = train_fn(state, batch)
        return state, accumulate_train_metrics(pending, metrics)

    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    pending_sharding = jax.tree.map(lambda x: x.sharding, pending)
    return jax.jit(
        step_and_sum,
        in_shardings=(state_sharding, pending_sharding, data_sharding),
        out_shardings=(state_sharding, pending_sharding),
        donate_argnums=(0,),
    )


def make_carry(state: TrainState, pending: dict, pending_steps: int) -> dict[str, Any]:
    """What a checkpoint's `state` item holds: the train state and the not-yet-logged sums."""
    # Placed like the metric sums (replicated over the mesh): with several processes, orbax
    # refuses arrays that live on one process's device only.
    placement = jax.tree.leaves(pending)[0].sharding
    steps = jax.device_put(np.asarray(pending_steps, np.int32), placement)
    return {"train_state": state, "pending": pending, "pending_steps": steps}


def zero_train_metrics(
    train_fn, state, info: DatasetInfo, batch_size, data_sharding, num_members: int = 1
) -> dict:
    """Zeros shaped like the step's metrics (nonfinite_step = -1 means "none yet")."""
    batch = train_batch_shapes(info, batch_size, data_sharding, num_members)
    shapes = jax.eval_shape(train_fn, state, batch)[1]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    zeros["nonfinite_step"] = jnp.full(zeros["loss"].shape, -1, jnp.int32)
    # Placed like the step's metric outputs, so accumulating never mixes device sets.
    return jax.device_put(zeros, sharding.replicated(data_sharding.mesh))


def abstract_like(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def params_digest(state: TrainState) -> np.ndarray:
    """All params flattened to one host array, for bitwise comparisons."""
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(state.params)])
