"""`jaxtrain diverge RUN_A RUN_B`: the first step where two runs differ, the leaves that differ
first, and the config and provenance differences that may explain it.

Reads each run's config.json, provenance.json and fingerprints.jsonl
(jaxtrain/fingerprint_records.py); imports no JAX and reads no checkpoint. A leaf differs when
its bit checksum differs; how much it differs is estimated from its float moments
(`leaf_difference`).
"""

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from jaxtrain.errors import DataError
from jaxtrain.fingerprint_records import FILENAME, MOMENTS, read_fingerprints

# Causal order inside one record: the key and step counter, the batch and gradient of the
# update, then the state it produced.
CATEGORIES = ("step", "rng", "batch", "grads", "params", "opt_state", "model_state")
# A first difference no larger than this (relative) is rounding: a different reduction order,
# such as another device count, not a different computation.
FLOAT_LEVEL = 1e-4
# Provenance fields that differ between any two runs and say nothing about their numbers.
IGNORED_PROVENANCE = ("command", "start_time_utc")
LEAVES_SHOWN = 8  # per category in the text report


@dataclasses.dataclass(frozen=True)
class Run:
    path: str
    config: dict[str, Any]
    provenance: dict[str, Any]
    fingerprints: dict[int, dict[str, list]]  # step -> leaf name -> fingerprint

    @property
    def every(self) -> Any:
        return self.config.get("fingerprint_every", "?")


@dataclasses.dataclass(frozen=True)
class LeafDiff:
    name: str
    delta: float  # estimated ||a - b||; inf when the leaves cannot be compared
    scale: float  # max(||a||, ||b||)
    note: str = ""  # "only in RUN_A", "size 2 vs 4"

    @property
    def rel(self) -> float:
        return _ratio(self.delta, self.scale)


@dataclasses.dataclass(frozen=True)
class StepDiff:
    """The leaves of one step's records that differ (bitwise), in causal order."""

    step: int
    leaves: list[LeafDiff]
    scales: dict[str, float]  # category -> root sum of squares of all its leaves' norms

    def categories(self) -> list[str]:
        return list(dict.fromkeys(_category(d.name) for d in self.leaves))

    def in_category(self, category: str) -> list[LeafDiff]:
        return [d for d in self.leaves if _category(d.name) == category]

    def category_rel(self, category: str) -> float:
        """The whole category's estimated relative difference (e.g. all of the gradient)."""
        deltas = [d.delta for d in self.in_category(category)]
        return _ratio(math.sqrt(sum(x * x for x in deltas)), self.scales.get(category, 0.0))


@dataclasses.dataclass(frozen=True)
class Divergence:
    a: Run
    b: Run
    common: list[int]  # steps fingerprinted in both runs
    config_diffs: list[tuple[str, Any, Any]]
    provenance_diffs: list[tuple[str, Any, Any]]
    first: StepDiff | None  # the first common step with a difference; None: identical
    last: StepDiff  # the last common step
    first_by_category: dict[str, int]  # category -> the first common step it differs at
    verdict: str  # "identical", "float-level" or "differ"


# --- reading runs ------------------------------------------------------------------------------


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the run's {what} ({e})") from e
    if not isinstance(value, dict):
        raise DataError(f"{path}: the run's {what} is not a JSON object")
    return value


def load_run(path: str, label: str) -> Run:
    """A run's config, provenance and fingerprints; DataError naming the run and what is
    missing. `label` ("RUN_A") names the argument in messages."""
    if not os.path.isdir(path):
        raise DataError(f"{label} {path}: no such directory")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise DataError(
            f"{label} {path} is not a jaxtrain run (no config.json); give the --workdir of a "
            "`train` run"
        )
    config = _read_json(os.path.join(path, "config.json"), "config")
    prov_path = os.path.join(path, "provenance.json")
    provenance = _read_json(prov_path, "provenance") if os.path.exists(prov_path) else {}
    records = read_fingerprints(path) if os.path.exists(os.path.join(path, FILENAME)) else []
    if not records:
        every = config.get("fingerprint_every", 0)
        raise DataError(
            f"{label} {path} has no fingerprints ({FILENAME}; it trained with "
            f"fingerprint_every={every}). Train it again in a new workdir with "
            "--config.fingerprint_every=N (fingerprints change no number of a run), then compare"
        )
    fingerprints = {}
    for r in records:
        if not isinstance(r.get("leaves"), dict):
            raise DataError(f"{path}/{FILENAME}: the step-{r['step']} record has no leaves")
        fingerprints[r["step"]] = r["leaves"]
    return Run(path, config, provenance, fingerprints)


