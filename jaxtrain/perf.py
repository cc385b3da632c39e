"""Wall-time and host CPU-time bookkeeping for the perf/ metrics of each log interval."""

import time

import numpy as np


class PerfTimer:
    """Times are host wall times. The step is asynchronous, so time blocked on data or on a
    checkpoint save is the time the loop could not dispatch work; the device may still be busy.

    `perf/host_cpu_us_per_step` is the CPU time of the loop's own thread per step, less what it
    spent inside data waits and checkpoint saves: the framework's host work per step (dispatch,
    batch assembly, bookkeeping). When it nears the step time the accelerator waits on the host.
    Background threads (input prefetch, async saves, XLA's) are not in it; on a CPU backend XLA
    may run small programs on the calling thread, so there it can include some compute.
    """

    def __init__(self, global_batch: int, tokens_per_example: int):
        self.global_batch = global_batch
        self.tokens_per_example = tokens_per_example
        self._t_last = time.perf_counter()
        self._cpu_last = time.thread_time()
        self._data, self._ckpt = _Span(), _Span()
        self._first = True

    def data_wait(self) -> "_Span":
        """`with timer.data_wait():` around waiting for the next batch."""
        return self._data

    def checkpoint_stall(self) -> "_Span":
        """`with timer.checkpoint_stall():` around a checkpoint save."""
        return self._ckpt

    def lap(self, steps: int) -> dict[str, float]:
        now, cpu = time.perf_counter(), time.thread_time()
        dt = now - self._t_last
        outside = self._data.cpu + self._ckpt.cpu
        out = {
            "perf/steps_per_sec": steps / dt,
            "perf/examples_per_sec": steps * self.global_batch / dt,
            "perf/data_wait_fraction": self._data.wall / dt,
            "perf/checkpoint_stall_s": self._ckpt.wall,
            "perf/host_cpu_us_per_step": 1e6 * (cpu - self._cpu_last - outside) / steps,
        }
        if self.tokens_per_example:
            out["perf/tokens_per_sec"] = out["perf/examples_per_sec"] * self.tokens_per_example
        if self._first:
            out["perf/first_interval_s"] = dt  # includes compiling the step
            self._first = False
        self._t_last, self._cpu_last = now, cpu
        self._data, self._ckpt = _Span(), _Span()
        return out


class _Span:
    """Sums the wall and this thread's CPU seconds spent inside `with span:` blocks (a class,
    not contextlib: it runs every step, and a generator context costs ~3x the host time)."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self._t = self._c = 0.0

    def __enter__(self) -> None:
        self._t, self._c = time.perf_counter(), time.thread_time()

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._t
        self.cpu += time.thread_time() - self._c


def tokens_per_example(input_shape: tuple[int, ...], input_dtype) -> int:
    """Sequence length for token inputs, 0 for images."""
    return int(input_shape[0]) if input_dtype == np.int32 else 0
