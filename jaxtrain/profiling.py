"""A jax.profiler trace of a window of train steps (config.profile), for TensorBoard.

`tensorboard --logdir WORKDIR/profile` (with the tensorboard-plugin-profile package) shows it
under PROFILE; the files are WORKDIR/profile/plugins/profile/RUN/HOST.xplane.pb and
HOST.trace.json.gz (Perfetto / chrome://tracing). Tracing never changes what a step computes.
"""

import logging
import os

import jax

log = logging.getLogger(__name__)


class StepTrace:
    """Traces steps start_step+1 .. start_step+num_steps (1-based, as logged) into `directory`.

    The loop calls `before_step(step)` with the number of steps done so far and
    `after_step(done, state)` after each step. A run resumed past start_step traces nothing.
    `enabled=False` (processes other than 0, or num_steps=0) makes every call a no-op.
    """

    def __init__(self, directory: str, start_step: int, num_steps: int, *, enabled: bool):
        self.directory = directory
        self.start_step = start_step
        self.stop_step = start_step + num_steps
        self.enabled = enabled and num_steps > 0
        self.active = False

    def before_step(self, step: int) -> None:
        if self.enabled and step == self.start_step:
            os.makedirs(self.directory, exist_ok=True)
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after_step(self, done: int, state) -> None:
        if self.active and done == self.stop_step:
            # Steps are dispatched asynchronously: wait for the traced ones to finish running.
            jax.block_until_ready(state)
            self.close()
            log.info(
                "profiled steps %d-%d into %s", self.start_step + 1, self.stop_step, self.directory
            )

    def close(self) -> None:
        """Stops a trace still running (the loop ended inside the window)."""
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
