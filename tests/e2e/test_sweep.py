"""Sweeps: space parsing, reproducible trials, validation before launch, crash isolation,
skip/resume, and a real 2-trial Fashion-MNIST sweep through the CLI."""

import csv
import json
import math
import os
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from jaxtrain.config import get_config as base_config
from jaxtrain.errors import ConfigError
from jaxtrain.tools.sweep import run_sweep
from jaxtrain.tools.sweep_space import (
    apply_overrides,
    format_value,
    make_trials,
    parse_space_flags,
    parse_value,
    trial_name,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MLP = os.path.join(REPO, "experiments", "fashion_mnist_mlp.py")
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))


def test_parse_space_flags():
    space = parse_space_flags(
        [
            "optimizer.learning_rate=loguniform:1e-4:1e-2",
            "config.model.dropout=uniform:0:0.5",
            "optimizer.name=adamw,sgd",
            "model.features=[32,64],(64, 128)",
            "data.augment_flip=choice:true,false",
            "seed=3",
        ]
    )
    assert space == {
        "optimizer.learning_rate": {"log_uniform": [1e-4, 1e-2]},
        "model.dropout": {"uniform": [0.0, 0.5]},
        "optimizer.name": ["adamw", "sgd"],
        "model.features": [(32, 64), (64, 128)],
        "data.augment_flip": [True, False],
        "seed": [3],
    }
    for value in (3, 0.001, 1e-05, True, "adamw", (32, 64)):
        assert parse_value(format_value(value)) == value
    # An empty value is the empty string (e.g. compare --b distill.teacher= : no teacher), not ().
    assert parse_value("") == "" and parse_value("()") == ()


@pytest.mark.parametrize(
    "flag,message",
    [
        ("model.dropout", "expected PATH=SPEC"),
        ("model.dropout=", "expected PATH=SPEC"),
        ("optimizer.learning_rate=loguniform:1e-4", "expected loguniform:LO:HI"),
        ("optimizer.learning_rate=uniform:a:b", "bounds must be numbers"),
        ("optimizer.learning_rate=loguniform:1e-2:1e-4", "needs lo < hi"),
        ("optimizer.learning_rate=loguniform:0:1", "log_uniform needs positive bounds"),
    ],
)
def test_parse_space_flags_bad_input(flag, message):
    with pytest.raises(ConfigError, match=message):
        parse_space_flags([flag])


def test_space_bad_input():
    with pytest.raises(ConfigError, match="given twice"):
        parse_space_flags(["seed=1", "config.seed=2"])
    with pytest.raises(ConfigError, match="config.model.dropout: needs a non-empty list"):
        make_trials({"model.dropout": []}, "grid", None, 0)
    with pytest.raises(ConfigError, match="the sweep space is empty"):
        make_trials({}, "grid", None, 0)
    with pytest.raises(ConfigError, match="log_uniform needs method random; a grid takes a list"):
        make_trials({"optimizer.learning_rate": {"log_uniform": [1e-4, 1e-2]}}, "grid", None, 0)
    with pytest.raises(ConfigError, match="needs lo < hi"):
        make_trials({"model.dropout": {"uniform": [0.5, 0.5]}}, "random", 2, 0)
    with pytest.raises(ConfigError, match="--trials must be >= 1"):
        make_trials({"seed": [1, 2]}, "grid", 0, 0)
    with pytest.raises(ConfigError, match="a random sweep needs --trials"):
        make_trials({"seed": [1, 2]}, "random", None, 0)
    with pytest.raises(ConfigError, match="'bayes' is not one of grid, random"):
        make_trials({"seed": [1, 2]}, "bayes", None, 0)
    with pytest.raises(ConfigError, match="must be a list or one of"):
        make_trials({"seed": {"normal": [0, 1]}}, "random", 2, 0)


def test_grid_enumerates_the_product_in_a_stable_order():
    space = {"optimizer.name": ["adamw", "sgd"], "seed": [1, 2, 3]}
    trials = make_trials(space, "grid", None, 0)
    assert trials == [
        {"optimizer.name": name, "seed": seed} for name in ("adamw", "sgd") for seed in (1, 2, 3)
    ]
    assert make_trials(space, "grid", 4, 0) == trials[:4]
    assert make_trials({"seed": {"choice": [5, 6]}}, "grid", None, 0) == [{"seed": 5}, {"seed": 6}]


