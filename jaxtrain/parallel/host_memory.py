"""Host memory: keep XLA:CPU's per-step buffers mapped between steps (glibc malloc settings).

Each execution of a compiled program on XLA:CPU allocates its temporaries as one block
(`posix_memalign` from one of the runtime's worker threads) and frees it at the end. glibc serves
a block that large (71 MB for the Fashion-MNIST CNN's train step at batch 128) with a fresh
`mmap` every time, because worker threads get their own malloc arenas, whose heaps cannot grow
past 64 MB, and returns it with `munmap`. So every step page-faults its whole working set in
again (the kernel zeroes each 4 KiB page): ~17,000 faults per CNN step, measured with
`/usr/bin/time` and traced to `xla::CpuDeviceMemory::AllocateInto` with gdb. On 2 cores that
was more than half of the first conv stage's time (benchmarks/RESULTS.md, "Host memory").

`keep_step_buffers_resident()` sets three malloc options so the block stays mapped: one arena
for all threads (the main one, whose heap grows with `brk` without a size cap), no `mmap` for
large blocks, and no trimming of freed memory back to the system. The process then keeps its
peak heap (what a training process needs again on the next step anyway). Arithmetic is
unchanged: only where buffers live moves, so every number stays bitwise the same.

It must run before the threads that allocate take their first block (a thread keeps the arena it
got), i.e. before JAX's CPU backend starts: `import jaxtrain` calls it. No-op off Linux/glibc.
Set JAXTRAIN_HOST_MALLOC=default to leave glibc's settings alone.
"""

import ctypes
import os
import sys

ENV_VAR = "JAXTRAIN_HOST_MALLOC"
MODES = ("keep", "default")
# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_NO_TRIM = 2**31 - 1  # mallopt takes an int: bytes of free top-of-heap memory kept, ~2 GiB

_applied: bool | None = None


def keep_step_buffers_resident() -> bool:
    """Applies the settings once per process (see the module docstring); returns whether they
    are in effect. Raises ValueError on a bad $JAXTRAIN_HOST_MALLOC."""
    global _applied
    mode = os.environ.get(ENV_VAR, "keep").strip().lower() or "keep"
    if mode not in MODES:
        raise ValueError(f"${ENV_VAR}={mode!r}: use one of {', '.join(MODES)}")
    if _applied is None:
        _applied = mode == "keep" and _set_glibc_options()
    return _applied


def _set_glibc_options() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        # glibc only: musl and others lack gnu_get_libc_version, and their mallopt differs.
        if not hasattr(libc, "gnu_get_libc_version"):
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _NO_TRIM))
    return all(mallopt(option, value) == 1 for option, value in settings)
