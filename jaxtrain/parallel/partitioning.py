"""Where every leaf of the train state lives on the mesh: logical axis names -> mesh axes.

Models annotate params with logical axis names (nnx.with_partitioning(..., eager_sharding=False),
stored as the Variable's `out_sharding` metadata), e.g. GPT's MLP up-projection is
("embed", "mlp"). `rules` (config.mesh.rules) map each logical name to a mesh axis of
jaxtrain/parallel/sharding.py ("data", "fsdp", "tensor"), or to "" to replicate that dimension.
With the default rules "embed" goes to fsdp (ZeRO-3: each device keeps 1/fsdp of every weight and
all-gathers it when used) and "heads"/"mlp"/"vocab" go to tensor (Megatron).

Conventions:
- A logical name no rule mentions is replicated (e.g. "layers" when layers are not scanned).
- A mesh axis is used at most once per param: a later dimension that maps to an axis already
  used by an earlier one is replicated.
- Unannotated params (the mlp and cnn models) get the FSDP fallback: a param with >= 2
  dimensions is split over "fsdp" along its largest dimension that fsdp divides (the first such
  on ties); 1-D params (biases, norm scales) and params with no divisible dimension stay
  replicated. So per-device memory shrinks under FSDP for any model, annotated or not.
- Optimizer state, gradient-accumulation buffers and anything else in the state that mirrors a
  param (same path below `params`, same shape) is sharded like that param; every other leaf
  (step, rng, counts, batch statistics) is replicated.
"""

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.errors import ConfigError
from jaxtrain.parallel.sharding import FSDP_AXIS, MESH_AXES

Rules = Sequence[tuple[str, str | Sequence[str]]]
MeshAxes = str | tuple[str, ...] | None  # one PartitionSpec entry


def _rule_axes(value: Any, logical: str, valid: Sequence[str]) -> tuple[str, ...]:
    """A rule's right-hand side as a tuple of mesh axes ("" or None: replicated)."""
    axes = (value,) if isinstance(value, str) or value is None else tuple(value)
    axes = tuple(a for a in axes if a)
    for a in axes:
        if a not in valid:
            raise ConfigError(
                f"config.mesh.rules: ({logical!r}, {value!r}) names mesh axis {a!r}; valid mesh "
                f"axes: {', '.join(valid)}, or '' to replicate"
            )
    return axes


