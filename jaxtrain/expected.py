"""What an experiment promises: `EXPECTED = Expected(...)` at the top level of an experiment file.

    EXPECTED = Expected(metric="test/accuracy", value=0.9203, tolerance=0.005,
                        hardware="2 CPU cores (x86_64), jax 0.10.2")

`python -m jaxtrain reproduce experiments/NAME.py` reruns the experiment and checks its final
metric against this (jaxtrain/tools/reproduce.py); README's results table is generated from the
declarations and the recorded runs. Plain data with no jax import, so experiment files stay cheap
to load. Every field except `check`, `unit` and `note` is required; a bad declaration raises
ConfigError when the file is loaded.
"""

import dataclasses
import math

from jaxtrain.errors import ConfigError

CHECKS = ("near", "at_most", "at_least")
# The final metrics a run reports (jaxtrain/evaluation.py), per split.
METRIC_NAMES = ("loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "perplexity",
                "bits_per_token")  # fmt: skip
SPLITS = ("validation", "test")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Expected:
    metric: str | None = None  # a final metric: "test/accuracy", "validation/loss", ...
    value: float | None = None  # the measured value (or, with at_most/at_least, the target)
    # How far a rerun may land from `value`, in the metric's units. Required: a rerun on other
    # hardware, library versions or seeds does not give bitwise the same number.
    tolerance: float | None = None
    hardware: str | None = None  # where `value` was measured (or is meant to be reached)
    # near: |x - value| <= tolerance; at_most: x <= value + tolerance (a target for a loss);
    # at_least: x >= value - tolerance.
    check: str = "near"
    unit: str = ""  # shown after the metric in the results table, e.g. "nats/char"
    note: str = ""  # shown after the experiment's name in the results table

    def __post_init__(self):
        where = f"Expected(metric={self.metric!r})"
        for field in ("metric", "value", "tolerance", "hardware"):
            if getattr(self, field) in (None, ""):
                raise ConfigError(f"{where}: {field} is required{_HINTS[field]}")
        split, _, name = self.metric.partition("/")
        if split not in SPLITS or name not in METRIC_NAMES:
            raise ConfigError(
                f"{where}: metric must be SPLIT/NAME with SPLIT in {', '.join(SPLITS)} and NAME "
                f"in {', '.join(METRIC_NAMES)}"
            )
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            raise ConfigError(f"{where}: value must be a finite number, got {self.value!r}")
        tol = self.tolerance
        if not isinstance(tol, int | float) or not math.isfinite(tol) or tol < 0:
            raise ConfigError(f"{where}: tolerance must be a finite number >= 0, got {tol!r}")
        if self.check not in CHECKS:
            raise ConfigError(f"{where}: check {self.check!r} is not one of {', '.join(CHECKS)}")

    def passes(self, measured: float) -> bool:
        """Whether a rerun's value meets the declaration (a NaN never does)."""
        if self.check == "near":
            return abs(measured - self.value) <= self.tolerance
        if self.check == "at_most":
            return measured <= self.value + self.tolerance
        return measured >= self.value - self.tolerance

    def describe(self) -> str:
        """The expectation as the results table shows it: 0.9203 ± 0.005, <= 1.6 (+ 0.02)."""
        tol = f"{self.tolerance:g}"
        if self.check == "near":
            return f"{self.value:g} ± {tol}"
        sign = "<=" if self.check == "at_most" else ">="
        return f"{sign} {self.value:g}" + (f" ({'+' if sign == '<=' else '-'} {tol})"
                                            if self.tolerance else "")  # fmt: skip


_HINTS = {
    "metric": " (a final metric such as test/accuracy or validation/loss)",
    "value": " (the measured result)",
    "tolerance": " (how far a rerun may land from value, in the metric's units; a rerun on "
    "other hardware or versions is not bitwise equal)",
    "hardware": " (where value was measured, e.g. '2 CPU cores (x86_64)')",
}
