"""The fingerprints file, WORKDIR/fingerprints.jsonl: what `train` writes (jaxtrain/fingerprint.py
computes the values) and `diverge` reads. Needs no JAX.

One JSON record per fingerprinted step S:

    {"step": S, "leaves": {"params/dense/0/kernel": [sum, sumsq, p0, p1, p2, p3, checksum, size],
                           "grads/...": [...], "batch/inputs": [...], "opt_state/...": [...]}}

Floats are float32 values (9 significant digits, exact); checksum is a uint32; size the leaf's
number of elements.
"""

import json
import os
from typing import Any

import numpy as np

from jaxtrain.writers import read_records

FILENAME = "fingerprints.jsonl"
NUM_PROJECTIONS = 4
# One leaf's fields in a record: len(MOMENTS) float32 values, then the checksum and the size.
MOMENTS = ("sum", "sumsq", *(f"p{k}" for k in range(NUM_PROJECTIONS)))


def _json_float(v: np.float32) -> float | str:
    # 9 significant digits round-trip a float32 exactly; JSON has no NaN/Inf.
    return float(f"{v:.9g}") if np.isfinite(v) else str(float(v))


def to_record(step: int, names: list[str], moments, checksums, sizes: list[int]) -> dict:
    """One step's record from host arrays: moments [L, len(MOMENTS)], checksums [L]."""
    leaves = {
        name: [*(_json_float(v) for v in m), int(c), size]
        for name, m, c, size in zip(names, moments, checksums, sizes, strict=True)
    }
    return {"step": int(step), "leaves": leaves}


def append_record(workdir: str, record: dict[str, Any]) -> None:
    with open(os.path.join(workdir, FILENAME), "a") as f:
        f.write(json.dumps(record) + "\n")


def read_fingerprints(workdir: str) -> list[dict[str, Any]]:
    """The records of WORKDIR/fingerprints.jsonl, without a torn last line."""
    return read_records(os.path.join(workdir, FILENAME))[0]


def supersede_fingerprints(workdir: str, restored_step: int) -> None:
    """On resume, drops records after the restored step (the resumed run writes them again),
    and a torn last line (a record written after the last checkpoint, so always among them)."""
    path = os.path.join(workdir, FILENAME)
    if not os.path.exists(path):
        return
    kept = [r for r in read_fingerprints(workdir) if r["step"] <= restored_step]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)
