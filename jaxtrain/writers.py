"""Run outputs: metrics.jsonl, TensorBoard event files, and JSON artifacts (process 0 only)."""

import json
import logging
import math
import os
import shutil
from typing import Any

from tensorboardX import SummaryWriter

from jaxtrain.errors import CheckpointError

log = logging.getLogger(__name__)


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
    """Reads metrics.jsonl back as a list of records, without a torn last line (see below)."""
    return _parse_metrics(os.path.join(workdir, "metrics.jsonl"))[0]


def read_records(path: str) -> tuple[list[dict[str, Any]], str]:
    """Any {"step": N, ...} JSONL file's records and its torn last line; see _parse_metrics."""
    return _parse_metrics(path)


def check_metrics(workdir: str) -> None:
    """Raises CheckpointError now if metrics.jsonl could not be resumed (see _parse_metrics)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        _parse_metrics(path)


def _parse_metrics(path: str) -> tuple[list[dict[str, Any]], str]:
    """The records and the torn last line ("" if none).

    A kill during a write can leave the last line cut short; that line is the one record the
    killed run had not finished, so it is reported, not fatal. Any other bad line means the
    file was edited or damaged otherwise: CheckpointError naming the line.
    """
    with open(path) as f:
        lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            record = json.loads(line)
            if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
                raise ValueError("not a {'step': N, ...} record")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            if i == lines[-1][0]:
                return records, line
            raise CheckpointError(
                f"{path} line {i} is not a metrics record ({e}); remove or fix that line, "
                "then re-run"
            ) from e
        records.append(record)
    return records, ""


def supersede_metrics(workdir: str, restored_step: int, *, backup: str = "") -> None:
    """On resume, drops records the restored run will write again.

    Records after the restored step came from work that was lost, and the test evaluation is
    redone at the end; everything else is kept, so the file holds the whole run's history. A
    torn last line (a kill during a write) is appended to metrics.jsonl.torn with a warning.
    `backup`: also keep the file as it was at this path.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    records, torn = _parse_metrics(path)
    if backup:
        shutil.copyfile(path, backup)
    if torn:
        with open(f"{path}.torn", "a") as f:
            f.write(torn if torn.endswith("\n") else f"{torn}\n")
        log.warning(
            "the last line of %s is torn (%d characters, a kill during a write?); moved it to "
            "%s.torn and resuming",
            path,
            len(torn.rstrip("\n")),
            path,
        )
    kept = [
        r
        for r in records
        if r["step"] <= restored_step and not any(k.startswith("test/") for k in r)
    ]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)
