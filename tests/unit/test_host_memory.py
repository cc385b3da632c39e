"""Host memory settings (jaxtrain/parallel/host_memory.py): XLA:CPU's per-step temporaries stay
mapped between steps instead of being page-faulted in again, and no number changes."""

import json
import os
import subprocess
import sys

import pytest

from jaxtrain.parallel import host_memory

# The gradient of the CNN's first stage at batch 128 (3x3 conv as im2col, batchnorm, relu, 2x2
# max pool): ~70 MB of temporaries, over glibc's 64 MB limit for a worker thread's heap. Prints
# page faults per call and the gradient's bytes.
_PROBE = """
import json, resource, jax, jax.numpy as jnp, numpy as np
import jaxtrain
from jaxtrain.models.conv import im2col_conv, max_pool_2x2
from jaxtrain.parallel import host_memory

def loss(w, x):
    y = im2col_conv(x, w, 1)
    y = (y - y.mean((0, 1, 2))) * jax.lax.rsqrt(y.var((0, 1, 2)) + 1e-5)
    return jnp.sum(max_pool_2x2(jax.nn.relu(y), "im2col") ** 2)

grad = jax.jit(jax.grad(loss))
w, x = jax.random.normal(jax.random.key(0), (3, 3, 1, 32)), jnp.ones((128, 28, 28, 1))
x = x * jax.random.uniform(jax.random.key(1), x.shape)
for _ in range(2):
    jax.block_until_ready(grad(w, x))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    out = jax.block_until_ready(grad(w, x))
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10

# Where glibc puts an 80 MB block that a new thread asks for: the main heap (below the program
# break) or a fresh mmap (above it).
import ctypes, threading
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes, libc.sbrk.restype = (ctypes.c_void_p,), ctypes.c_void_p
where = {}
def big_block():
    address = libc.malloc(80 << 20)
    where["in_heap"] = address < libc.sbrk(0)
    libc.free(address)
thread = threading.Thread(target=big_block)
thread.start(); thread.join()
print(json.dumps({"applied": host_memory.keep_step_buffers_resident(), "faults": faults,
                  "in_heap": where["in_heap"], "out": np.asarray(out).tobytes().hex()}))
"""


def _probe(mode: str) -> dict:
    env = {**os.environ, host_memory.ENV_VAR: mode, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_step_buffers_stay_mapped_and_numbers_do_not_change():
    keep, default = _probe("keep"), _probe("default")
    assert keep["applied"] and not default["applied"]
    # A worker thread's large block: a fresh mmap by default, the reused main heap when kept.
    assert keep["in_heap"] and not default["in_heap"]
    # Default glibc: the ~70 MB of temporaries are mmap'd and unmapped every call, ~14,500 page
    # faults (4 KiB each) a call. Kept: 0 in some runs, ~4,200 in others (smaller blocks still
    # come and go at the heap's top), never the whole working set.
    assert default["faults"] > 10_000, default
    assert keep["faults"] < default["faults"] / 2, (keep, default)
    assert keep["out"] == default["out"]  # bitwise: only where the buffers live moves


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"JAXTRAIN_HOST_MALLOC='fast': use one of keep, default"):
        host_memory.keep_step_buffers_resident()