# --- comparing ---------------------------------------------------------------------------------


def _moments(fp: list) -> np.ndarray:
    return np.asarray([float(v) for v in fp[: len(MOMENTS)]], np.float64)


def _ratio(delta: float, scale: float) -> float:
    if math.isnan(delta) or math.isinf(delta):
        return math.inf
    return delta / scale if scale > 0 else (0.0 if delta == 0 else math.inf)


def leaf_difference(fp_a: list, fp_b: list) -> tuple[float, float]:
    """(estimated ||a - b||, max(||a||, ||b||)) from two leaves' fingerprints.

    Each projection difference p_k(a) - p_k(b) = <a - b, s_k>, with s_k random signs, has mean
    0 and variance ||a - b||^2, so their root mean square estimates ||a - b|| (unbiased in its
    square; between 0.2x and 1.8x in 120 random trials); | ||a|| - ||b|| | is a sure lower
    bound. Both carry the float32 rounding of the sums, ~1e-7 relative. inf when a moment is
    not finite.
    """
    ma, mb = _moments(fp_a), _moments(fp_b)
    if not (np.all(np.isfinite(ma)) and np.all(np.isfinite(mb))):
        return math.inf, math.inf
    norm_a, norm_b = math.sqrt(max(ma[1], 0.0)), math.sqrt(max(mb[1], 0.0))
    projected = math.sqrt(float(np.mean((ma[2:] - mb[2:]) ** 2)))
    return max(projected, abs(norm_a - norm_b)), max(norm_a, norm_b)


def _checksum(fp: list) -> int:
    return fp[len(MOMENTS)]


def _size(fp: list) -> int:
    return fp[len(MOMENTS) + 1]


def _norm(fp: list) -> float:
    return math.sqrt(max(_moments(fp)[1], 0.0))


def compare_records(step: int, a: dict[str, list], b: dict[str, list]) -> StepDiff:
    """The leaves of two records that differ, bitwise by checksum, in causal order."""
    order = {name: i for i, name in enumerate([*a, *(n for n in b if n not in a)])}
    diffs, squares = [], {}
    for name in sorted(order, key=lambda n: (_category_rank(n), order[n])):
        category = _category(name)
        if name not in b or name not in a:
            where = "RUN_A" if name in a else "RUN_B"
            diffs.append(LeafDiff(name, math.inf, 0.0, f"only in {where}"))
            continue
        squares[category] = squares.get(category, 0.0) + max(_norm(a[name]), _norm(b[name])) ** 2
        if _size(a[name]) != _size(b[name]):
            note = f"size {_size(a[name])} vs {_size(b[name])}"
            diffs.append(LeafDiff(name, math.inf, 0.0, note))
        elif _checksum(a[name]) != _checksum(b[name]):
            diffs.append(LeafDiff(name, *leaf_difference(a[name], b[name])))
    return StepDiff(step, diffs, {k: math.sqrt(v) for k, v in squares.items()})


def _category(name: str) -> str:
    return name.split("/", 1)[0]


def _category_rank(name: str) -> int:
    category = _category(name)
    return CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES)


