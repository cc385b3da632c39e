"""Device mesh, batch sharding, and assembling global batches from per-process data.

The mesh has three named axes, always in this order:
- "data": pure data parallelism; params and optimizer state are replicated along it.
- "fsdp": data parallelism that also shards params, gradients and optimizer state (ZeRO-3).
- "tensor": Megatron tensor parallelism; the batch is replicated along it.
The batch is split over data x fsdp. How params map onto the axes is
jaxtrain/parallel/partitioning.py.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.errors import ConfigError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
TENSOR_AXIS = "tensor"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, TENSOR_AXIS)
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """`shape` (data, fsdp, tensor) with its one -1 replaced by the devices left over."""
    shape = tuple(int(s) for s in shape)
    where = f"config.mesh.shape={shape}"
    if len(shape) != len(MESH_AXES):
        raise ConfigError(f"{where}: needs {len(MESH_AXES)} sizes, one per axis {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ConfigError(f"{where}: at most one size may be -1 (the remaining devices)")
    if any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"{where}: sizes must be >= 1, or -1 for the remaining devices")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ConfigError(
                f"{where}: the fixed sizes multiply to {known}, which does not divide the "
                f"{num_devices} devices; pick sizes whose product divides {num_devices}"
            )
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ConfigError(
            f"{where}: {' x '.join(map(str, shape))} = {math.prod(shape)} devices but the mesh "
            f"has {num_devices} (config.num_devices); make the product match or use -1 for one axis"
        )
    return shape


def create_mesh(num_devices: int = -1, shape: Sequence[int] = (-1, 1, 1)) -> Mesh:
    """A (data, fsdp, tensor) mesh over the first `num_devices` devices (-1: all).

    Devices keep jax.devices() order (process by process), reshaped row-major: each process then
    owns a contiguous block of the batch, which is what make_array_from_process_local_data
    expects. Axes are Auto: jax.make_mesh defaults to Explicit axes, which make NNX layers ask
    for out_sharding arguments.
    """
    devices = jax.devices()
    n = len(devices) if num_devices == -1 else num_devices
    if n < 1:
        raise ConfigError(f"config.num_devices: must be -1 (all) or > 0, got {num_devices}")
    if n > len(devices):
        raise ConfigError(
            f"config.num_devices: {n} requested but only {len(devices)} devices are visible"
        )
    sizes = resolve_mesh_shape(shape, n)
    grid = np.array(devices[:n]).reshape(sizes)
    mesh = Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    check_process_rows(mesh)
    return mesh


def check_process_rows(mesh: Mesh, process_of: Callable[[Any], int] | None = None) -> None:
    """Raises ConfigError if two processes would hold the same batch rows.

    Each process reads only its own rows (make_global_batch), so the batch shards of different
    processes must not overlap: an axis that replicates the batch (tensor) must stay within one
    process. `process_of` maps a device to its process (default: device.process_index).
    """
    process_of = process_of or (lambda d: d.process_index)
    n = num_batch_shards(mesh)
    rows: dict[int, set[int]] = {}
    for device, index in batch_sharding(mesh).devices_indices_map((n,)).items():
        rows.setdefault(process_of(device), set()).add(index[0].start or 0)
    if sum(len(r) for r in rows.values()) != n:
        raise ConfigError(
            f"config.mesh.shape={tuple(mesh.shape.values())}: the tensor axis spans processes, "
            "so processes would share batch rows; keep tensor <= devices per process "
            f"({mesh.size // len(rows)}) and put the rest on data or fsdp"
        )


def _batch_axes(mesh: Mesh) -> tuple[str, ...]:
    # Meshes built elsewhere (tests, tools) may have only some of the axes.
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def num_batch_shards(mesh: Mesh) -> int:
    """How many ways the batch axis is split: data x fsdp (tensor replicates the batch)."""
    return math.prod(mesh.shape[a] for a in _batch_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over data x fsdp, replicated over tensor."""
    axes = _batch_axes(mesh)
    return NamedSharding(mesh, P(axes[0] if len(axes) == 1 else axes or None))


def check_batch_size(
    batch_size: int, mesh: Mesh, *, grad_accum_steps: int = 1, field: str = "batch_size"
) -> None:
    """Raises ConfigError unless `batch_size` splits evenly into micro-batches and shards.

    Every one of the grad_accum_steps micro-batches is itself split over data x fsdp.
    """
    shards = num_batch_shards(mesh)
    if batch_size % (shards * grad_accum_steps):
        sizes = " x ".join(f"{a}={mesh.shape[a]}" for a in _batch_axes(mesh))
        raise ConfigError(
            f"config.{field}: {batch_size} is not divisible by the batch shards ({sizes}) x "
            f"grad_accum_steps={grad_accum_steps} = {shards * grad_accum_steps}; pick a multiple "
            "or change config.mesh.shape"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def make_global_batch(
    local_batch: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array]:
    """Each process contributes its own rows; the result is one global array per key."""
    if jax.process_count() == 1:
        # The local batch is the global one: one batched device_put of the whole dict (what
        # make_array_from_process_local_data does here too, minus its per-call set-up).
        return jax.device_put(local_batch, sharding)
    return jax.make_array_from_process_local_data(sharding, local_batch)


def step_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
    """The batch as a step jitted with `sharding` as its batch in_shardings takes it.

    On one process: the host arrays themselves; the jitted call places them where its
    in_shardings say, for a fraction of jax.device_put's host time (~250 us less per step,
    benchmarks/host_overhead.py). With several processes: the global arrays.
    """
    if jax.process_count() == 1:
        return local_batch
    return make_global_batch(local_batch, sharding)
