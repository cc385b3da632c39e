"""Device mesh, shardings, and assembling global batches from per-process data."""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.config import ConfigError

DATA_AXIS = "data"


def create_mesh(num_devices: int) -> Mesh:
    """A 1-D data-parallel mesh over the first `num_devices` devices (-1: all).

    Axes are Auto: jax.make_mesh defaults to Explicit axes, which make NNX layers ask for
    out_sharding arguments.
    """
    devices = jax.devices()
    n = len(devices) if num_devices == -1 else num_devices
    if n > len(devices):
        raise ConfigError(
            f"config.num_devices: {n} requested but only {len(devices)} devices are visible"
        )
    return Mesh(np.array(devices[:n]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def make_global_batch(
    local_batch: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array]:
    """Each process contributes its own rows; the result is one global array per key."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
