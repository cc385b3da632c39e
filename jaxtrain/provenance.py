"""Where a run came from: code version, packages, devices and command line."""

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from typing import Any

import jax

import jaxtrain

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "tensorflow-datasets",
    "grain",
    "tokenizers",
    "chex",
    "ml_collections",
    "numpy",
)


def _git(*args: str) -> str | None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(jaxtrain.__file__)))
    try:
        out = subprocess.run(
            ["git", "-C", repo, *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_provenance(mesh_shape: dict[str, int]) -> dict[str, Any]:
    """A JSON-able record of the code, environment and hardware of this run."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    devices = jax.devices()
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "jaxtrain_version": jaxtrain.__version__,
        "packages": {name: _version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device_kind": devices[0].device_kind,
        "platform_name": devices[0].platform,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "mesh_shape": mesh_shape,
        "command": sys.argv,
        "start_time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
