"""The hand-written loop that `bench` times beside jaxtrain's: the same model, batch, loss and
AdamW in a minimal donated `jax.jit` step, fed from batches held in RAM. jaxtrain / hand is the
framework's overhead (jaxtrain/tools/bench.py)."""

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxtrain import data as data_lib
from jaxtrain import models
from jaxtrain.build import model_settings
from jaxtrain.data.loader import DatasetInfo
from jaxtrain.errors import ConfigError
from jaxtrain.parallel import sharding
from jaxtrain.train import data_options

PRELOADED_BATCHES = 32  # cycled by the hand loop; distinct enough that caching cannot flatter it
HAND_WARMUP_STEPS = 10  # compiles on the first repeat; afterwards just settles the caches


def hand_optimizer(c: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """optax.adamw (after global-norm clipping when optimizer.clip_norm > 0) with the config's
    hyperparameters and schedule, built on optax directly (no jaxtrain.optim)."""
    o = c.optimizer
    unsupported = {
        "optimizer.name": o.name != "adamw",
        "optimizer.schedule": o.schedule not in ("cosine", "warmup_cosine"),
        "optimizer.grad_accum_steps": o.grad_accum_steps != 1,
        "loss.class_weighting": c.loss.class_weighting != "none",
    }
    for field, bad in unsupported.items():
        if bad:
            raise ConfigError(f"config.{field}: the hand-written loop only does AdamW (+ clip)")
    # decay_steps counts the warm-up too: jaxtrain's warm-up + cosine over the rest.
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, o.learning_rate, o.warmup_steps, c.total_steps, o.learning_rate * o.end_lr_factor
    )
    adamw = optax.adamw(
        schedule,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        weight_decay=o.weight_decay,
        mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),  # kernels only
    )
    return optax.chain(optax.clip_by_global_norm(o.clip_norm), adamw) if o.clip_norm else adamw


def make_hand_loop(c: ml_collections.ConfigDict, info: DatasetInfo, mesh):
    """((init, step), "") or (None, why not). init() -> carry; step(carry, batch) -> (carry,
    loss); batches are split over `mesh` like jaxtrain's, the carry is replicated."""
    if mesh.size != sharding.num_batch_shards(mesh) or c.num_seeds != 1:
        return None, "the hand loop trains one model data-parallel (no fsdp/tensor/num_seeds)"
    if c.data.packing != "none":
        return None, "the hand loop reads plain LM windows (data.packing=none)"
    try:
        tx = hand_optimizer(c)
    except ConfigError as e:
        return None, str(e)
    create = models.create_model_factory(model_settings(c, info))
    graphdef, _, _ = nnx.split(nnx.eval_shape(lambda: create(nnx.Rngs(0))), nnx.Param, ...)
    seed, smoothing = c.seed, c.loss.label_smoothing

    def init():
        _, params, rest = nnx.split(create(nnx.Rngs(seed)), nnx.Param, ...)
        return params, rest, tx.init(params), jnp.zeros((), jnp.int32)

    def step(carry, batch):
        params, rest, opt_state, i = carry
        dropout_key = jax.random.fold_in(jax.random.key(seed), i)
        labels, mask = batch["labels"], batch["mask"]

        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            logits = model(batch["inputs"], train=True, dropout_key=dropout_key)
            logits = logits.astype(jnp.float32)
            if smoothing > 0:
                targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
                losses = optax.softmax_cross_entropy(logits, targets)
            else:
                losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            loss = jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)
            return loss, nnx.state(model, nnx.Not(nnx.Param))  # e.g. new batchnorm statistics

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state, i + 1), loss

    replicated = sharding.replicated(mesh)
    jit_step = jax.jit(
        step,
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    return (jax.jit(init, out_shardings=replicated), jit_step), ""


def preload_batches(c: ml_collections.ConfigDict, info: DatasetInfo) -> list[dict[str, Any]]:
    """The first PRELOADED_BATCHES batches of jaxtrain's own train iterator, held in RAM."""
    it = data_lib.create_train_iterator(
        data_options(c), global_batch_size=c.batch_size, num_classes=info.num_classes
    )
    return [next(it) for _ in range(PRELOADED_BATCHES)]


class HandTiming(NamedTuple):
    steps_per_sec: float
    cpu_us_per_step: float  # CPU time of the calling thread, as perf/host_cpu_us_per_step


def time_hand_loop(
    init, step, batches: list, steps: int, mesh, *, device_put: bool = False
) -> HandTiming:
    """Steps/s of `steps` steps after a warm-up, until the last result is ready.

    The host batches go straight into the jitted step, whose in_shardings place them (as
    jaxtrain's loop does on one process); `device_put` places each with jax.device_put first,
    the other common idiom (~250 us more host time per step). One process only.
    """
    data_sharding = sharding.batch_sharding(mesh)
    carry = init()
    for i in range(HAND_WARMUP_STEPS + steps):
        if i == HAND_WARMUP_STEPS:
            jax.block_until_ready(carry)
            start, cpu = time.perf_counter(), time.thread_time()
        batch = batches[i % len(batches)]
        carry, loss = step(carry, jax.device_put(batch, data_sharding) if device_put else batch)
    jax.block_until_ready(carry)
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    if not np.isfinite(float(loss)):
        raise FloatingPointError("the hand-written loop diverged; its timing would be meaningless")
    return HandTiming(steps / seconds, 1e6 * cpu / steps)
