"""Hyperparameter sweeps: `python -m jaxtrain sweep --config FILE --workdir DIR --grid ...`.

    python -m jaxtrain sweep --config experiments/fashion_mnist_mlp.py --workdir sweeps/lr \
        --grid optimizer.learning_rate=1e-3,3e-3 --grid model.dropout=0.1,0.3 --parallel 2
    python -m jaxtrain sweep --config ... --workdir ... --trials 8 --sweep_seed 0 \
        --random optimizer.learning_rate=loguniform:1e-4:1e-2 --random model.dropout=uniform:0:0.5

The space (see sweep_space.py) comes from those flags or from `get_sweep()` in the experiment
file, which returns {"space": {...}} plus optional "method", "trials", "sweep_seed", "metric" and
"mode" (command-line values win). Other `--config.a.b=v` flags apply to every trial.

Every trial is one `python -m jaxtrain train` subprocess in DIR/trial_NNN_<desc>, so trials are
isolated and a crash only fails its own trial (its exit code and stderr tail are recorded).
Every trial's config is built and validated before the first one starts. DIR/sweep.json fixes
the sweep; DIR/trials.json lists every trial's overrides; DIR/summary.csv and DIR/summary.md
rank the trials by the validation metric. Re-running skips finished trials (final_metrics.json
present) and lets the others resume from their own checkpoints; a re-run with a different
config, overrides, space, method, seed or trial count is refused.
"""

import csv
import importlib.util
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Sequence
from typing import Any

import ml_collections

from jaxtrain.errors import ConfigError
from jaxtrain.tools.sweep_space import (
    apply_overrides,
    format_value,
    make_trials,
    parse_space_flags,
    parse_value,
    trial_name,
)
from jaxtrain.validation import validate_config
from jaxtrain.writers import write_json

_STDERR_TAIL = 2000
log = logging.getLogger(__name__)


def load_experiment_module(config_file: str) -> types.ModuleType:
    """An experiment file, executed as a module."""
    if not os.path.isfile(config_file):
        raise ConfigError(f"--config {config_file}: no such file")
    spec = importlib.util.spec_from_file_location("_jaxtrain_experiment", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(config_file: str) -> tuple[ml_collections.ConfigDict, dict | None]:
    """(get_config(), get_sweep() or None) of an experiment file."""
    module = load_experiment_module(config_file)
    sweep = module.get_sweep() if hasattr(module, "get_sweep") else None
    return module.get_config(), sweep


def _train_argv(
    train_command: list[str], config_file: str, trial_dir: str, fixed: Sequence[str], overrides
) -> list[str]:
    sets = [f"--config.{path}={format_value(v)}" for path, v in overrides.items()]
    return [*train_command, "--config", config_file, "--workdir", trial_dir, *fixed, *sets,
            "--progress=false"]  # fmt: skip


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-_STDERR_TAIL:]
    except OSError:
        return ""


