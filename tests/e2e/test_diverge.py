"""`jaxtrain diverge` on real runs: a tiny MLP with dropout on Fashion-MNIST, a few steps, with
fingerprints every step."""

import json
import os
import shutil

import pytest

from jaxtrain.config import get_config
from jaxtrain.fingerprint_records import FILENAME, read_fingerprints
from jaxtrain.models import model_config
from jaxtrain.tools.diverge import FLOAT_LEVEL, diverge, format_report
from jaxtrain.train import train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
STEPS = 4


def _config(**overrides):
    c = get_config()
    c.data.data_dir = DATA_DIR
    c.data.in_memory = False  # a few batches: reading them beats decoding the split
    c.data.validation_size = 1000
    c.model = model_config("mlp", features=(16,), dropout=0.3)
    c.total_steps, c.log_every, c.eval_every, c.eval_steps = STEPS, 2, STEPS, 1
    c.batch_size, c.eval_batch_size = 32, 496
    c.checkpoint.every = 2
    c.fingerprint_every = 1
    for key, value in overrides.items():
        c[key] = value
    return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("diverge")
    configs = {
        "a": _config(),
        "b": _config(),
        "rbg": _config(dropout_rng="rbg"),
    }
    for name, c in configs.items():
        train_and_evaluate(c, str(root / name), progress=False)
    return {name: str(root / name) for name in configs}


def test_two_identical_runs_are_identical_through_the_last_step(runs):
    d = diverge(runs["a"], runs["b"])
    assert d.verdict == "identical" and d.first is None
    assert d.common == list(range(STEPS + 1))
    assert d.config_diffs == [] and d.provenance_diffs == []
    assert f"identical through step {STEPS} ({STEPS + 1} steps compared bitwise)" in (
        format_report(d)
    )


def test_dropout_rng_names_the_first_step_the_leaves_and_the_config_field(runs):
    d = diverge(runs["a"], runs["rbg"])
    assert d.verdict == "differ"
    assert d.config_diffs == [("dropout_rng", "threefry2x32", "rbg")]
    # The initial params are equal (init is always threefry); the run key is not.
    assert d.first.step == 0
    assert [x.name for x in d.first.leaves] == ["rng"] and d.first.leaves[0].note == "size 2 vs 4"
    # Dropout masks differ from the first update on: its gradient, then the state it produced.
    assert {c: d.first_by_category[c] for c in ("grads", "params", "opt_state")} == {
        "grads": 1,
        "params": 1,
        "opt_state": 1,
    }
    assert "batch" not in d.first_by_category  # the same data
    assert d.last.category_rel("grads") > 1e-2
    text = format_report(d)
    assert "dropout_rng: 'threefry2x32' vs 'rbg'" in text
    assert "first difference at step 0; the leaves that differ" in text
    assert "the runs differ from step 0 (rng: size 2 vs 4)" in text


def test_a_resumed_run_has_the_same_fingerprints(runs, tmp_path):
    """A kill while writing the step-4 record, before the step-4 save: the rerun resumes at
    step 2, here with fingerprint_every=2 (it may change on resume), so the file holds steps 0,
    1, 2 from before and 4 from the rerun, each once and equal to the uninterrupted run's."""
    run = tmp_path / "resumed"
    shutil.copytree(runs["a"], run)
    shutil.rmtree(run / "checkpoints" / str(STEPS))
    lines = (run / FILENAME).read_text().splitlines(keepends=True)
    (run / FILENAME).write_text("".join(lines[:-1]) + lines[-1][:50])
    train_and_evaluate(_config(fingerprint_every=2), str(run), progress=False)
    assert [r["step"] for r in read_fingerprints(str(run))] == [0, 1, 2, 4]
    d = diverge(runs["a"], str(run))
    assert d.verdict == "identical" and d.common == [0, 1, 2, 4]
    assert d.config_diffs == [("fingerprint_every", 1, 2)]
    text = format_report(d)
    assert "compared the 4 steps fingerprinted in both runs" in text
    assert text.endswith("identical through step 4 (4 steps compared bitwise)")


def test_cli_exit_codes_and_json_report(runs, run_cli, tmp_path):
    same = run_cli("diverge", runs["a"], runs["b"])
    assert same.returncode == 0, same.stderr[-2000:]
    assert "identical through step 4" in same.stdout
    out = tmp_path / "report.json"
    differ = run_cli("diverge", runs["a"], runs["rbg"], "--out", str(out))
    assert differ.returncode == 1, differ.stderr[-2000:]
    assert "the runs differ from step 0" in differ.stdout and differ.stderr == ""
    report = json.loads(out.read_text())
    assert report["verdict"] == "differ" and report["first_step"] == 0


@pytest.mark.multidevice
def test_one_and_eight_devices_differ_at_float_level(tmp_path):
    one, eight = str(tmp_path / "1"), str(tmp_path / "8")
    train_and_evaluate(_config(num_devices=1), one, progress=False)
    train_and_evaluate(_config(num_devices=8), eight, progress=False)
    d = diverge(one, eight)
    assert d.verdict == "float-level"
    assert ("num_devices", 1, 8) in d.config_diffs
    assert ("mesh_shape.data", 1, 8) in d.provenance_diffs
    assert d.first.step == 1 and d.first.categories()[0] == "grads"  # same init, same batch
    assert 0 < d.first.category_rel("grads") <= FLOAT_LEVEL
    assert "batch" not in d.first_by_category
    assert "float-level differences from step 1 (grads differs by ~" in format_report(d)
