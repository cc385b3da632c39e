"""Compare a prepared dataset split with a run's drift reference: `python -m jaxtrain drift`.

The reference (WORKDIR/drift_reference.json, written at the end of training; jaxtrain/drift.py)
holds the statistics of a validation sample under the tested checkpoint. The same checkpoint is
restored, the same number of examples evenly spaced over the compared split (optionally
transformed: brightness:DELTA, rotate:90|180|270) go through the same statistics pass, and
every distribution's PSI and KL against the reference is reported. A PSI above the threshold
flags drift.
"""

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxtrain import data as data_lib
from jaxtrain import drift
from jaxtrain.data.registry import USER_PREFIX
from jaxtrain.errors import CheckpointError, DataError
from jaxtrain.evaluation import data_options
from jaxtrain.tools.evaluate import restore_run_state
from jaxtrain.writers import write_json

SPLITS = ("train", "validation", "test")
TRANSFORM_HELP = "use brightness:DELTA (DELTA in [-1, 1] of the pixel range) or rotate:90|180|270"


@dataclasses.dataclass(frozen=True)
class Transform:
    """A shift of uint8 images [B, H, W, C]: brightness adds `value` x 255 (clipped),
    rotate turns them by `value` degrees counter-clockwise."""

    kind: str
    value: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"

    def __call__(self, images_BxHxWxC: np.ndarray) -> np.ndarray:
        if self.kind == "rotate":
            return np.rot90(images_BxHxWxC, k=round(self.value) // 90, axes=(1, 2)).copy()
        shifted = images_BxHxWxC.astype(np.float32) + np.float32(self.value * 255.0)
        return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def parse_transform(spec: str) -> Transform:
    kind, sep, text = spec.partition(":")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    ok = {
        "brightness": math.isfinite(value) and -1.0 <= value <= 1.0,
        "rotate": value in (90.0, 180.0, 270.0),
    }
    if not sep or not ok.get(kind, False):
        raise DataError(f"--transform {spec!r}: {TRANSFORM_HELP}")
    return Transform(kind, value)


def parse_data(spec: str) -> tuple[str, str]:
    """NAME[:SPLIT] -> (NAME, SPLIT); the split defaults to test. user:NAME keeps its colon."""
    name, sep, split = spec.rpartition(":")
    if not sep or f"{name}:" == USER_PREFIX:
        name, split = spec, "test"
    if not name:
        raise DataError(f"--data {spec!r}: give a prepared dataset, NAME or NAME:SPLIT")
    if split not in SPLITS:
        raise DataError(f"--data {spec!r}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    data_lib.validate_dataset_name(name)
    return name, split


def _compose(transforms: Sequence[Transform]):
    if not transforms:
        return None

    def apply(images: np.ndarray) -> np.ndarray:
        for t in transforms:
            images = t(images)
        return images

    return apply


def _check_task(workdir: str, run_name: str, run_task: str, name: str, task: str, transforms):
    """The compared dataset must feed the run's model: the same task (then _check_images)."""
    if task != run_task:
        raise DataError(
            f"--data {name} is {task}, but the run in {workdir} trained on {run_name} "
            f"({run_task}); compare a dataset of the same kind"
        )
    if transforms and task != data_lib.IMAGE_CLASSIFICATION:
        raise DataError(f"--transform applies to image datasets; {name} is {task}")


def _check_images(workdir: str, run_name: str, run_info, name: str, info, transforms) -> None:
    if info.task != data_lib.IMAGE_CLASSIFICATION:
        return
    if info.input_shape != run_info.input_shape:
        raise DataError(
            f"--data {name} has images of shape {info.input_shape}, but the run in {workdir} "
            f"trained on {run_info.input_shape} ({run_name})"
        )
    h, w = info.input_shape[:2]
    if h != w and any(t.kind == "rotate" and t.value != 180 for t in transforms):
        raise DataError(f"--transform rotate:90/270 needs square images, {name} has {h}x{w}")


def _default_out(workdir: str, name: str, split: str, transforms: Sequence[Transform]) -> str:
    tag = "".join(f"_{t.kind}{t.value:g}" for t in transforms)
    return os.path.join(workdir, "drift", re.sub(r"[^\w.-]", "_", f"{name}_{split}{tag}") + ".json")


def run_drift(
    workdir: str,
    data: str,
    *,
    threshold: float,
    transforms: Sequence[str] = (),
    out: str | None = None,
) -> dict[str, Any]:
    """Statistics of `data` (NAME[:SPLIT]) against the run's reference; writes and returns the
    report. report["flagged"] lists the distributions whose PSI exceeds `threshold`."""
    if not (math.isfinite(threshold) and threshold > 0):
        raise DataError(f"--threshold must be a finite PSI > 0 (e.g. 0.2), got {threshold}")
    parsed = [parse_transform(t) for t in transforms]
    name, split = parse_data(data)
    ref_path = os.path.join(workdir, drift.REFERENCE_FILE)
    reference = drift.read_reference(ref_path)
    step = reference["checkpoint_step"]
    try:
        run = restore_run_state(workdir, str(step))
    except CheckpointError as e:
        raise CheckpointError(f"{ref_path} was computed with checkpoint step {step}: {e}") from e
    opts = dataclasses.replace(data_options(run.config), name=name)
    run_name = run.config.data.name
    task = data_lib.get_task(name, opts.data_dir)
    _check_task(workdir, run_name, run.info.task, name, task, parsed)
    info = data_lib.get_dataset_info(opts)  # text: tokenized with the run's tokenizer
    _check_images(workdir, run_name, run.info, name, info, parsed)
    n = reference["sample_size"]
    sample = drift.open_sample(opts, info, split, n, transform=_compose(parsed))
    stats = drift.collect_stats(
        drift.create_stats_fn(run.config, run.info, run.mesh),
        run.state,
        sample,
        batch_size=drift.sample_batch_size(n, run.config.eval_batch_size, run.mesh),
        mesh=run.mesh,
    )
    figures = drift.compare(reference["statistics"], stats)
    report = {
        "workdir": workdir,
        "data": f"{name}:{split}",
        "transforms": [str(t) for t in parsed],
        "reference": {k: reference[k] for k in ("dataset", "split", "checkpoint_step")},
        "num_examples": stats["num_examples"],
        "threshold_psi": threshold,
        "figures": figures,
        "flagged": [k for k, f in figures.items() if f["psi"] > threshold],
        "channels": {"reference": reference["statistics"].get("channels"),
                     "compared": stats.get("channels")},
        "out": out or _default_out(workdir, name, split, parsed),
    }  # fmt: skip
    if jax.process_index() == 0:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(report["out"])), exist_ok=True)
            write_json(report["out"], report)
        except OSError as e:
            raise CheckpointError(f"--out {report['out']}: cannot write the report ({e})") from e
    return report


def format_report(report: dict[str, Any]) -> str:
    """The table the CLI prints."""
    ref = report["reference"]
    shift = f" ({', '.join(report['transforms'])})" if report["transforms"] else ""
    lines = [
        f"drift of {report['data']}{shift}, {report['num_examples']} examples, against the "
        f"{ref['dataset']}:{ref['split']} reference of {report['workdir']} (step "
        f"{ref['checkpoint_step']}); drift above PSI {report['threshold_psi']:g}",
        f"{'statistic':<24} {'PSI':>9} {'KL':>9}",
    ]
    for name, f in report["figures"].items():
        flag = "  DRIFT" if name in report["flagged"] else ""
        lines.append(f"{name:<24} {f['psi']:>9.4f} {f['kl']:>9.4f}{flag}")
    channels = report["channels"]
    if channels["compared"]:
        means = lambda c: "/".join(f"{m:.3f}" for m in c["mean"])  # noqa: E731
        lines.append(
            f"channel means {means(channels['compared'])} (reference "
            f"{means(channels['reference'])})"
        )
    verdict = ", ".join(report["flagged"]) if report["flagged"] else "none"
    lines.append(f"drifted: {verdict}; wrote {report['out']}")
    return "\n".join(lines)