def _read_final(trial_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(trial_dir, "final_metrics.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _check_same_sweep(workdir: str, record: dict[str, Any]) -> None:
    """Refuses a re-run in `workdir` that would mean different trials."""
    path = os.path.join(workdir, "sweep.json")
    if not os.path.exists(path):
        write_json(path, record)
        return
    with open(path) as f:
        stored = json.load(f)
    changed = [k for k in record if json.dumps(stored.get(k)) != json.dumps(record[k])]
    if changed:
        raise ConfigError(
            f"{path}: this directory holds another sweep (different {', '.join(changed)}); "
            "use a new --workdir, or delete it to start over"
        )


def run_sweep(
    config_file: str,
    workdir: str,
    *,
    space: dict[str, Any],
    method: str = "grid",
    trials: int | None = None,
    sweep_seed: int = 0,
    parallel: int = 1,
    metric: str = "validation/accuracy",
    mode: str = "max",
    config_overrides: Sequence[str] = (),
    train_command: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Runs (or resumes) a sweep; returns the summary rows, best first.

    `config_overrides` are `--config.a.b=v` flags given to every trial (applied before the
    sweep's own); `train_command` replaces `python -m jaxtrain train` (e.g. a wrapper script).
    """
    if parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {parallel}")
    if mode not in ("max", "min"):
        raise ConfigError(f"sweep mode {mode!r} is not one of max, min")
    if not metric.startswith("validation/"):
        raise ConfigError(f"sweep metric must be a validation metric, got {metric!r}")
    points = make_trials(space, method, trials, sweep_seed)
    config_file = os.path.abspath(config_file)
    base, _ = load_experiment(config_file)
    fixed = parse_config_flags(config_overrides)
    for i, overrides in enumerate(points):  # every trial's config is checked before any runs
        try:
            validate_config(apply_overrides(base, {**fixed, **overrides}), 1)
        except ConfigError as e:
            raise ConfigError(f"trial {i} {overrides}: {e}") from e
    os.makedirs(workdir, exist_ok=True)
    record = dict(config_file=config_file, config_overrides=list(config_overrides), space=space,
                  method=method, trials=len(points), sweep_seed=sweep_seed)  # fmt: skip
    _check_same_sweep(workdir, record)
    names = [trial_name(i, p) for i, p in enumerate(points)]
    write_json(os.path.join(workdir, "trials.json"),
               [{"index": i, "name": n, "overrides": p}
                for i, (n, p) in enumerate(zip(names, points, strict=True))])  # fmt: skip
    command = train_command or [sys.executable, "-m", "jaxtrain", "train"]
    results = {}
    todo = []
    for name, overrides in zip(names, points, strict=True):
        if _read_final(os.path.join(workdir, name)) is not None:
            results[name] = {"status": "done", "reused": True}
            log.info("[sweep] %s: already finished, skipped", name)
        else:
            todo.append((name, overrides))
    results.update(_run_trials(todo, workdir, command, config_file, config_overrides, parallel))
    return write_summary(workdir, names, points, results, metric, mode)


def parse_config_flags(flags: Sequence[str]) -> dict[str, Any]:
    out = {}
    for flag in flags:
        path, sep, value = flag.removeprefix("--").partition("=")
        if not sep or not path.startswith("config."):
            raise ConfigError(f"{flag!r}: expected --config.a.b=value")
        out[path.removeprefix("config.")] = parse_value(value)
    return out


def _run_trials(todo, workdir, command, config_file, fixed, parallel) -> dict[str, dict]:
    """Runs up to `parallel` trial subprocesses at a time; a failure only fails its trial."""
    results, running, queue = {}, {}, list(todo)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                name, overrides = queue.pop(0)
                trial_dir = os.path.join(workdir, name)
                os.makedirs(trial_dir, exist_ok=True)
                argv = _train_argv(command, config_file, trial_dir, fixed, overrides)
                out = open(os.path.join(trial_dir, "train_stdout.log"), "ab")  # noqa: SIM115
                err = open(os.path.join(trial_dir, "train_stderr.log"), "ab")  # noqa: SIM115
                proc = subprocess.Popen(argv, stdout=out, stderr=err)
                running[name] = (proc, out, err, time.perf_counter())
                log.info("[sweep] %s: started", name)
            for name, (proc, out, err, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                out.close()
                err.close()
                del running[name]
                results[name] = _trial_result(
                    workdir, name, proc.returncode, time.perf_counter() - t0
                )
            time.sleep(0.2)
    finally:
        # Interrupted (Ctrl-C): SIGTERM makes each trial save a checkpoint and exit, so
        # re-running the sweep resumes them.
        for proc, *_ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, out, err, _ in running.values():
            proc.wait()
            out.close()
            err.close()
    return results


def _trial_result(workdir: str, name: str, returncode: int, seconds: float) -> dict[str, Any]:
    trial_dir = os.path.join(workdir, name)
    if returncode == 0 and _read_final(trial_dir) is not None:
        log.info("[sweep] %s: done in %.1fs", name, seconds)
        return {"status": "done", "returncode": 0, "seconds": seconds}
    tail = _tail(os.path.join(trial_dir, "train_stderr.log"))
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    log.warning("[sweep] %s: FAILED with exit code %d: %s", name, returncode, last)
    return {"status": "failed", "returncode": returncode, "seconds": seconds, "stderr_tail": tail}


def write_summary(
    workdir: str,
    names: list[str],
    points: list[dict[str, Any]],
    results: dict[str, dict],
    metric: str,
    mode: str,
) -> list[dict[str, Any]]:
    """Writes DIR/summary.csv and DIR/summary.md, best `metric` first; returns the rows."""
    rows = []
    for name, overrides in zip(names, points, strict=True):
        final = _read_final(os.path.join(workdir, name)) or {}
        result = results.get(name, {})
        row = {"trial": name, "status": "done" if final else result.get("status", "failed")}
        row.update({path: format_value(v) for path, v in overrides.items()})
        row[metric] = final.get(metric)
        row.update({k: v for k, v in sorted(final.items()) if k.startswith("test/")})
        for key in ("early_stopping/best_step", "prune/sparsity", "time/train_seconds"):
            if key in final:
                row[key] = final[key]
        if row["status"] != "done":
            row["returncode"] = result.get("returncode")
        rows.append((row, result.get("stderr_tail")))
    done = [row for row, _ in rows if row["status"] == "done"]
    if done and all(row[metric] is None for row in done):
        final = _read_final(os.path.join(workdir, done[0]["trial"])) or {}
        known = sorted(k for k in final if k.startswith("validation/"))
        log.warning("[sweep] no trial reports %s; they report %s", metric, known)
    sign = -1.0 if mode == "max" else 1.0

    def rank(item):
        value = item[0][metric]
        bad = not isinstance(value, int | float) or not math.isfinite(value)
        return (bad, 0.0 if bad else sign * value)  # failed or NaN trials last

    rows.sort(key=rank)
    table = [row for row, _ in rows]
    columns = list(dict.fromkeys(k for row in table for k in row))
    with open(os.path.join(workdir, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(table)
    _write_markdown(os.path.join(workdir, "summary.md"), columns, rows, metric, mode)
    for row, tail in rows:
        if tail:
            row["stderr_tail"] = tail
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) >= 1e-3 else f"{value:.3g}"
    return "" if value is None else str(value)


def _write_markdown(path: str, columns, rows, metric: str, mode: str) -> None:
    done = sum(row["status"] == "done" for row, _ in rows)
    lines = [f"# Sweep summary: {done}/{len(rows)} trials done, sorted by {metric} ({mode})", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row, _ in rows]
    for row, tail in rows:
        if tail:
            lines += ["", f"## {row['trial']}: exit code {row.get('returncode')}", "", "```",
                      tail.strip()[-_STDERR_TAIL:], "```"]  # fmt: skip
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_sweep_from_flags(
    config_file: str,
    workdir: str,
    *,
    grid: Sequence[str] = (),
    random: Sequence[str] = (),
    trials: int = 0,
    sweep_seed: int | None = None,
    parallel: int = 1,
    metric: str = "",
    mode: str = "",
    config_overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """`python -m jaxtrain sweep`: run_sweep over the space of the flags; returns its rows.

    `grid`/`random`: the --grid/--random flag values (PATH=SPEC, see
    sweep_space.parse_space_flags); any --random makes a random sweep, where --grid paths become
    uniform choices. Without flags the space is get_sweep()'s.

    Empty or zero arguments come from get_sweep(), else: the whole grid (a random sweep needs
    trials), seed 0, and the config's checkpoint.best_metric / best_mode.
    """
    base, sweep = load_experiment(config_file)
    sweep = sweep or {}
    unknown = set(sweep) - {"space", "method", "trials", "sweep_seed", "metric", "mode"}
    if unknown:
        raise ConfigError(f"{config_file}: get_sweep() returned unknown keys {sorted(unknown)}")
    for flag in grid:
        kind = flag.partition("=")[2].partition(":")[0]
        if kind in ("uniform", "loguniform", "log_uniform"):
            raise ConfigError(f"--grid={flag}: a grid takes values; use --random for {kind}")
    if grid or random:
        space = parse_space_flags([*grid, *random])
        method = "random" if random else "grid"
    else:
        space, method = sweep.get("space"), sweep.get("method", "grid")
    if not space:
        raise ConfigError(
            f"no sweep space: give --grid/--random PATH=SPEC or define get_sweep() in {config_file}"
        )
    checkpoint = apply_overrides(base, parse_config_flags(config_overrides)).checkpoint
    rows = run_sweep(
        config_file,
        workdir,
        space=space,
        method=method,
        trials=trials or sweep.get("trials"),
        sweep_seed=sweep_seed or sweep.get("sweep_seed", 0),
        parallel=parallel,
        metric=metric or sweep.get("metric", checkpoint.best_metric),
        mode=mode or sweep.get("mode", checkpoint.best_mode),
        config_overrides=config_overrides,
    )
    return rows
