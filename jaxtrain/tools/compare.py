"""Paired comparison of two configs over K seeds: `python -m jaxtrain compare`.

    python -m jaxtrain compare --config experiments/fashion_mnist_mlp.py --seeds 8 \
        --workdir runs/cmp --b optimizer.learning_rate=3e-3
    python -m jaxtrain compare --config A.py --config_b B.py --seeds 8 --workdir runs/cmp

Each arm is one run with config.num_seeds = K, i.e. one vmapped program whose member k is the run
that seed + k gives alone (jaxtrain/ensemble.py). Member k takes its init key and its data order
from seed + k only, so seed k of both arms sees the same batches in the same order when the arms'
data settings and batch size match, and starts from the same params when their model configs
match; compare.md says whether both hold.

DIR/a and DIR/b are the arms' run directories; DIR/compare_spec.json fixes what is compared.
Re-running skips an arm with final_metrics.json and resumes an interrupted one from its
checkpoints; a re-run with other configs or seeds in the same DIR is refused. The results
(paired_stats.py: mean +- std per arm, B - A with a t interval, t-test and exact sign-flip
p-values, for the final metrics and at every evaluation step both arms have) go to
DIR/compare.json and DIR/compare.md, the curves to DIR/compare.png.
"""

import copy
import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from jaxtrain.errors import ConfigError, DataError
from jaxtrain.evaluation import data_options
from jaxtrain.tools.paired_stats import MAX_SIGN_FLIP_PAIRS, PairedStats, paired_stats
from jaxtrain.tools.plot import plot_compare
from jaxtrain.tools.sweep import load_experiment, parse_config_flags
from jaxtrain.tools.sweep_space import apply_overrides, parse_value
from jaxtrain.train import train_and_evaluate
from jaxtrain.validation import validate_config
from jaxtrain.writers import read_metrics, write_json

ARMS = ("a", "b")
CONFIDENCE = 0.95
# Fields that fix what is evaluated and when: the arms must agree on them to be paired.
SAME_IN_BOTH = ("seed", "total_steps", "eval_every", "eval_steps", "data.name",
                "data.validation_size")  # fmt: skip
_SEED_KEY = re.compile(r"^((?:validation|test)/.+)/seed_(-?\d+)$")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Arm:
    label: str  # what the report calls it: a file, or "A + overrides"
    config: ml_collections.ConfigDict


# --- the two arms ------------------------------------------------------------------------------


def parse_arm_overrides(flags: Sequence[str]) -> dict[str, Any]:
    """["a.b=v", ...] (the --b values; a "config." prefix is allowed) -> {path: value}."""
    out: dict[str, Any] = {}
    for flag in flags:
        path, sep, value = flag.partition("=")
        path = path.strip().removeprefix("--").removeprefix("config.")
        if not sep or not path:
            raise ConfigError(
                f"--b {flag!r}: expected FIELD=VALUE, e.g. optimizer.learning_rate=3e-3"
            )
        if path in out:
            raise ConfigError(f"--b: config.{path} is given twice")
        out[path] = parse_value(value)
    return out


