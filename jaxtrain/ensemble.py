"""Many seeds in one program: K independent models trained at once with `jax.vmap`.

With `config.num_seeds = K > 1`, member k is the run that `config.seed = seed + k` would be on its
own: its own init, dropout keys and data order (its own train iterator). The train state gets a
leading member axis [K, ...]; the train step is vmapped over (state, batch) and the eval step
over the state with one shared eval batch. Metrics come back per member and are summarised as
mean, std and `.../seed_S` values, so a sweep over seeds costs one compile and one loop.

Letters: K members.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def member_seeds(seed: int, num_seeds: int) -> list[int]:
    return [seed + k for k in range(num_seeds)]


def stacked_init(init_for_seed: Callable[[jax.Array], Any], seeds: list[int]) -> Callable[[], Any]:
    """A zero-argument init building all members' states at once (vmapped over the seed)."""
    return lambda: jax.vmap(init_for_seed)(jnp.asarray(seeds, jnp.int32))


def vmap_train_step(step: Callable) -> Callable:
    """(state_K, batch_K) -> (state_K, metrics_K): every member on its own batch."""
    return jax.vmap(step)


def vmap_eval_step(step: Callable) -> Callable:
    """(state_K, batch) -> metrics_K: every member on the same eval batch."""
    return jax.vmap(step, in_axes=(0, None))


def member_sharding(batch_sharding: NamedSharding) -> NamedSharding:
    """[K, B, ...] batches: the member axis whole on every device, B split as usual."""
    return NamedSharding(batch_sharding.mesh, P(None, *batch_sharding.spec))


def add_member_axis(shapes: Any, num_members: int, sharding: NamedSharding) -> Any:
    """ShapeDtypeStructs [B, ...] -> [K, B, ...] with the member sharding."""
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((num_members, *s.shape), s.dtype, sharding=sharding),
        shapes,
    )


class MemberIterators:
    """K train iterators (one per member seed) yielding stacked [K, b, ...] batches.

    Checkpointable like a single grain iterator: the state is the list of member states.
    """

    def __init__(self, iterators: list[Any]):
        self._iterators = iterators

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batches = [next(it) for it in self._iterators]
        return {k: np.stack([b[k] for b in batches]) for k in batches[0]}

    def get_state(self) -> dict[str, Any]:
        return {"members": [it.get_state() for it in self._iterators]}

    def set_state(self, state: dict[str, Any]) -> None:
        members = state.get("members") if isinstance(state, dict) else None
        if not isinstance(members, list) or len(members) != len(self._iterators):
            raise ValueError(
                f"data-iterator state holds {len(members or [])} members, expected "
                f"{len(self._iterators)}: the checkpoint was written with another num_seeds"
            )
        for it, s in zip(self._iterators, members, strict=True):
            it.set_state(s)


def summarize_members(
    per_member: list[dict[str, float]], seeds: list[int], prefix_keys: tuple[str, ...] = ()
) -> dict[str, float]:
    """{key: mean, key_std: std, key/seed_S: value} from each member's scalars."""
    out: dict[str, float] = {}
    for key in per_member[0]:
        values = np.asarray([m[key] for m in per_member], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
        for seed, v in zip(seeds, values, strict=True):
            out[f"{key}/seed_{seed}"] = float(v)
    return out


def split_members(tree: Any, num_members: int) -> list[Any]:
    """[K, ...] host arrays -> K trees of [...] arrays."""
    return [jax.tree.map(functools.partial(_take, k=k), tree) for k in range(num_members)]


def _take(x: Any, k: int) -> Any:
    return np.asarray(x)[k]