def test_random_trials_are_reproducible_by_seed():
    space = {
        "optimizer.learning_rate": {"log_uniform": [1e-4, 1e-1]},
        "model.dropout": {"uniform": [0.0, 0.5]},
        "optimizer.name": ["adamw", "sgd", "nesterov"],
    }
    a = make_trials(space, "random", 200, sweep_seed=7)
    assert a == make_trials(space, "random", 200, sweep_seed=7)
    assert a != make_trials(space, "random", 200, sweep_seed=8)
    assert make_trials(space, "random", 5, sweep_seed=7) == a[:5]
    lrs = [t["optimizer.learning_rate"] for t in a]
    assert all(1e-4 <= lr < 1e-1 for lr in lrs)
    # Log-uniform: each decade gets about a third of the draws.
    decades = [sum(10**-k <= lr < 10 ** -(k - 1) for lr in lrs) for k in (4, 3, 2)]
    assert all(40 <= d <= 95 for d in decades), decades
    assert all(0.0 <= t["model.dropout"] < 0.5 for t in a)
    assert {t["optimizer.name"] for t in a} == {"adamw", "sgd", "nesterov"}


def test_apply_overrides_names_unknown_fields_and_bad_types():
    c = apply_overrides(base_config(), {"model.features": [8, 16], "optimizer.learning_rate": 3})
    assert c.model.features == (8, 16) and c.optimizer.learning_rate == 3.0
    with pytest.raises(ConfigError, match=r"config.optimizer.learnin_rate: no such field \("
                       r"config.optimizer has .*learning_rate"):  # fmt: skip
        apply_overrides(base_config(), {"optimizer.learnin_rate": 1e-3})
    with pytest.raises(ConfigError, match="config.modle.dropout: no such field"):
        apply_overrides(base_config(), {"modle.dropout": 0.1})
    with pytest.raises(ConfigError, match="config.seed.x: no such field"):
        apply_overrides(base_config(), {"seed.x": 1})
    with pytest.raises(ConfigError, match=r"config.optimizer.learning_rate='fast'"):
        apply_overrides(base_config(), {"optimizer.learning_rate": "fast"})
    assert isinstance(base_config(), ml_collections.ConfigDict)


def test_trial_name():
    name = trial_name(
        7, {"optimizer.learning_rate": 0.0031622776601683794, "model.features": (8, 16)}
    )
    assert name == "trial_007_learning_rate=0.00316_features=8x16"
    assert trial_name(0, {}) == "trial_000"


# A stand-in for `python -m jaxtrain train`, for scheduling and failure tests that need no
# training: the validation accuracy is a known function of the overrides.
FAKE_TRAIN = textwrap.dedent(
    """
    import json, os, sys
    args = sys.argv[1:]
    workdir = args[args.index("--workdir") + 1]
    sets = dict(a[len("--config."):].split("=", 1) for a in args if a.startswith("--config."))
    if sets.get("seed") == "3":
        print("Traceback ...\\nRuntimeError: trial 3 exploded", file=sys.stderr)
        sys.exit(1)
    os.makedirs(workdir, exist_ok=True)
    metrics = {"validation/accuracy": 0.5 + 0.1 * int(sets["seed"]), "test/accuracy": 0.4}
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
        json.dump(metrics, f)
    """
)


@pytest.fixture
def fake_train(tmp_path):
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_TRAIN)
    return [sys.executable, str(path)]


def test_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path, fake_train):
    workdir = tmp_path / "sweep"
    rows = run_sweep(
        MLP, str(workdir), space={"seed": [1, 3, 2, 4]}, parallel=2, train_command=fake_train
    )
    assert [r["trial"] for r in rows] == [
        "trial_003_seed=4", "trial_002_seed=2", "trial_000_seed=1", "trial_001_seed=3"
    ]  # fmt: skip
    assert [r["status"] for r in rows] == ["done", "done", "done", "failed"]
    assert rows[-1]["returncode"] == 1 and "trial 3 exploded" in rows[-1]["stderr_tail"]
    assert rows[0]["validation/accuracy"] == pytest.approx(0.9)
    with open(workdir / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["seed"] for r in table] == ["4", "2", "1", "3"]
    assert table[-1]["status"] == "failed" and table[-1]["validation/accuracy"] == ""
    summary_md = (workdir / "summary.md").read_text()
    assert "3/4 trials done, sorted by validation/accuracy (max)" in summary_md
    assert "RuntimeError: trial 3 exploded" in summary_md
    trials = json.loads((workdir / "trials.json").read_text())
    assert [t["overrides"] for t in trials] == [{"seed": s} for s in (1, 3, 2, 4)]
    # mode=min puts the lowest first; failed trials stay last.
    rows = run_sweep(
        MLP, str(workdir), space={"seed": [1, 3, 2, 4]}, mode="min", train_command=fake_train
    )
    assert [r["trial"][:9] for r in rows] == ["trial_000", "trial_002", "trial_003", "trial_001"]


