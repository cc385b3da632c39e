"""Training curves from run directories: `python -m jaxtrain plot DIR... --out F.png`."""

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

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
