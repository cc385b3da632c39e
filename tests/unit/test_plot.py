"""The plot command: overlays runs into one PNG; bad run directories are named."""

import matplotlib.image
import pytest

from jaxtrain.errors import DataError
from jaxtrain.tools.plot import plot_runs
from jaxtrain.writers import MetricWriter

REPO = __file__.rsplit("/tests/", 1)[0]


def _fake_run(path, scale):
    # Metric records in the run-directory format; what is tested is the drawing, not training.
    writer = MetricWriter(str(path), enabled=True)
    for step in range(10, 110, 10):
        writer.write(
            step,
            {
                "train/loss": scale / step,
                "train/accuracy": 1 - scale / step,
                "train/learning_rate": 1e-3 * (1 - step / 100),
            },
        )
        if step % 50 == 0:
            writer.write(
                step,
                {
                    "validation/loss": 2 * scale / step,
                    "validation/accuracy": 0.8,
                    "validation/f1_macro": 0.7,
                },
            )
    writer.close()


def test_plot_overlays_runs_into_a_png(tmp_path, run_cli):
    for name, scale in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        _fake_run(tmp_path / name, scale)
    out = tmp_path / "curves.png"
    result = run_cli("plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 400 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plot_names_a_directory_without_metrics(tmp_path):
    with pytest.raises(DataError, match="no metrics.jsonl"):
        plot_runs([str(tmp_path)], str(tmp_path / "x.png"))
    with pytest.raises(DataError, match="at least one run"):
        plot_runs([], str(tmp_path / "x.png"))
