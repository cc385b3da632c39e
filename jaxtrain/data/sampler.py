"""Index batches: which examples each global batch holds, and which rows are this process's.

Every process computes the same global batches of example indices and keeps only its own rows,
so the global batch at every step is the same for any number of processes (1 process x 8
devices trains exactly like 2 processes x 4 devices). The grain iterator's position in these
index batches is what a checkpoint stores, so a resumed run reads the same batches.
"""

import grain
import numpy as np

from jaxtrain.errors import DataError

SAMPLINGS = ("uniform", "balanced")


def local_batch_size(global_batch_size: int, *, process_index: int, process_count: int) -> int:
    """Rows per process; fails unless the batch splits evenly over valid process indices."""
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index {process_index} not in [0, process_count={process_count})")
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise DataError(
            f"global batch_size {global_batch_size} must be positive and divisible by "
            f"process_count {process_count}"
        )
    return global_batch_size // process_count


def train_index_batches(
    num_examples: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    balance_labels: np.ndarray | None = None,
    where: str = "",
) -> grain.MapDataset:
    """Infinite global batches of example indices (drop_remainder), this process's rows of each.

    Uniform (balance_labels None): one seeded permutation of the examples per epoch. Balanced
    (balance_labels: the class of every example): every position draws a class uniformly, then
    one of its examples uniformly, with replacement; deterministic per position from `seed`.
    """
    rows = local_batch_size(
        global_batch_size, process_index=process_index, process_count=process_count
    )
    if balance_labels is None:
        ds = grain.MapDataset.range(num_examples).shuffle(seed=seed).repeat(None)
    else:
        pick = _BalancedPick(balance_labels, where)
        ds = grain.MapDataset.range(num_examples).repeat(None).random_map(pick, seed=seed)
    ds = ds.batch(global_batch_size, drop_remainder=True)
    return ds.map(_ProcessRows(process_index * rows, rows))


def eval_index_batches(
    num_examples: int, *, global_batch_size: int, process_index: int, process_count: int
) -> grain.MapDataset:
    """One ordered pass, padded to whole global batches; indices >= num_examples are padding.

    Strided sharding: process p reads padded rows p, p + P, ...; each row is read exactly once,
    and every process yields the same number of batches, so eval collectives line up.
    """
    rows = local_batch_size(
        global_batch_size, process_index=process_index, process_count=process_count
    )
    num_batches = -(-num_examples // global_batch_size)
    padded = grain.MapDataset.range(num_batches * global_batch_size)
    return padded[process_index::process_count].batch(rows, drop_remainder=True)


class _ProcessRows(grain.transforms.Map):
    """Global index batch -> this process's contiguous rows of it."""

    def __init__(self, start: int, size: int):
        self._rows = slice(start, start + size)

    def map(self, indices: np.ndarray) -> np.ndarray:
        return indices[self._rows]


class _BalancedPick(grain.transforms.RandomMap):
    """Position -> an example index: a uniformly drawn class, then a uniform example of it."""

    def __init__(self, labels: np.ndarray, where: str):
        classes = np.unique(labels)
        self._by_class = [np.flatnonzero(labels == k) for k in classes]
        if len(classes) < 2:
            raise DataError(f"{where}: balanced sampling needs at least two classes")

    def random_map(self, element: int, rng: np.random.Generator) -> int:
        members = self._by_class[rng.integers(len(self._by_class))]
        return int(members[rng.integers(len(members))])
