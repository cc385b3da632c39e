"""LoRA fine-tuning (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

Each targeted weight W (config.finetune.lora_targets) gets two adapters, A [in, r] and B [r, out],
and the model runs with

    W' = W + (alpha / r) * reshape(A @ B, W.shape).

A starts uniform in +-1/sqrt(in) (PyTorch's Linear init, as in the reference implementation) and
B at zeros, so at step 0 the model is exactly the base model. Only the adapters and the params
named by config.finetune.trainable (e.g. a new classifier head) are trained: they are the state's
`params`, the only leaves the optimizer sees, so optimizer state exists for them alone. The
frozen base weights sit in `LoRATrainState.frozen`, outside the gradient and the optimizer.

Functional design: the step merges W' on the fly (merge_adapters) and runs the unchanged model on
the merged params. The merge costs in * out * r FLOPs per target per step (a fraction of a percent
of a BERT step); the targets' full weight gradients exist transiently inside the backward pass
(they are reduced to A's and B's gradients there), but frozen weights get no gradient at all and
no optimizer state. Evaluation, drift and export use the merged params (inference_params), so
an exported model holds plain weights. No dropout on the adapter input (it would need the
factorized forward x W + (x A) B inside every model).

Kernels with more than two axes (attention kernels [D, H, E] and [H, E, D], GPT's qkv
[D, 3, H, E]) are read as matrices [in, out]: the split is after the first axis when that axis is
the model width (logical name "embed"), otherwise before the last axis. So query [D, H, E] is
[D, H*E], attn_out [H, E, D] is [H*E, D], an embedding table [V, D] is [V, D] and a conv kernel
[h, w, c_in, c_out] is [h*w*c_in, c_out].

Patterns are fnmatch globs over param paths joined with "/", such as
"encoder/layers/0/query/kernel"; "*" also matches "/" (so "*/query/kernel" matches every layer).

Checkpoints hold the whole LoRATrainState: adapters, trainable params, their optimizer state and
the frozen base. Storing the base keeps a checkpoint self-contained (eval, export and resume need
neither the pretrained files nor a re-import, and cannot silently pick up other base weights); it
costs the base's size on disk per checkpoint.
"""

import dataclasses
import fnmatch
import math
import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxtrain.errors import ConfigError
from jaxtrain.parallel import partitioning
from jaxtrain.step import TrainState

ADAPTERS, TRAINABLE = "adapters", "trainable"  # the two parts of LoRATrainState.params
A, B = "lora_a", "lora_b"


@dataclasses.dataclass(frozen=True)
class LoRASettings:
    """config.finetune, validated."""

    rank: int  # r; 0 turns LoRA off
    alpha: float  # the update is scaled by alpha / r
    targets: tuple[str, ...]  # path patterns of the weights that get adapters
    trainable: tuple[str, ...]  # path patterns of params trained in full (e.g. a new head)

    def __post_init__(self):
        _check(self.rank >= 0, "lora_rank", f"must be >= 0 (0: off), got {self.rank}")
        if not self.enabled:
            return
        _check(self.alpha > 0, "lora_alpha", f"must be > 0, got {self.alpha}")
        _check(
            bool(self.targets),
            "lora_targets",
            "is empty; name the weights to adapt, e.g. ('*/query/kernel', '*/value/kernel')",
        )
        for field, patterns in (("lora_targets", self.targets), ("trainable", self.trainable)):
            for p in patterns:
                _check(isinstance(p, str) and p, field, f"patterns must be strings, got {p!r}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config.finetune.{field}: {message}")


def lora_settings(c: ml_collections.ConfigDict) -> LoRASettings:
    """config.finetune unpacked (and validated); raises ConfigError naming the field."""
    f = c.finetune
    return LoRASettings(
        rank=f.lora_rank,
        alpha=float(f.lora_alpha),
        targets=tuple(f.lora_targets),
        trainable=tuple(f.trainable),
    )


def _keys(path: tuple) -> tuple:
    """A jax key path as plain dict keys, without nnx's trailing .value (an attribute; a
    module named "value", like BERT's, is a dict key and stays)."""
    out = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value":
            continue
        out.append(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
    return tuple(out)


def path_name(path: tuple) -> str:
    """ "encoder/layers/0/query/kernel": the string lora_targets and trainable match."""
    return "/".join(str(k) for k in _keys(path))


def _names(params: Any) -> list[tuple[str, tuple, Any]]:
    """(name, keys, leaf) of every param, in tree order."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [(path_name(p), _keys(p), x) for p, x in flat]


def _logical_names(params: Any) -> dict[str, tuple | None]:
    """Each param's logical axis names (None when unannotated)."""
    out = {}
    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    for path, var in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_var)[0]:
        meta = var.get_metadata() if isinstance(var, nnx.Variable) else {}
        names = meta.get("out_sharding") or meta.get("sharding_names")
        out[path_name(path)] = tuple(names) if names else None
    return out


