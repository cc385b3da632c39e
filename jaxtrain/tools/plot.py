"""Training curves from run directories: `python -m jaxtrain plot DIR... --out F.png`; the
per-seed curves of `python -m jaxtrain compare` (plot_compare)."""

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxtrain.errors import DataError  # noqa: E402
from jaxtrain.writers import read_metrics  # noqa: E402

PANELS = (
    ("loss", ("train/loss", "validation/loss")),
    ("accuracy", ("train/accuracy", "validation/accuracy")),
    ("macro F1", ("validation/f1_macro",)),
    ("learning rate", ("train/learning_rate",)),
)


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def _load(run_dir: str) -> list[dict]:
    if not os.path.isfile(os.path.join(run_dir, "metrics.jsonl")):
        raise DataError(f"{run_dir}: no metrics.jsonl here; pass run directories (--workdir)")
    return read_metrics(run_dir)


def plot_runs(run_dirs: list[str], out: str) -> None:
    """Draws each panel with every run overlaid; validation curves dashed, train solid."""
    if not run_dirs:
        raise DataError("plot needs at least one run directory")
    runs = {os.path.basename(os.path.normpath(d)) or d: _load(d) for d in run_dirs}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, keys) in zip(axes.flat, PANELS, strict=True):
        for i, (name, records) in enumerate(runs.items()):
            for key in keys:
                steps, values = _series(records, key)
                if steps:
                    style = "--" if key.startswith("validation/") else "-"
                    ax.plot(
                        steps,
                        values,
                        style,
                        color=colors[i % len(colors)],
                        label=f"{name} {key.split('/')[0]}",
                        marker="." if len(steps) < 30 else None,
                    )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if title == "loss":
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_compare(runs: dict[str, list[dict]], seeds: list[int], keys: list[str], out: str) -> None:
    """One panel per metric key: each arm's per-seed curves (thin) and its mean with a band of
    +- one standard deviation over the seeds (`KEY/seed_S` records of num_seeds runs)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys, strict=True):
        for i, (name, records) in enumerate(runs.items()):
            color = colors[i % len(colors)]
            curves = [_series(records, f"{key}/seed_{s}") for s in seeds]
            steps = sorted(set.intersection(*(set(c[0]) for c in curves)))
            if not steps:
                continue
            values = np.asarray([[dict(zip(*c, strict=True))[t] for t in steps] for c in curves])
            for row in values:
                ax.plot(steps, row, color=color, alpha=0.25, linewidth=0.8)
            mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
            ax.plot(
                steps, mean, color=color, linewidth=2, label=f"{name} mean ({len(seeds)} seeds)"
            )
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
