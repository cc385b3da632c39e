"""Early stopping on a validation metric, with patience and a minimum improvement."""

import dataclasses
from typing import Any


@dataclasses.dataclass
class EarlyStopping:
    """Counts evaluations without an improvement of more than `min_delta` over the best so far.

    The state is plain JSON, saved with every checkpoint, so a resumed run stops at the same step
    as an uninterrupted one.
    """

    mode: str  # "max" or "min"
    patience: int  # evaluations without improvement before stopping
    min_delta: float
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped: bool = False

    def update(self, step: int, value: float) -> bool:
        """Records one evaluation; returns True when training should stop."""
        gain = value - self.best if self.best is not None else float("inf")
        if self.mode == "min" and self.best is not None:
            gain = self.best - value
        if gain > self.min_delta or self.best is None:  # strict, so ties do not reset patience
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        self.stopped = self.bad_evals >= self.patience
        return self.stopped

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "EarlyStopping":
        return cls(**state)
