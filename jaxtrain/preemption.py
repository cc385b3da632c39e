"""Graceful preemption: SIGTERM/SIGINT ask the loop to save and exit at the next step boundary."""

import signal
import types

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Records SIGTERM/SIGINT instead of dying mid-step; restores old handlers on close()."""

    def __init__(self):
        self._requested = False
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self._requested = True

    def should_stop(self, step: int) -> bool:
        """True when this run must save and exit after `step`.

        With several processes, JAX's preemption sync point makes all of them agree on the same
        step, so every process saves the same checkpoint.
        """
        if jax.process_count() > 1:
            return self._requested or multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
