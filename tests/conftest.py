"""Test setup: 8 fake CPU devices, so sharded code paths run on any machine."""

import os

# Must be set before jax initializes its backend (i.e. before any test imports jax).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