def flat_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flat_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dict_differences(
    a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf that differs; absent is None."""
    fa, fb = flat_dict(a), flat_dict(b)
    keys = sorted(k for k in set(fa) | set(fb) if k.split(".")[0] not in ignore)
    return [(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)]


def diverge(path_a: str, path_b: str) -> Divergence:
    """Compares two runs' fingerprints at the steps both have."""
    a, b = load_run(path_a, "RUN_A"), load_run(path_b, "RUN_B")
    common = sorted(set(a.fingerprints) & set(b.fingerprints))
    if not common:
        raise DataError(
            f"no step is fingerprinted in both runs: RUN_A has steps {_span(a)}, RUN_B "
            f"{_span(b)}; train them with fingerprint_every values that share steps"
        )
    first, first_by_category = None, {}
    for step in common:
        diff = compare_records(step, a.fingerprints[step], b.fingerprints[step])
        for category in diff.categories():
            first_by_category.setdefault(category, step)
        if diff.leaves and first is None:
            first = diff
    return Divergence(
        a=a,
        b=b,
        common=common,
        config_diffs=dict_differences(a.config, b.config),
        provenance_diffs=dict_differences(a.provenance, b.provenance, IGNORED_PROVENANCE),
        first=first,
        last=diff,
        first_by_category=first_by_category,
        verdict=_verdict(first),
    )


def _verdict(first: StepDiff | None) -> str:
    """float-level: where the runs first differ, the earliest part in causal order (e.g. the
    gradient, before the update that amplifies it) differs by rounding only."""
    if first is None:
        return "identical"
    origin = first.categories()[0]
    return "float-level" if first.category_rel(origin) <= FLOAT_LEVEL else "differ"


# --- reporting ---------------------------------------------------------------------------------


def _span(run: Run) -> str:
    steps = sorted(run.fingerprints)
    if len(steps) == 1:
        return f"{steps[0]} (fingerprint_every={run.every})"
    return f"{steps[0]}..{steps[-1]}, {len(steps)} records (fingerprint_every={run.every})"


def _rel(value: float) -> str:
    return "not comparable" if math.isinf(value) else f"~{value:.2g}"


def _diff_lines(diff: StepDiff, *, leaves: bool = True) -> list[str]:
    """Per category: how many leaves differ and by how much; with `leaves`, which."""
    lines = []
    for category in diff.categories():
        group = diff.in_category(category)
        rel = diff.category_rel(category)
        size = "not comparable" if math.isinf(rel) else f"all of {category} by {_rel(rel)}"
        lines.append(f"  {category}: {len(group)} differing, {size}")
        shown = group[:LEAVES_SHOWN] if leaves else []
        lines += [f"    {d.name}: {d.note or _rel(d.rel)}" for d in shown]
        if len(group) > len(shown) and leaves:
            lines.append(f"    ... and {len(group) - LEAVES_SHOWN} more")
    return lines


def _value_lines(title: str, diffs: list[tuple[str, Any, Any]]) -> list[str]:
    if not diffs:
        return [f"{title}: none"]
    return [f"{title} ({len(diffs)}):"] + [f"  {k}: {va!r} vs {vb!r}" for k, va, vb in diffs]


def format_report(d: Divergence) -> str:
    """The text `jaxtrain diverge` prints."""
    lines = [f"RUN_A {d.a.path}: steps {_span(d.a)}", f"RUN_B {d.b.path}: steps {_span(d.b)}"]
    if set(d.a.fingerprints) != set(d.b.fingerprints):
        lines.append(f"compared the {len(d.common)} steps fingerprinted in both runs")
    lines += _value_lines("config differences", d.config_diffs)
    lines += _value_lines("provenance differences", d.provenance_diffs)
    last = d.common[-1]
    if d.first is None:
        lines.append(f"identical through step {last} ({len(d.common)} steps compared bitwise)")
        return "\n".join(lines)
    step = d.first.step
    before = [s for s in d.common if s < step]
    since = f"; identical through step {before[-1]}" if before else ""
    lines.append(f"first difference at step {step}{since}; the leaves that differ (relative):")
    lines += _diff_lines(d.first)
    firsts = ", ".join(f"{c} at {s}" for c, s in d.first_by_category.items())
    lines.append(f"first difference per category: {firsts}")
    if last != step:
        lines.append(f"at the last common step {last}:")
        lines += _diff_lines(d.last, leaves=False) or ["  identical again"]
    origin = d.first.categories()[0]
    leaf = d.first.in_category(origin)[0]
    rel = d.first.category_rel(origin)
    size = f"{leaf.name}: {leaf.note}" if leaf.note else f"{origin} differs by {_rel(rel)}"
    if d.verdict == "float-level":
        lines.append(
            f"float-level differences from step {step} ({size}: rounding, such as another "
            "reduction order)"
        )
    else:
        lines.append(f"the runs differ from step {step} ({size})")
    return "\n".join(lines)


def report_json(d: Divergence) -> dict[str, Any]:
    """The report as JSON-able data (--out)."""
    return {
        "run_a": d.a.path,
        "run_b": d.b.path,
        "verdict": d.verdict,
        "common_steps": d.common,
        "first_step": d.first.step if d.first else None,
        "first_difference": _diff_json(d.first) if d.first else None,
        "first_by_category": d.first_by_category,
        "last_step_difference": _diff_json(d.last),
        "config_differences": [list(x) for x in d.config_diffs],
        "provenance_differences": [list(x) for x in d.provenance_diffs],
    }


def _diff_json(diff: StepDiff) -> dict[str, Any]:
    return {
        "step": diff.step,
        "categories": {c: _finite(diff.category_rel(c)) for c in diff.categories()},
        "leaves": [
            {"name": x.name, "relative_difference": _finite(x.rel), "note": x.note}
            for x in diff.leaves
        ],
    }


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value
