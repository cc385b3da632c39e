"""Wall-time bookkeeping for the perf/ metrics of each log interval."""

import contextlib
import time

import numpy as np


class PerfTimer:
    """Times are host wall times. The step is asynchronous, so time blocked on data or on a
    checkpoint save is the time the loop could not dispatch work; the device may still be busy.
    """

    def __init__(self, global_batch: int, tokens_per_example: int):
        self.global_batch = global_batch
        self.tokens_per_example = tokens_per_example
        self._t_last = time.perf_counter()
        self._data = self._ckpt = 0.0
        self._first = True

    @contextlib.contextmanager
    def data_wait(self):
        t = time.perf_counter()
        yield
        self._data += time.perf_counter() - t

    @contextlib.contextmanager
    def checkpoint_stall(self):
        t = time.perf_counter()
        yield
        self._ckpt += time.perf_counter() - t

    def lap(self, steps: int) -> dict[str, float]:
        now = time.perf_counter()
        dt = now - self._t_last
        out = {
            "perf/steps_per_sec": steps / dt,
            "perf/examples_per_sec": steps * self.global_batch / dt,
            "perf/data_wait_fraction": self._data / dt,
            "perf/checkpoint_stall_s": self._ckpt,
        }
        if self.tokens_per_example:
            out["perf/tokens_per_sec"] = out["perf/examples_per_sec"] * self.tokens_per_example
        if self._first:
            out["perf/first_interval_s"] = dt  # includes compiling the step
            self._first = False
        self._t_last, self._data, self._ckpt = now, 0.0, 0.0
        return out


def tokens_per_example(input_shape: tuple[int, ...], input_dtype) -> int:
    """Sequence length for token inputs, 0 for images."""
    return int(input_shape[0]) if input_dtype == np.int32 else 0
