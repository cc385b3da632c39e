"""Builds what the loop runs from a config: the sharded train state, the compiled steps, and the
checkpointed carry around them.
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxtrain import models, optim, sharding
from jaxtrain.step import (
    StepSpec,
    TrainState,
    eval_step,
    init_train_state,
    split_model,
    train_step,
)


def resolve_data_dir(data_dir: str) -> str:
    """config.data.data_dir, else $JAXTRAIN_DATA_DIR, else ./.data/tfds."""
    return data_dir or os.environ.get("JAXTRAIN_DATA_DIR") or os.path.join(".data", "tfds")


def _make_schedule(c: ml_collections.ConfigDict) -> optax.Schedule:
    o = c.optimizer
    return optim.get_schedule(
        o.schedule,
        learning_rate=o.learning_rate,
        total_steps=c.total_steps,
        warmup_steps=o.warmup_steps,
        end_lr_factor=o.end_lr_factor,
        decay_rate=o.decay_rate,
        boundaries=tuple(o.boundaries),
        decay_steps=o.decay_steps,
        restart_period=o.restart_period,
        restart_mult=o.restart_mult,
    )


def _make_optimizer(c: ml_collections.ConfigDict, schedule: optax.Schedule):
    o = c.optimizer
    return optim.get_optimizer(
        o.name,
        schedule,
        weight_decay=o.weight_decay,
        clip_norm=o.clip_norm,
        momentum=o.momentum,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
    )


def _model_factory(c: ml_collections.ConfigDict, in_shape: tuple[int, ...]):
    m = c.model
    return functools.partial(
        models.create_model,
        m.name,
        num_classes=m.num_classes,
        init=m.init,
        norm=m.norm,
        dropout=m.dropout,
        features=tuple(m.features),
        convs_per_stage=m.convs_per_stage,
        hidden=m.hidden,
        in_shape=in_shape,
    )


def model_graphdef(c: ml_collections.ConfigDict, in_shape: tuple[int, ...]) -> nnx.GraphDef:
    """The model's static structure, built abstractly (no arrays allocated)."""
    create = _model_factory(c, in_shape)
    graphdef, _, _ = split_model(nnx.eval_shape(lambda: create(rngs=nnx.Rngs(0))))
    return graphdef


def create_state_and_steps(c: ml_collections.ConfigDict, mesh, in_shape: tuple[int, ...]):
    """Initializes the state sharded over `mesh` and compiles-on-first-call the two steps.

    Init goes eval_shape -> shardings -> jit(init, out_shardings), so params are created directly
    where they live instead of on one device first.
    """
    schedule = _make_schedule(c)
    tx = _make_optimizer(c, schedule)
    create = _model_factory(c, in_shape)
    graphdef = model_graphdef(c, in_shape)
    init = functools.partial(init_train_state, lambda rngs: create(rngs=rngs), tx, c.seed)
    abstract = jax.eval_shape(init)
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
    state = jax.jit(init, out_shardings=state_sharding)()
    spec = StepSpec(
        graphdef=graphdef,
        tx=tx,
        schedule=schedule,
        num_classes=c.model.num_classes,
        label_smoothing=c.loss.label_smoothing,
        grad_accum_steps=c.optimizer.grad_accum_steps,
    )
    data_sharding = sharding.batch_sharding(mesh)
    metrics_sharding = sharding.replicated(mesh)
    train = jax.jit(
        functools.partial(train_step, spec),
        in_shardings=(state_sharding, data_sharding),
        out_shardings=(state_sharding, metrics_sharding),
        donate_argnums=(0,),
    )
    evaluate = jax.jit(
        functools.partial(eval_step, spec),
        in_shardings=(state_sharding, data_sharding),
        out_shardings=metrics_sharding,
    )
    return state, train, evaluate


def make_carry(state: TrainState, pending: dict, pending_steps: int) -> dict[str, Any]:
    """What a checkpoint's `state` item holds: the train state and the not-yet-logged sums."""
    # Placed like the metric sums (replicated over the mesh): with several processes, orbax
    # refuses arrays that live on one process's device only.
    placement = jax.tree.leaves(pending)[0].sharding
    steps = jax.device_put(np.asarray(pending_steps, np.int32), placement)
    return {"train_state": state, "pending": pending, "pending_steps": steps}


def zero_train_metrics(train_fn, state, image_shape, batch_size, data_sharding) -> dict:
    """Zeros shaped like the step's metrics (nonfinite_step = -1 means "none yet")."""
    batch = {
        "image": jax.ShapeDtypeStruct(
            (batch_size, *image_shape), jnp.float32, sharding=data_sharding
        ),
        "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=data_sharding),
    }
    shapes = jax.eval_shape(train_fn, state, batch)[1]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    zeros["nonfinite_step"] = jnp.full((), -1, jnp.int32)
    # Placed like the step's metric outputs, so accumulating never mixes device sets.
    return jax.device_put(zeros, sharding.replicated(data_sharding.mesh))


def abstract_like(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def params_digest(state: TrainState) -> np.ndarray:
    """All params flattened to one host array, for bitwise comparisons."""
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(state.params)])
