"""Exceptions that the CLI turns into one-line messages and documented exit codes."""

EXIT_NOT_REPRODUCED = 1  # reproduce: the result misses the experiment's EXPECTED
EXIT_DRIFT = 1  # `drift`: a statistic's PSI is above --threshold
EXIT_DIFFER = 1  # diverge: the two runs differ
EXIT_BAD_INPUT = 2  # config, command line, data or checkpoint problems
EXIT_NONFINITE = 3  # the training loss became NaN/Inf
EXIT_PREEMPTED = 4  # SIGTERM/SIGINT: a checkpoint was saved; re-run the command to continue


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and says what to do."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used; the message says which and why."""


class Preempted(Exception):
    """The run saved a checkpoint at `step` after SIGTERM/SIGINT and stopped."""

    def __init__(self, step: int):
        super().__init__(f"preempted: saved a checkpoint at step {step}; re-run to continue")
        self.step = step


class DataError(ValueError):
    """A dataset, split, file or example is unusable; the message names it."""
