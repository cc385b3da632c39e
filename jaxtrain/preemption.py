"""Graceful preemption: the loop saves and exits at a step boundary instead of dying mid-step."""

import signal
import types

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """One process: records SIGTERM/SIGINT. Several: asks JAX's preemption sync point.

    With several processes JAX's distributed runtime catches SIGTERM itself, spreads the notice to
    every process and picks one safe step for all of them, so they save the same checkpoint.
    Installing our own SIGTERM handler there would hide the notice from JAX, so we don't.
    """

    def __init__(self):
        self._requested = False
        self._previous = {}
        if jax.process_count() == 1:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self._requested = True

    def should_stop(self, step: int) -> bool:
        """True when this run must save and exit after `step`."""
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