def arm_b_config(
    config_a: ml_collections.ConfigDict,
    *,
    config_b_file: str = "",
    b: Sequence[str] = (),
    config_overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
    """Arm B: config_b_file's get_config() with the --config.a.b=v overrides both arms share,
    or arm A's config (overrides included) with the --b overrides on top."""
    if config_b_file and b:
        raise ConfigError("give arm B as --config_b FILE or as --b FIELD=VALUE, not both")
    if not config_b_file and not b:
        raise ConfigError("arm B is missing: give --config_b FILE or --b FIELD=VALUE (repeatable)")
    if config_b_file:
        base, _ = load_experiment(config_b_file)
        fixed = parse_config_flags(config_overrides)
        return apply_overrides(base, fixed, where=f"--config_b {config_b_file}")
    return apply_overrides(config_a, parse_arm_overrides(b), where="--b")


def _with_seeds(
    config: ml_collections.ConfigDict, seeds: int, arm: str
) -> ml_collections.ConfigDict:
    if config.num_seeds not in (1, seeds):
        raise ConfigError(
            f"arm {arm}: config.num_seeds={config.num_seeds}, but compare trains --seeds={seeds} "
            "members per arm; leave num_seeds at 1"
        )
    c = copy.deepcopy(config)
    c.num_seeds = seeds
    return c


def _field(c: ml_collections.ConfigDict, path: str) -> Any:
    for key in path.split("."):
        c = c[key]
    return c


def check_comparable(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> None:
    """Raises ConfigError unless both arms evaluate the same metrics at the same steps."""
    fields = list(SAME_IN_BOTH)
    if a.eval_steps or b.eval_steps:  # a part of each split: the same part in both
        fields.append("eval_batch_size")
    for path in fields:
        va, vb = _field(a, path), _field(b, path)
        if va != vb:
            raise ConfigError(
                f"the arms are not comparable: config.{path} is {va!r} in A but {vb!r} in B "
                "(a paired comparison needs the same seeds, evaluation steps and eval data)"
            )


def pairing(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> dict[str, Any]:
    """Whether seed k of both arms reads the same batches and starts from the same params.

    Data order comes from (data settings, batch size, seed); the init from (model config,
    dataset, seed). Other differences (optimizer, schedule, ...) leave both alike.
    """
    order_fields = ("name", "validation_size", "tokenizer", "seq_len", "augment_crop_pad",
                    "augment_flip", "sampling")  # fmt: skip
    da, db = data_options(a), data_options(b)
    data_diff = [f"data.{f}" for f in order_fields if getattr(da, f) != getattr(db, f)]
    if a.batch_size != b.batch_size:
        data_diff.append("batch_size")
    ma, mb = a.model.to_dict(), b.model.to_dict()
    model_diff = [f"model.{k}" for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
    shape_diff = [f for f in data_diff if f in ("data.name", "data.tokenizer", "data.seq_len")]
    return {
        "same_data_order": not data_diff,
        "data_differs_in": data_diff,
        "same_init": not model_diff and not shape_diff,
        "init_differs_in": model_diff + shape_diff,
    }


def _check_same_compare(workdir: str, record: dict[str, Any]) -> None:
    """Refuses a re-run in `workdir` that would compare something else."""
    path = os.path.join(workdir, "compare_spec.json")
    record = json.loads(json.dumps(record))  # tuples -> lists, as stored
    if not os.path.exists(path):
        if jax.process_index() == 0:
            write_json(path, record)
        return
    with open(path) as f:
        stored = json.load(f)
    changed = [k for k in record if stored.get(k) != record[k]]
    if changed:
        raise ConfigError(
            f"{path}: this directory holds another comparison (different "
            f"{', '.join(changed)}); use a new --workdir, or delete it to start over"
        )


def run_compare(
    arm_a: Arm, arm_b: Arm, workdir: str, *, seeds: int, progress: bool = True
) -> dict[str, Any]:
    """Trains (or resumes, or skips) both arms with num_seeds = `seeds`; writes and returns the
    report (the content of DIR/compare.json; {} on processes other than 0)."""
    if not 2 <= seeds <= MAX_SIGN_FLIP_PAIRS:
        raise ConfigError(
            f"--seeds must be in [2, {MAX_SIGN_FLIP_PAIRS}] (a paired test needs at least 2 "
            f"seeds; 8 or more can reach p < 0.01), got {seeds}"
        )
    configs = [
        _with_seeds(arm.config, seeds, n.upper())
        for n, arm in zip(ARMS, (arm_a, arm_b), strict=True)
    ]
    for name, c in zip(ARMS, configs, strict=True):
        try:
            validate_config(c, 1)
        except ConfigError as e:
            raise ConfigError(f"arm {name.upper()}: {e}") from e
    check_comparable(*configs)
    os.makedirs(workdir, exist_ok=True)
    _check_same_compare(workdir, {"seeds": seeds, "a": configs[0].to_dict(),
                                  "b": configs[1].to_dict()})  # fmt: skip
    for name, c in zip(ARMS, configs, strict=True):
        arm_dir = os.path.join(workdir, name)
        if os.path.exists(os.path.join(arm_dir, "final_metrics.json")):
            log.info("[compare] arm %s: already finished, skipped", name.upper())
            continue
        log.info("[compare] arm %s: training %d seeds in %s", name.upper(), seeds, arm_dir)
        train_and_evaluate(c, arm_dir, progress=progress)
    if jax.process_index() != 0:
        return {}  # only process 0 writes the runs' metrics
    member_seeds = [configs[0].seed + k for k in range(seeds)]
    report = analyze(workdir, member_seeds, [arm_a.label, arm_b.label], pairing(*configs))
    write_json(os.path.join(workdir, "compare.json"), _jsonable(report))
    with open(os.path.join(workdir, "compare.md"), "w") as f:
        f.write(format_report(report))
    runs = {label: read_metrics(os.path.join(workdir, n))
            for n, label in zip(ARMS, ("A", "B"), strict=True)}  # fmt: skip
    plot_compare(runs, member_seeds, _plot_keys(report), os.path.join(workdir, "compare.png"))
    return report


# --- reading the arms and the statistics ---------------------------------------------------


def per_seed(record: dict[str, Any], seeds: Sequence[int]) -> dict[str, list[float]]:
    """{metric: [value of seed s for s in seeds]} of every validation/test metric that has all
    the seeds in `record` (a metrics.jsonl record or final_metrics.json)."""
    found: dict[str, dict[int, float]] = {}
    for key, value in record.items():
        match = _SEED_KEY.match(key)
        if match:
            found.setdefault(match.group(1), {})[int(match.group(2))] = float(value)
    return {m: [v[s] for s in seeds] for m, v in sorted(found.items()) if set(seeds) <= set(v)}


def _read_final(arm_dir: str) -> dict[str, Any]:
    path = os.path.join(arm_dir, "final_metrics.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the arm's final metrics ({e})") from e


def _eval_steps(records: list[dict[str, Any]], seeds: Sequence[int]) -> dict[int, dict]:
    """{step: per-seed validation metrics} of each evaluation in metrics.jsonl."""
    out: dict[int, dict] = {}
    for r in records:
        values = {m: v for m, v in per_seed(r, seeds).items() if m.startswith("validation/")}
        if values:
            out.setdefault(r["step"], {}).update(values)
    return out


def _same_metrics(a: dict, b: dict, where: str) -> None:
    if set(a) != set(b):
        raise DataError(
            f"{where}: the arms report different metrics (only A: {sorted(set(a) - set(b))}, "
            f"only B: {sorted(set(b) - set(a))}); compare needs arms of the same task"
        )


def _stats_record(a: list[float], b: list[float]) -> dict[str, Any]:
    return {**dataclasses.asdict(paired_stats(a, b, CONFIDENCE)), "a": a, "b": b}


def analyze(
    workdir: str, seeds: Sequence[int], labels: Sequence[str], pair: dict[str, Any]
) -> dict[str, Any]:
    """The report: paired statistics of the final metrics and of every matched evaluation."""
    finals = [per_seed(_read_final(os.path.join(workdir, n)), seeds) for n in ARMS]
    _same_metrics(*finals, "final metrics")
    if not finals[0]:
        raise DataError(f"{workdir}: the arms' final metrics hold no per-seed values")
    evals = [_eval_steps(read_metrics(os.path.join(workdir, n)), seeds) for n in ARMS]
    matched = sorted(set(evals[0]) & set(evals[1]))
    steps: dict[str, dict[str, Any]] = {}
    for step in matched:
        _same_metrics(evals[0][step], evals[1][step], f"step {step}")
        for metric, a in evals[0][step].items():
            steps.setdefault(metric, {})[str(step)] = _stats_record(a, evals[1][step][metric])
    return {
        "seeds": list(seeds),
        "arms": {
            n: {"label": label, "workdir": os.path.join(workdir, n)}
            for n, label in zip(ARMS, labels, strict=True)
        },  # fmt: skip
        "difference": "B - A",
        "confidence": CONFIDENCE,
        "pairing": pair,
        "final": {m: _stats_record(a, finals[1][m]) for m, a in finals[0].items()},
        "steps": steps,
        "unmatched_steps": {
            "a": sorted(set(evals[0]) - set(matched)),
            "b": sorted(set(evals[1]) - set(matched)),
        },  # fmt: skip
    }


def _jsonable(obj: Any) -> Any:
    """NaN and +-inf as strings (JSON has neither), like metrics.jsonl."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _plot_keys(report: dict[str, Any]) -> list[str]:
    keys = ["train/loss"]
    keys += [k for k in ("validation/loss", "validation/accuracy") if k in report["steps"]]
    return keys


# --- compare.md ----------------------------------------------------------------------------


def _num(x: float | None) -> str:
    if x is None:
        return "undefined"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.3g}"


def _p(x: float) -> str:
    return str(x) if not math.isfinite(x) else (f"{x:.4f}" if x >= 1e-4 else f"{x:.2g}")


def _row(first: str, s: dict[str, Any]) -> str:
    st = PairedStats(**{f.name: s[f.name] for f in dataclasses.fields(PairedStats)})
    return (
        f"| {first} | {_num(st.mean_a)} ± {_num(st.std_a)} | {_num(st.mean_b)} ± {_num(st.std_b)}"
        f" | {_num(st.diff_mean)} | [{_num(st.ci_low)}, {_num(st.ci_high)}] | {_p(st.p_t)}"
        f" | {_p(st.p_sign_flip)} |"
    )


def _yes_or_differs(same: bool, fields: list[str]) -> str:
    return "yes" if same else f"no (differs in {', '.join(fields)})"


def format_report(report: dict[str, Any]) -> str:
    """compare.md: the arms, how they are paired, and one table per kind of metric."""
    seeds, pair, arms = report["seeds"], report["pairing"], report["arms"]
    k = len(seeds)
    order = _yes_or_differs(pair["same_data_order"], pair["data_differs_in"])
    init = _yes_or_differs(pair["same_init"], pair["init_differs_in"])
    header = (f"| {{}} | A mean ± std | B mean ± std | B − A | {report['confidence']:.0%} CI | "
              "p (paired t) | p (sign-flip) |\n|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [
        f"# Compare: A vs B over {k} seeds",
        "",
        f"- A: {arms['a']['label']} ({arms['a']['workdir']})",
        f"- B: {arms['b']['label']} ({arms['b']['workdir']})",
        f"- Seeds {seeds[0]}..{seeds[-1]}, paired seed by seed; differences are B − A.",
        f"- Same data order per seed: {order}. Same initial params per seed: {init}.",
        f"- std: over seeds (ddof=1). CI: t distribution with {k - 1} degrees of freedom. "
        f"p: two-sided paired t-test, and the exact sign-flip test over all 2^{k} = {2**k} sign "
        f"patterns (smallest possible p: {2 / 2**k:.4g}).",
        "",
        "## Final metrics",
        "",
        header.format("metric"),
        *[_row(m, s) for m, s in report["final"].items()],
    ]
    for metric, by_step in report["steps"].items():
        lines += ["", f"## {metric} at matched steps", "", header.format("step")]
        lines += [_row(step, s) for step, s in by_step.items()]
    unmatched = report["unmatched_steps"]
    if unmatched["a"] or unmatched["b"]:
        lines += ["", f"Evaluations of one arm only (not compared): A {unmatched['a']}, "
                      f"B {unmatched['b']}."]  # fmt: skip
    return "\n".join(lines) + "\n"