def test_rerun_skips_finished_trials_and_refuses_another_sweep(tmp_path, fake_train):
    workdir = tmp_path / "sweep"
    space = {"seed": [1, 2]}
    run_sweep(MLP, str(workdir), space=space, train_command=fake_train)
    final = workdir / "trial_000_seed=1" / "final_metrics.json"
    mtime = os.stat(final).st_mtime_ns
    os.remove(workdir / "trial_001_seed=2" / "final_metrics.json")
    rows = run_sweep(MLP, str(workdir), space=space, train_command=fake_train)
    assert os.stat(final).st_mtime_ns == mtime
    assert (workdir / "trial_001_seed=2" / "final_metrics.json").exists()
    assert all(r["status"] == "done" for r in rows)
    with pytest.raises(ConfigError, match=r"sweep.json: this directory holds another sweep "
                       r"\(different space\)"):  # fmt: skip
        run_sweep(MLP, str(workdir), space={"seed": [1, 5]}, train_command=fake_train)
    with pytest.raises(ConfigError, match=r"different method, trials, sweep_seed"):
        run_sweep(
            MLP, str(workdir), space=space, method="random", trials=3, sweep_seed=1,
            train_command=fake_train,
        )  # fmt: skip


def test_bad_sweeps_fail_before_launching_anything(tmp_path, fake_train):
    workdir = tmp_path / "sweep"

    def sweep(**kwargs):
        kwargs = {"space": {"seed": [1]}, "train_command": fake_train, **kwargs}
        run_sweep(MLP, str(workdir), **kwargs)

    with pytest.raises(ConfigError, match="config.model.dropot: no such field"):
        sweep(space={"seed": [1, 2], "model.dropot": [0.1]})
    with pytest.raises(
        ConfigError, match=r"trial 1 \{'model.dropout': 1.5\}: config.model.dropout"
    ):
        sweep(space={"model.dropout": [0.1, 1.5]})
    with pytest.raises(ConfigError, match="--parallel must be >= 1"):
        sweep(parallel=0)
    with pytest.raises(ConfigError, match="must be a validation metric"):
        sweep(metric="test/accuracy")
    with pytest.raises(ConfigError, match="'up' is not one of max, min"):
        sweep(mode="up")
    with pytest.raises(ConfigError, match="no such file"):
        run_sweep(str(tmp_path / "nope.py"), str(workdir), space={"seed": [1]})
    assert not workdir.exists()  # nothing was launched or written


# --- a real sweep: 2 tiny Fashion-MNIST MLP trials through the real train CLI ------------------
# About 90 s on 2 busy CPU cores (two train subprocesses, then a CLI re-run), hence `slow`.
TINY = [
    "--config.total_steps=20",
    "--config.optimizer.warmup_steps=0",
    "--config.log_every=10",
    "--config.eval_every=20",
    "--config.checkpoint.every=20",
    "--config.batch_size=64",
    "--config.data.validation_size=1000",
    "--config.model.features=(32,)",
    f"--config.data.data_dir={DATA_DIR}",
]
GRID = ["optimizer.learning_rate=1e-3,1e-2"]


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    rows = run_sweep(
        MLP,
        str(workdir),
        space=parse_space_flags(GRID),
        parallel=2,
        config_overrides=TINY,
    )
    return workdir, rows


@pytest.mark.slow
def test_real_sweep_trains_each_trial_in_its_own_run_dir(real_sweep):
    workdir, rows = real_sweep
    assert [r["status"] for r in rows] == ["done", "done"], rows
    names = sorted(r["trial"] for r in rows)
    assert names == ["trial_000_learning_rate=0.001", "trial_001_learning_rate=0.01"]
    accuracies = [r["validation/accuracy"] for r in rows]
    assert accuracies == sorted(accuracies, reverse=True) and all(a > 0.3 for a in accuracies)
    for row in rows:
        trial_dir = workdir / row["trial"]
        config = json.loads((trial_dir / "config.json").read_text())
        assert config["total_steps"] == 20 and config["model"]["features"] == [32]
        assert config["optimizer"]["learning_rate"] == float(row["optimizer.learning_rate"])
        final = json.loads((trial_dir / "final_metrics.json").read_text())
        assert row["test/accuracy"] == final["test/accuracy"]
        assert math.isfinite(final["validation/loss"])
    with open(workdir / "summary.csv") as f:
        assert [r["trial"] for r in csv.DictReader(f)] == [r["trial"] for r in rows]


@pytest.mark.slow
def test_real_sweep_rerun_through_the_cli_skips_done_and_resumes_the_rest(real_sweep):
    workdir, rows = real_sweep
    done, redo = (workdir / r["trial"] for r in rows)
    mtime = os.stat(done / "final_metrics.json").st_mtime_ns
    os.remove(redo / "final_metrics.json")  # as if killed after its last checkpoint
    argv = [sys.executable, "-m", "jaxtrain", "sweep", "--config", MLP, "--workdir", str(workdir),
            *[f"--grid={g}" for g in GRID], *TINY, "--parallel=2"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{done.name}: already finished, skipped" in result.stderr
    assert os.stat(done / "final_metrics.json").st_mtime_ns == mtime
    assert "resumed from checkpoint step 20" in (redo / "train_stderr.log").read_text()
    assert json.loads((redo / "final_metrics.json").read_text())["test/accuracy"] == pytest.approx(
        next(r for r in rows if r["trial"] == redo.name)["test/accuracy"]
    )
