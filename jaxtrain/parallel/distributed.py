"""Multi-process start-up: JAX's own distributed runtime, driven by config or environment.

Must run before anything touches a JAX device. On TPU VMs and under SLURM, `auto` lets JAX
discover the coordinator, process count and process id itself.
"""

import logging
import os
import socket
import time

import jax

from jaxtrain.errors import ConfigError

log = logging.getLogger(__name__)


def _from_env(value, name: str, cast):
    raw = os.environ.get(name)
    return value if raw in (None, "") else cast(raw)


def _reachable(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _announce_and_check(address: str, num_processes: int, process_id: int, timeout_s: int):
    """Fails clearly instead of inside JAX's C++ client, which aborts the process on timeout."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"config.distributed.coordinator_address: {address!r} is not host:port")
    if process_id == 0:
        # Process 0 hosts the coordinator; if the others never join, JAX aborts after the
        # timeout. Say what it is waiting for, so that abort is not a mystery.
        log.info(
            "process 0 waiting up to %ds for %d processes to join at %s",
            timeout_s,
            num_processes,
            address,
        )
    elif not _reachable(host, int(port), timeout_s):
        raise ConfigError(
            f"config.distributed: coordinator {address} unreachable from process {process_id} "
            f"within {timeout_s}s; start process 0 there or fix coordinator_address"
        )


def initialize_distributed(
    *,
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    auto: bool,
    cpu_devices_per_process: int,
    timeout_s: int,
) -> None:
    """Starts jax.distributed when asked for; a single-process run does nothing.

    Values left at their defaults fall back to $JAXTRAIN_COORDINATOR, $JAXTRAIN_NUM_PROCESSES and
    $JAXTRAIN_PROCESS_ID, so one launcher line can serve every process.
    """
    coordinator_address = coordinator_address or os.environ.get("JAXTRAIN_COORDINATOR", "")
    num_processes = _from_env(num_processes, "JAXTRAIN_NUM_PROCESSES", int)
    if process_id < 0:
        process_id = _from_env(process_id, "JAXTRAIN_PROCESS_ID", int)
    if not auto and num_processes <= 1:
        return
    if jax.distributed.is_initialized():
        return
    if cpu_devices_per_process > 0:
        # CPU-only multi-process runs (tests, laptops): fake devices and gloo collectives. Both
        # must be set before the runtime starts.
        jax.config.update("jax_num_cpu_devices", cpu_devices_per_process)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if auto:
        try:
            jax.distributed.initialize(initialization_timeout=timeout_s)
        except ValueError as e:
            raise ConfigError(
                f"config.distributed.auto: JAX found no cluster to join ({e}); auto works on "
                "TPU VMs and under SLURM, elsewhere give coordinator_address, num_processes "
                "and process_id"
            ) from e
    else:
        if not coordinator_address or not 0 <= process_id < num_processes:
            raise ConfigError(
                "config.distributed: a multi-process run needs coordinator_address (host:port) "
                f"and a process_id in [0, {num_processes}); got {coordinator_address!r}, "
                f"{process_id}"
            )
        _announce_and_check(coordinator_address, num_processes, process_id, timeout_s)
        try:
            jax.distributed.initialize(
                coordinator_address=coordinator_address,
                num_processes=num_processes,
                process_id=process_id,
                initialization_timeout=timeout_s,
            )
        except Exception as e:  # noqa: BLE001 - the runtime raises several types; name the cause
            raise ConfigError(
                f"config.distributed: could not join {coordinator_address} as process "
                f"{process_id} of {num_processes} within {timeout_s}s: {e}"
            ) from e
    log.info(
        "distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