def is_matrix(name: str, shape: tuple[int, ...]) -> bool:
    """Kernels and embedding tables: >= 2 axes and not a bias or norm scale (BERT's attention
    biases are [H, E])."""
    return len(shape) >= 2 and not name.endswith(("bias", "scale"))


def matrix_split(shape: tuple[int, ...], names: tuple | None) -> int:
    """The axis where a kernel splits into [in, out] (see the module docstring)."""
    if names and names[0] == "embed":
        return 1
    return len(shape) - 1


@dataclasses.dataclass(frozen=True)
class LoRAPlan:
    """lora settings resolved against one model: which params get adapters, of what size."""

    rank: int
    scale: float
    targets: tuple[tuple[str, tuple, int, int], ...]  # (name, keys, in, out)
    trainable: tuple[str, ...]  # names of the params trained in full


def _sample(names: list[str], limit: int = 40) -> str:
    """The names with layer numbers folded into "*" ("encoder/layers/*/query/kernel")."""
    folded = list(dict.fromkeys(re.sub(r"/\d+(?=/|$)", "/*", n) for n in names))
    shown = ", ".join(folded[:limit])
    return shown + (f", ... ({len(folded)} in all)" if len(folded) > limit else "")


def _matching(patterns, names: list[str], field: str, listed: list[str]) -> set[str]:
    hits: set[str] = set()
    for p in patterns:
        found = {n for n in names if fnmatch.fnmatchcase(n, p)}
        _check(
            bool(found),
            field,
            f"pattern {p!r} matches no param of this model; the model's {listed[0]} are: "
            f"{_sample(listed[1:])}",
        )
        hits |= found
    return hits


def plan_lora(abstract_params: Any, s: LoRASettings) -> LoRAPlan:
    """Matches the patterns against the model's params (abstract is enough: no compile).

    ConfigError when a pattern matches nothing (listing the model's param names), when a target
    is not a matrix, is also trainable, or is smaller than the rank."""
    entries = _names(abstract_params)
    names = [n for n, _, _ in entries]
    matrices = [n for n, _, x in entries if is_matrix(n, x.shape)]
    targets = _matching(s.targets, names, "lora_targets", ["weight matrices", *matrices])
    trainable = _matching(s.trainable, names, "trainable", ["params", *names])
    both = sorted(targets & trainable)
    _check(not both, "trainable", f"{', '.join(both)} also match lora_targets; pick one")
    axes = _logical_names(abstract_params)
    planned = []
    for name, keys, x in entries:
        if name not in targets:
            continue
        shape = tuple(x.shape)
        _check(
            is_matrix(name, shape),
            "lora_targets",
            f"{name} (shape {shape}) is not a weight matrix; LoRA adapts kernels and embeddings "
            "(narrow the pattern, e.g. end it in /kernel, or list the param in "
            "finetune.trainable)",
        )
        k = matrix_split(shape, axes[name])
        d_in, d_out = math.prod(shape[:k]), math.prod(shape[k:])
        _check(
            s.rank <= min(d_in, d_out),
            "lora_rank",
            f"{s.rank} is larger than min(in, out) = {min(d_in, d_out)} of {name} "
            f"({shape} as [{d_in}, {d_out}]); lower the rank or drop that target",
        )
        planned.append((name, keys, d_in, d_out))
    return LoRAPlan(s.rank, s.scale, tuple(planned), tuple(sorted(trainable)))


def _nest(flat: dict[tuple, Any]) -> dict:
    out: dict = {}
    for keys, value in flat.items():
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out


def init_adapters(plan: LoRAPlan, key: jax.Array) -> dict:
    """{...path...: {"lora_a": [in, r] uniform +-1/sqrt(in), "lora_b": [r, out] zeros}}."""
    flat = {}
    for i, (_, keys, d_in, d_out) in enumerate(plan.targets):
        bound = 1.0 / math.sqrt(d_in)
        a = jax.random.uniform(
            jax.random.fold_in(key, i), (d_in, plan.rank), jnp.float32, -bound, bound
        )
        flat[keys] = {A: a, B: jnp.zeros((plan.rank, d_out), jnp.float32)}
    return _nest(flat)


def split_trainable(params: nnx.State, trainable: tuple[str, ...]) -> tuple[nnx.State, nnx.State]:
    """(the params named in `trainable`, the rest)."""
    wanted = set(trainable)
    is_trainable = lambda path, _: "/".join(str(k) for k in path) in wanted  # noqa: E731
    return nnx.split_state(params, is_trainable, ...)


def _adapter_pairs(adapters: dict) -> dict[str, tuple[jax.Array, jax.Array]]:
    """{"encoder/layers/0/query/kernel": (A, B)} from the nested adapter tree."""
    flat = {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(adapters)[0]}
    return {n[: -len(A) - 1]: (x, flat[n[: -len(A)] + B]) for n, x in flat.items() if n.endswith(A)}