def parse_rules(rules: Rules, mesh_axes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The rules as {logical name: mesh axes}; ConfigError on a malformed or unknown entry."""
    table: dict[str, tuple[str, ...]] = {}
    for rule in rules:
        if isinstance(rule, str) or len(rule) != 2:
            raise ConfigError(
                f"config.mesh.rules: entry {rule!r} is not a (logical axis, mesh axis) pair, "
                "e.g. ('embed', 'fsdp')"
            )
        logical, value = rule
        if logical in table:
            raise ConfigError(f"config.mesh.rules: logical axis {logical!r} appears twice")
        table[logical] = _rule_axes(value, logical, mesh_axes)
    return table


def logical_to_mesh_spec(
    names: Sequence[str | None], rules: Rules, mesh_axes: Sequence[str] = MESH_AXES
) -> P:
    """The PartitionSpec of a param whose dimensions carry logical `names` (None: unnamed).

    ConfigError if a rule names a mesh axis outside `mesh_axes`.
    """
    return _spec_from_table(names, parse_rules(rules, mesh_axes))


def _spec_from_table(names: Sequence[str | None], table: dict[str, tuple[str, ...]]) -> P:
    used: set[str] = set()
    entries: list[MeshAxes] = []
    for name in names:
        axes = tuple(a for a in table.get(name, ()) if a not in used) if name else ()
        used.update(axes)
        entries.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*entries)


def _entry_axes(entry: MeshAxes) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _fsdp_fallback(shape: tuple[int, ...], mesh: Mesh) -> P:
    """Largest dimension divisible by fsdp goes over fsdp; see the module docstring."""
    n = mesh.shape.get(FSDP_AXIS, 1)
    if n == 1 or len(shape) < 2:
        return P()
    candidates = [i for i, d in enumerate(shape) if d % n == 0]
    if not candidates:
        return P()
    best = max(candidates, key=lambda i: (shape[i], -i))
    return P(*[FSDP_AXIS if i == best else None for i in range(len(shape))])


def _check_divisible(path: str, shape: tuple[int, ...], spec: P, mesh: Mesh) -> None:
    for dim, (size, entry) in enumerate(zip(shape, spec, strict=False)):
        axes = _entry_axes(entry)
        ways = 1
        for a in axes:
            ways *= mesh.shape[a]
        if size % ways:
            raise ConfigError(
                f"config.mesh.rules: param {path} of shape {shape} cannot be split: dimension "
                f"{dim} ({size}) is not divisible by mesh axis {'x'.join(axes)} of size {ways}; "
                "change config.mesh.shape, map that logical axis to '' in config.mesh.rules, or "
                "resize the model"
            )


def _logical_names(var: nnx.Variable) -> tuple | None:
    meta = var.get_metadata()
    # flax 0.12 stores with_partitioning's names as out_sharding (earlier: sharding_names).
    names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
    return tuple(names) if names else None


def param_shardings(abstract_params: Any, mesh: Mesh, rules: Rules, *, fallback: bool = True):
    """A NamedSharding for every param leaf (same tree as `abstract_params`).

    fallback: apply the FSDP fallback to unannotated params (see the module docstring).
    """
    table = parse_rules(rules, mesh.axis_names)

    def one(path, var):
        where = "params" + jax.tree_util.keystr(path)
        if not isinstance(var, nnx.Variable):
            return NamedSharding(mesh, P())
        shape = tuple(var.shape)
        names = _logical_names(var)
        if names is None:
            spec = _fsdp_fallback(shape, mesh) if fallback else P()
        elif len(names) > len(shape):
            raise ValueError(f"{where}: logical names {names} do not match its shape {shape}")
        else:
            # Extra leading axes (e.g. the member axis of vmapped seeds) are unnamed: replicated.
            spec = _spec_from_table((None,) * (len(shape) - len(names)) + names, table)
        _check_divisible(where, shape, spec, mesh)
        return var.replace(NamedSharding(mesh, spec))

    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    return jax.tree_util.tree_map_with_path(one, abstract_params, is_leaf=is_var)


def _path_key(path) -> tuple[str, ...]:
    return tuple(str(k) for k in path)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules, *, fallback: bool = True):
    """NamedShardings for a whole TrainState (any pytree with a `params` field).

    Leaves that mirror a param (its path below `params` is a suffix of theirs and the shapes
    match), such as Adam's mu and nu, share that param's sharding; the rest are replicated.
    """
    shardings = param_shardings(abstract_state.params, mesh, rules, fallback=fallback)
    by_path: dict[tuple[str, ...], tuple[tuple[int, ...], NamedSharding]] = {}
    flat_params = jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
    for (path, x), s in zip(flat_params, jax.tree.leaves(shardings), strict=True):
        by_path[_path_key(path)] = (tuple(x.shape), s)
    replicated = NamedSharding(mesh, P())

    def one(path, x):
        key = _path_key(path)
        for start in range(len(key)):
            hit = by_path.get(key[start:])
            if hit is not None and hit[0] == tuple(getattr(x, "shape", ())):
                return hit[1]
        return replicated

    return jax.tree_util.tree_map_with_path(one, abstract_state)


def _without_axis(entry: MeshAxes, axis: str) -> MeshAxes:
    axes = tuple(a for a in _entry_axes(entry) if a != axis)
    return None if not axes else axes[0] if len(axes) == 1 else axes


def compute_shardings(param_shardings: Any, mesh: Mesh, *, leading_axes: int = 0) -> Any:
    """Where params are used by the step: their shardings with the fsdp axis removed (FSDP
    weights are all-gathered at use; tensor-parallel splits stay). None without an fsdp axis
    of size > 1, where params already live where they are used.

    leading_axes: spec entries to drop in front, for a step that sees params without the state's
    leading axes (a step vmapped over a member axis: leading_axes=1).
    """
    if mesh.shape.get(FSDP_AXIS, 1) == 1:
        return None

    def gathered(s: NamedSharding) -> NamedSharding:
        spec = tuple(s.spec)[leading_axes:]
        return NamedSharding(s.mesh, P(*(_without_axis(e, FSDP_AXIS) for e in spec)))

    return jax.tree.map(gathered, param_shardings)
