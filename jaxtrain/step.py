"""The train state pytree and the pure train/eval steps.

Letters: B global batch, A gradient-accumulation micro-batches, M micro-batch size, K classes,
L sequence length, V vocabulary. Labels are [B] (classification) or [B, L] (language modeling);
"mask" has the labels' shape and weights every loss, count and metric, so padding never counts.
Packed language-modeling batches also carry "segment_ids" and "positions" [B, L], which go to the
model as keyword arguments (jaxtrain/data/packing.py).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxtrain.losses import cross_entropy, distillation_loss
from jaxtrain.metrics import confusion_matrix

Batch = dict[str, jax.Array]
PACKED_KEYS = ("segment_ids", "positions")  # batch entries passed on to the model


@flax.struct.dataclass
class TrainState:
    """Everything the step needs. `rng` is the run's base key (raw key data); per-step keys are
    folded from it with the step number, so they never depend on how the run was resumed."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    rng: jax.Array
    model_state: nnx.State  # non-parameter collections, e.g. batch statistics

    weights = "params"  # which weights inference_params() returns (a class constant, not a leaf)

    def inference_params(self) -> nnx.State:
        """The weights evaluation and export use."""
        return self.params

    def model_params(self, params: Any) -> nnx.State:
        """The model's params given the trained ones (`params` or a stand-in for them under
        grad): the same tree here; LoRA (jaxtrain/lora.py) merges its adapters into a frozen
        base."""
        return params

    def with_params(self, params: nnx.State) -> "TrainState":
        """This state with other params (warm start, pretrained import)."""
        return self.replace(params=params)


@flax.struct.dataclass
class EMATrainState(TrainState):
    """A TrainState that also holds an exponential moving average of the params
    (config.optimizer.ema_decay > 0), which evaluation and export use instead of the params.

    A class of its own rather than an optional field: a run without EMA keeps exactly the
    TrainState pytree, so its step, its numbers and its checkpoints (old ones too) are unchanged.
    Batch statistics in `model_state` are the live ones; only params are averaged."""

    ema_params: nnx.State

    weights = "ema"

    def inference_params(self) -> nnx.State:
        return self.ema_params

    def with_params(self, params: nnx.State) -> "EMATrainState":
        """New params restart the average from them (copied: the state is donated to the
        step, and one buffer must not be donated twice)."""
        return self.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """The static (non-array) parts of the step; closed over, never traced."""

    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    num_classes: int  # classification: K; language modeling: 0 (no confusion matrix)
    label_smoothing: float
    grad_accum_steps: int
    class_weights: tuple[float, ...] = ()  # per-class loss weights; () means all 1
    # FSDP: where params sit while the forward/backward uses them (gathered over "fsdp", still
    # split over "tensor"); see _forward. None: leave the layout to XLA (no fsdp axis).
    param_compute_sharding: Any = None
    # PRNG behind dropout (config.dropout_rng); state.rng holds this implementation's key words.
    rng_impl: str = "threefry2x32"
    # config.optimizer.ema_decay: > 0 updates the EMATrainState's average after every step.
    ema_decay: float = 0.0
    # Distillation (jaxtrain/distill.py adds batch["teacher_logits"]); unused without them.
    distill_alpha: float = 0.0
    distill_temperature: float = 1.0


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """Splits a model into (graphdef, params, everything else)."""
    return nnx.split(model, nnx.Param, ...)


def init_train_state(
    create_model: Callable[[nnx.Rngs], nnx.Module],
    tx: optax.GradientTransformation,
    seed: int,
    *,
    rng_impl: str = "threefry2x32",
    ema: bool = False,
) -> TrainState:
    """Builds the state from a seed. Meant to run under jit with out_shardings.

    Params are always initialized from a threefry key, so `rng_impl` (the dropout PRNG) never
    changes the initial weights; only the dropout stream is drawn from `rng_impl`. `ema`: an
    EMATrainState whose average starts at the initial params."""
    init_key, run_key = jax.random.split(jax.random.key(seed))
    if rng_impl != "threefry2x32":
        run_key = jax.random.key(jax.random.bits(run_key, (), jnp.uint32), impl=rng_impl)
    _, params, model_state = split_model(create_model(nnx.Rngs(params=init_key)))
    fields = dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(run_key),  # raw uint32 words: checkpointable as a plain array
        model_state=model_state,
    )
    if ema:
        return EMATrainState(**fields, ema_params=jax.tree.map(jnp.copy, params))
    return TrainState(**fields)


def update_ema(ema_params: nnx.State, params: nnx.State, decay: float) -> nnx.State:
    """ema <- decay * ema + (1 - decay) * params, leaf by leaf, in the params' float32."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def _forward(spec: StepSpec, params, model_state, batch: Batch, *, train: bool, dropout_key):
    if spec.param_compute_sharding is not None:
        # ZeRO-3: all-gather each weight where it is used (its transpose reduce-scatters the
        # gradient). Without this XLA follows the fsdp-split weights and splits activations
        # along their feature axis instead of the batch: all-gathers of whole-batch activations
        # and ~3x the temporaries of data parallelism.
        params = jax.lax.with_sharding_constraint(params, spec.param_compute_sharding)
    model = nnx.merge(spec.graphdef, params, model_state, copy=True)
    packed = {k: batch[k] for k in PACKED_KEYS if k in batch}
    logits = model(batch["inputs"], train=train, dropout_key=dropout_key, **packed)
    return logits, nnx.state(model, nnx.Not(nnx.Param))


def _loss_weights(spec: StepSpec, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """The mask, times the label's class weight when class weights are set."""
    if not spec.class_weights:
        return mask
    return mask * jnp.asarray(spec.class_weights, jnp.float32)[labels]