def merge_adapters(frozen: nnx.State, params: dict, scale: float) -> nnx.State:
    """Plain model params: the frozen base with the trainable params put back and every
    adapted weight replaced by W + scale * reshape(A @ B); pure (usable under jit, in export
    and by other exporters). `params` is LoRATrainState.params: {"adapters", "trainable"}."""
    full = nnx.merge_state(frozen, params[TRAINABLE])
    pairs = _adapter_pairs(params[ADAPTERS])

    def one(path, w):
        ab = pairs.get(path_name(path))
        if ab is None:
            return w
        a_IxR, b_RxO = ab
        delta = (a_IxR @ b_RxO).reshape(w.shape) * scale
        return w + delta.astype(w.dtype)

    return jax.tree_util.tree_map_with_path(one, full)


@flax.struct.dataclass
class LoRATrainState(TrainState):
    """A TrainState whose `params` are {"adapters", "trainable"} (all the optimizer sees) and
    whose `frozen` holds the base weights. The model sees merge_adapters(frozen, params)."""

    frozen: nnx.State
    lora_scale: float = flax.struct.field(pytree_node=False, default=1.0)

    weights = "params+lora"  # evaluation and export use the merged weights

    def model_params(self, params: Any) -> nnx.State:
        return merge_adapters(self.frozen, params, self.lora_scale)

    def inference_params(self) -> nnx.State:
        return self.model_params(self.params)

    def with_params(self, params: nnx.State) -> "LoRATrainState":
        """New base weights (pretrained import, warm start) given as plain model params: the
        trainable ones replace `params["trainable"]`, the rest the frozen base; adapters stay.
        Every array keeps the sharding of the one it replaces."""
        names = tuple(n for n, _, _ in _names(self.params[TRAINABLE]))
        trainable, frozen = split_trainable(params, names)
        place = lambda new, old: jax.device_put(new, old.sharding)  # noqa: E731
        return self.replace(
            params={
                **self.params,
                TRAINABLE: jax.tree.map(place, trainable, self.params[TRAINABLE]),
            },
            frozen=jax.tree.map(place, frozen, self.frozen),
        )


def to_lora_state(
    state: TrainState, tx: optax.GradientTransformation, plan: LoRAPlan, seed: int
) -> LoRATrainState:
    """The LoRA state over `state`'s params (its optimizer state is dropped): adapters from
    `seed`, optimizer state for adapters and trainable params only. Meant to run under jit."""
    trainable, frozen = split_trainable(state.params, plan.trainable)
    key = jax.random.fold_in(jax.random.key(seed), 0x10A)  # apart from init's and dropout's keys
    params = {ADAPTERS: init_adapters(plan, key), TRAINABLE: trainable}
    return LoRATrainState(
        step=state.step,
        params=params,
        opt_state=tx.init(params),
        rng=state.rng,
        model_state=state.model_state,
        frozen=frozen,
        lora_scale=plan.scale,
    )


def state_shardings(abstract: LoRATrainState, mesh, rules) -> Any:
    """Like partitioning.state_shardings; the frozen base is placed by the same rules as
    params (adapters, being small and unannotated, are replicated)."""
    shardings = partitioning.state_shardings(abstract, mesh, rules)
    return shardings.replace(frozen=partitioning.param_shardings(abstract.frozen, mesh, rules))


def model_param_shardings(state_sharding: LoRATrainState) -> Any:
    """The shardings of the merged params (the model's own tree)."""
    return nnx.merge_state(state_sharding.frozen, state_sharding.params[TRAINABLE])


def count_params(state: Any) -> tuple[int, int]:
    """(trained, total) parameter counts; total counts the model's own params (the base,
    without adapters) for plain states too."""
    size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    if isinstance(state, LoRATrainState):
        return size(state.params), size(state.frozen) + size(state.params[TRAINABLE])
    return size(state.params), size(state.params)


def describe(plan: LoRAPlan, trained: int, total: int) -> str:
    """One log line: what gets adapters and how many params train."""
    names = [t[0] for t in plan.targets]
    return (
        f"LoRA rank {plan.rank} (scale {plan.scale:g}) on {len(names)} weights ({_sample(names)}); "
        f"trained in full: {', '.join(plan.trainable) or 'none'}; trainable params "
        f"{trained:,} of {total:,} ({100.0 * trained / max(total, 1):.2f}%)"
    )


def final_metrics(state: Any) -> dict[str, float]:
    """{"lora/trainable_params", "lora/model_params"} for LoRA states; {} otherwise."""
    if not isinstance(state, LoRATrainState):
        return {}
    trained, total = count_params(state)
    return {"lora/trainable_params": float(trained), "lora/model_params": float(total)}
