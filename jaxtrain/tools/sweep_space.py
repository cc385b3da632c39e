"""Sweep spaces: parsing `--sweep` flags, drawing trials, turning values into config overrides.

A space maps config paths to specs:
- a list of values (a grid axis; in a random sweep, a uniform choice), or {"choice": [...]}
- {"uniform": [lo, hi]} or {"log_uniform": [lo, hi]} (random sweeps only)

Grid sweeps enumerate the product in the order the space lists its paths (the last varies
fastest); `trials` keeps the first N. Random sweeps draw `trials` points from
`numpy.random.default_rng(sweep_seed)`, path by path in space order, so the same seed gives the
same trials.
"""

import copy
import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxtrain.errors import ConfigError

METHODS = ("grid", "random")
DISTRIBUTIONS = ("uniform", "log_uniform")
_FLAG_KINDS = {"loguniform": "log_uniform", "log_uniform": "log_uniform", "uniform": "uniform"}


def parse_value(text: str) -> Any:
    """One flag value: true/false, int, float, a [..] or (..) list of those (-> tuple), or str."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text and text[0] in "[(" and text[-1] in "])":
        return tuple(parse_value(v) for v in _split_top_level(text[1:-1]) if v.strip())
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split_top_level(text: str) -> list[str]:
    """Splits on commas outside brackets: "1,[2,3]" -> ["1", "[2,3]"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def parse_space_flags(flags: Sequence[str]) -> dict[str, Any]:
    """["PATH=SPEC", ...] (the values of --grid / --random) -> space. SPEC is one of:

    V1,V2,...          values (grid axis / random choice); brackets keep a tuple whole:
                       model.features=[32,64],[64,128]. Values parse as true/false, int,
                       float, else string (no commas inside strings; use get_sweep() for those)
    choice:V1,V2,...   the same, spelled out
    uniform:LO:HI      uniform float in [LO, HI)     (random sweeps only)
    loguniform:LO:HI   log-uniform float in [LO, HI) (random sweeps only)

    PATH is a config path with or without the "config." prefix, e.g. optimizer.learning_rate.
    """
    space: dict[str, Any] = {}
    for flag in flags:
        path, sep, spec = flag.partition("=")
        path = path.strip().removeprefix("config.")
        if not sep or not path or not spec.strip():
            raise ConfigError(
                f"sweep flag {flag!r}: expected PATH=SPEC, e.g. model.dropout=0.1,0.3"
            )
        if path in space:
            raise ConfigError(f"sweep flags: {path} is given twice")
        kind, colon, rest = spec.partition(":")
        if colon and kind in _FLAG_KINDS:
            bounds = rest.split(":")
            if len(bounds) != 2:
                raise ConfigError(f"sweep flag {flag!r}: expected {kind}:LO:HI")
            try:
                space[path] = {_FLAG_KINDS[kind]: [float(bounds[0]), float(bounds[1])]}
            except ValueError as e:
                raise ConfigError(f"sweep flag {flag!r}: bounds must be numbers ({e})") from e
        else:
            values = rest if colon and kind == "choice" else spec
            space[path] = [parse_value(v) for v in _split_top_level(values)]
    check_space(space, "random")  # shape checks; grid-only rules are checked in make_trials
    return space


def check_space(space: dict[str, Any], method: str) -> None:
    """Raises ConfigError naming the path of the first malformed spec."""
    if method not in METHODS:
        raise ConfigError(f"sweep method {method!r} is not one of {', '.join(METHODS)}")
    if not space:
        raise ConfigError("the sweep space is empty; give --grid/--random PATH=SPEC or get_sweep()")
    for path, spec in space.items():
        where = f"sweep space: config.{path}"
        if isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in ("choice", *DISTRIBUTIONS):
                raise ConfigError(f"{where}: {spec!r} must be a list or one of {{'choice': [..]}},"
                                  " {'uniform': [lo, hi]}, {'log_uniform': [lo, hi]}")  # fmt: skip
            (kind, arg), = spec.items()  # fmt: skip
            if kind == "choice":
                _check_values(where, arg)
            elif method == "grid":
                raise ConfigError(f"{where}: {kind} needs method random; a grid takes a list")
            else:
                _check_bounds(where, kind, arg)
        else:
            _check_values(where, spec)


def _check_values(where: str, values: Any) -> None:
    if not isinstance(values, list | tuple) or not values:
        raise ConfigError(f"{where}: needs a non-empty list of values, got {values!r}")


def _check_bounds(where: str, kind: str, bounds: Any) -> None:
    if not isinstance(bounds, list | tuple) or len(bounds) != 2:
        raise ConfigError(f"{where}: {kind} needs [lo, hi], got {bounds!r}")
    lo, hi = bounds
    if not lo < hi:
        raise ConfigError(f"{where}: {kind} needs lo < hi, got [{lo}, {hi}]")
    if kind == "log_uniform" and lo <= 0:
        raise ConfigError(f"{where}: log_uniform needs positive bounds, got [{lo}, {hi}]")


def make_trials(
    space: dict[str, Any], method: str, trials: int | None, sweep_seed: int
) -> list[dict[str, Any]]:
    """The trials' overrides {path: value}, in launch order; reproducible from the seed."""
    check_space(space, method)
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    values = {
        p: s["choice"] if isinstance(s, dict) and "choice" in s else s for p, s in space.items()
    }
    if method == "grid":
        points = itertools.product(*values.values())
        return [dict(zip(space, p, strict=True)) for p in itertools.islice(points, trials)]
    if trials is None:
        raise ConfigError("a random sweep needs --trials N")
    rng = np.random.default_rng(sweep_seed)
    out = []
    for _ in range(trials):
        point = {}
        for path, spec in values.items():
            if isinstance(spec, dict) and "uniform" in spec:
                point[path] = float(rng.uniform(*spec["uniform"]))
            elif isinstance(spec, dict):
                lo, hi = spec["log_uniform"]
                point[path] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            else:
                point[path] = spec[int(rng.integers(len(spec)))]
        out.append(point)
    return out


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any], where: str = "sweep space"
):
    """A copy of `config` with {path: value} set; unknown paths and wrong types name the field
    (errors start with `where`, the source of the overrides)."""
    c = copy.deepcopy(config)
    for path, value in overrides.items():
        keys = path.split(".")
        node = c
        for i, key in enumerate(keys):
            if not isinstance(node, ml_collections.ConfigDict) or key not in node:
                parent = ".".join(["config", *keys[:i]])
                fields = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                raise ConfigError(
                    f"{where}: config.{path}: no such field ({parent} has "
                    f"{', '.join(fields) or 'no fields'})"
                )
            if i < len(keys) - 1:
                node = node[key]
        if isinstance(node[keys[-1]], tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[keys[-1]] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: config.{path}={value!r}: {e}") from e
    return c


def format_value(value: Any) -> str:
    """A value as `--config.a.b=` text that ml_collections parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return repr(tuple(value))
    return repr(value) if isinstance(value, float) else str(value)


def trial_name(index: int, overrides: dict[str, Any]) -> str:
    """trial_007_learning_rate=0.003_features=32x64 (index first: unique, and sorts)."""
    parts = []
    for path, value in overrides.items():
        if isinstance(value, float):
            shown = f"{value:.3g}"
        elif isinstance(value, list | tuple):
            shown = "x".join(str(v) for v in value)
        else:
            shown = format_value(value)
        parts.append(f"{path.split('.')[-1]}={shown}")
    desc = re.sub(r"[^A-Za-z0-9_.=+-]+", "-", "_".join(parts))[:60].strip("-_")
    return f"trial_{index:03d}" + (f"_{desc}" if desc else "")