def _micro_grads(spec: StepSpec, params, model_state, batch: Batch, key, compose=None):
    """Loss gradient and stats for one micro-batch, with respect to `params`; `compose` maps
    them to the model's params (TrainState.model_params; None: they are the model's params).

    The loss is the weighted mean sum(w * l) / sum(w) (class weights as in a weighted
    cross-entropy), in float32 whatever the model's compute dtype.
    """
    labels, mask = batch["labels"], batch["mask"]
    weights = _loss_weights(spec, labels, mask)

    def loss_fn(p):
        p = p if compose is None else compose(p)
        logits, new_model_state = _forward(spec, p, model_state, batch, train=True, dropout_key=key)
        losses = cross_entropy(logits, labels, label_smoothing=spec.label_smoothing)
        if "teacher_logits" in batch:
            soft = distillation_loss(
                logits, batch["teacher_logits"], temperature=spec.distill_temperature
            )
            losses = spec.distill_alpha * soft + (1.0 - spec.distill_alpha) * losses
        loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1e-9)
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
        return loss, (new_model_state, correct)

    (loss, (model_state, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, model_state, loss, correct


def _split_micro(batch: Batch, num_micro: int) -> Batch:
    """[B, ...] -> [A, M, ...], taking examples strided by A.

    Each device holds a contiguous block of B/devices rows; striding keeps every micro-batch
    spread evenly over all devices instead of living on a few of them.
    """
    return jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]), 0, 1),
        batch,
    )


def compute_grads(spec: StepSpec, state: TrainState, batch: Batch):
    """The gradient of this step's update (averaged over micro-batches), with the new model
    state, loss and correct count; train_step's first half, also used for fingerprints."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=spec.rng_impl), state.step)
    num_micro = spec.grad_accum_steps
    if num_micro == 1:
        grads, model_state, loss, correct = _micro_grads(
            spec, state.params, state.model_state, batch, key, state.model_params
        )
    else:
        # Mean of equal-size micro-batch gradients equals the big batch's gradient.
        def body(carry, xs):
            grads_sum, ms = carry
            micro, i = xs
            g, ms, loss_i, correct_i = _micro_grads(
                spec, state.params, ms, micro, jax.random.fold_in(key, i), state.model_params
            )
            return (jax.tree.map(jnp.add, grads_sum, g), ms), (loss_i, correct_i)

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        xs = (_split_micro(batch, num_micro), jnp.arange(num_micro))
        (grads, model_state), (losses, corrects) = jax.lax.scan(
            body, (zeros, state.model_state), xs
        )
        grads = jax.tree.map(lambda g: g / num_micro, grads)
        loss, correct = jnp.mean(losses), jnp.sum(corrects)
    return grads, model_state, loss, correct


def train_step(spec: StepSpec, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    """One optimizer update on a global batch; pure. Returns (new state, flat scalar metrics)."""
    grads, model_state, loss, correct = compute_grads(spec, state, batch)
    updates, opt_state = spec.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": correct / jnp.maximum(jnp.sum(batch["mask"]), 1.0),
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": spec.schedule(state.step),
        # -1 while finite; otherwise this step, so the loop can name the first bad step.
        "nonfinite_step": jnp.where(jnp.isfinite(loss), -1, state.step),
    }
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
    )
    if spec.ema_decay > 0:
        new_state = new_state.replace(
            ema_params=update_ema(state.ema_params, params, spec.ema_decay)
        )
    return new_state, metrics


def accumulate_train_metrics(total: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Sums metrics between log steps on device; keeps the first non-finite step."""
    out = {k: total[k] + new[k] for k in new if k != "nonfinite_step"}
    first = total["nonfinite_step"]
    out["nonfinite_step"] = jnp.where(first >= 0, first, new["nonfinite_step"])
    return out


def eval_step(spec: StepSpec, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Masked sums for one (possibly padded) batch: loss and count, plus the confusion matrix
    (classification) or the correct-token count (language modeling). With EMA, of the
    averaged weights."""
    logits, _ = _forward(
        spec,
        state.inference_params(),
        state.model_state,
        batch,
        train=False,
        dropout_key=jax.random.wrap_key_data(state.rng, impl=spec.rng_impl),
    )
    labels, mask = batch["labels"], batch["mask"]
    losses = cross_entropy(logits, labels, label_smoothing=0.0)
    preds = jnp.argmax(logits, -1)
    out = {"loss_sum": jnp.sum(losses * mask), "count": jnp.sum(mask)}
    if spec.num_classes:
        out["confusion"] = confusion_matrix(labels, preds, mask, spec.num_classes)
    else:
        out["correct"] = jnp.sum((preds == labels) * mask)
    return out
