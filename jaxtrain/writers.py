"""Run outputs: metrics.jsonl, TensorBoard event files, and JSON artifacts (process 0 only)."""

import json
import math
import os
from typing import Any

from tensorboardX import SummaryWriter


def _jsonable(value: Any) -> Any:
    # Python's float repr round-trips exactly, so JSONL values can be compared bitwise.
    # JSON has no NaN/Inf; write them as strings rather than emit invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricWriter:
    """Writes one JSON object per event to metrics.jsonl and scalars to TensorBoard."""

    def __init__(self, workdir: str, *, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
        self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _jsonable(float(v)) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for key, value in scalars.items():
            self._tb.add_scalar(key, float(value), global_step=int(step))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def write_json(path: str, obj: Any) -> None:
    """Writes atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """Reads metrics.jsonl back as a list of records."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def supersede_metrics(workdir: str, restored_step: int) -> None:
    """On resume, drops records the restored run will write again.

    Records after the restored step came from work that was lost, and the test evaluation is
    redone at the end; everything else is kept, so the file holds the whole run's history.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    kept = [
        r
        for r in read_metrics(workdir)
        if r["step"] <= restored_step and not any(k.startswith("test/") for k in r)
    ]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)
