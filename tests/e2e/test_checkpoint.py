"""Checkpointing: exact resume after SIGKILL, preemption, resharding, damaged checkpoints."""

import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from forked_cli import ForkedCLI

from jaxtrain.build import create_state_and_steps, params_digest
from jaxtrain.checkpoint import Checkpointer, abstract_with_shardings, check_compatible
from jaxtrain.config import get_config
from jaxtrain.data import get_dataset_info
from jaxtrain.errors import EXIT_PREEMPTED, CheckpointError
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.train import data_options
from jaxtrain.warm_start import warm_start
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
# A tiny MLP with batchnorm, dropout and shuffled data: everything that could break resume
# (batch statistics, dropout keys, the data position, the optimizer), at a fraction of the CNN's
# compile cost. Evaluations cover the first 2 batches of each split (config.eval_steps), and
# batches are read as needed (data.in_memory=false: decoding the whole split costs ~13 CPU-s a
# run); the SIGKILL test keeps the default in-memory source.
BASE_ARGS = [
    "--config",
    "experiments/fashion_mnist_mlp.py",
    "--config.model.features=(32,)",
    "--config.model.norm=batchnorm",
    "--config.model.dropout=0.3",
    "--config.batch_size=64",
    "--config.eval_batch_size=200",
    "--config.eval_steps=2",
    "--config.data.in_memory=false",
    "--config.data.validation_size=1000",
    "--config.log_every=5",
    "--config.eval_every=10",
    "--config.checkpoint.every=10",
    "--config.optimizer.warmup_steps=5",
    "--progress=false",
]


def _args(workdir, *extra):
    return ["train", "--workdir", str(workdir), *BASE_ARGS, *extra]


def _cmd(workdir, *extra):
    """A real `python -m jaxtrain` process, for the tests that signal or kill it."""
    return [sys.executable, "-m", "jaxtrain", *_args(workdir, *extra)]


def _env():
    return {**os.environ, "JAXTRAIN_DATA_DIR": DATA_DIR}


_CLI = ForkedCLI(REPO, default_env=_env)


def _run(workdir, *extra, timeout=300):
    return _CLI(*_args(workdir, *extra), timeout=timeout)


def _values(workdir):
    prefixes = ("train/", "validation/", "test/")
    return [
        {k: v for k, v in r.items() if k == "step" or k.startswith(prefixes)}
        for r in read_metrics(workdir)
    ]


def _final_params(workdir, step):
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    # Host numpy values are all a bitwise comparison needs; no shardings involved.
    layout = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), layout)
    tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree["train_state"])])


@pytest.fixture(scope="module")
def _trained20(tmp_path_factory):
    """One 20-step run (checkpoints at 10 and 20) that several tests start from; each copies it."""
    workdir = tmp_path_factory.mktemp("trained20") / "run"
    out = _run(workdir, "--config.total_steps=20")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def _copy_of(run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    return workdir


def _wait_for(path, proc, timeout=180):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# The 8-device variant repeats the 1-device one on a sharded mesh; slow (about a minute).
@pytest.mark.parametrize(
    "num_devices", [1, pytest.param(8, marks=[pytest.mark.slow, pytest.mark.multidevice])]
)
def test_sigkill_then_rerun_is_bitwise_identical(tmp_path, num_devices):
    extra = (
        f"--config.num_devices={num_devices}",
        "--config.total_steps=200",  # room for the random kill delay on a fast machine
        "--config.data.in_memory=true",  # the default source, as users run it
    )
    ref = _run(tmp_path / "ref", *extra)
    assert ref.returncode == 0, ref.stderr[-3000:]

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(workdir, *extra),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(workdir / "checkpoints" / "10", proc)
    delay = random.uniform(0.0, 0.3)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"run finished before the kill ({delay=:.2f}s)"

    resumed = _run(workdir, *extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"resumed from checkpoint step (\d+)", resumed.stderr)
    assert match, resumed.stderr[-3000:]
    # The point is to resume mid-run: the restored step must leave training still to do.
    assert 10 <= int(match.group(1)) < 200, f"kill after {delay=:.2f}s was too late"
    assert _values(workdir) == _values(tmp_path / "ref"), f"kill after {delay=:.2f}s"
    np.testing.assert_array_equal(_final_params(workdir, 200), _final_params(tmp_path / "ref", 200))


def test_sigterm_saves_exits_4_and_rerun_continues(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(workdir, "--config.total_steps=100000", "--config.checkpoint.every=100000"),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(workdir / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    steps = Checkpointer(
        str(workdir / "checkpoints"),
        keep=2,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=False,
    ).steps()
    assert len(steps) == 1 and f"saved a checkpoint at step {steps[0]}" in err
    resumed = _run(
        workdir, f"--config.total_steps={steps[0] + 5}", "--config.checkpoint.every=100000"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from checkpoint step {steps[0]}" in resumed.stderr


def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, _trained20):
    workdir = _copy_of(_trained20, tmp_path)
    damaged = workdir / "checkpoints" / "20" / "state"
    for root, _, files in os.walk(damaged):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
    again = _run(workdir, "--config.total_steps=30")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "checkpoint step 20" in again.stderr and "damaged" in again.stderr
    assert "resumed from checkpoint step 10" in again.stderr
    assert os.listdir(workdir / "checkpoints_damaged"), "the damaged step is kept, not deleted"
    steps = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # superseded, not duplicated


def test_incompatible_config_is_a_clear_error(tmp_path, _trained20):
    workdir = _copy_of(_trained20, tmp_path)
    out = _run(workdir, "--config.total_steps=30", "--config.model.features=(16,)")
    assert out.returncode == 2
    assert "incompatible config" in out.stderr and "model.features" in out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_workdir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = _run(blocker / "run", "--config.total_steps=10")
    assert out.returncode == 2
    assert "not writable" in out.stderr and "Traceback" not in out.stderr


def test_check_compatible_names_fields():
    saved = get_config().to_dict()
    current = get_config().to_dict()
    current["model"]["hidden"] = 7
    with pytest.raises(CheckpointError, match=r"model.hidden: checkpoint 256 vs config 7"):
        check_compatible(saved, current, "here")
    current = get_config().to_dict()
    current["total_steps"] = 5  # not state-defining: resuming with a longer run is allowed
    check_compatible(saved, current, "here")
    current = get_config().to_dict()
    current["dropout_rng"] = "rbg"  # the state's rng words are a different key type
    with pytest.raises(CheckpointError, match=r"dropout_rng: checkpoint 'threefry2x32' vs"):
        check_compatible(saved, current, "here")
    del saved["dropout_rng"]  # a run saved before the field existed used threefry
    check_compatible(saved, get_config().to_dict(), "here")


@pytest.mark.multidevice
@pytest.mark.parametrize("save_devices, restore_devices", [(8, 1), (1, 8)])
def test_restore_reshards_between_mesh_sizes(tmp_path, save_devices, restore_devices):
    c = get_config()
    c.model.features, c.model.hidden = (8, 16), 32

    def make(n):
        mesh = sharding.create_mesh(n)
        state, _, _ = create_state_and_steps(c, mesh, _fmnist_info(c))
        return state

    saved = make(save_devices)
    ckpt = Checkpointer(
        str(tmp_path / "ck"),
        keep=1,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=True,
    )
    ckpt.save(3, {"train_state": saved}, {"next_index": 3}, {"config": c.to_dict()}, None)
    ckpt.wait()
    target = make(restore_devices)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        {"train_state": target},
    )
    restored = ckpt.restore(3, abstract)
    state = restored.state["train_state"]
    np.testing.assert_array_equal(params_digest(state), params_digest(saved))
    leaf = jax.tree.leaves(state.params)[0]
    assert len(leaf.sharding.device_set) == restore_devices
    assert restored.data_state == {"next_index": 3}
    ckpt.close()
    assert abstract_with_shardings  # public helper stays importable for callers


def _state(features=(32,), name="mlp", norm="batchnorm", seed=0):
    c = get_config()
    c.seed = seed
    cnn_only = {"hidden": 32} if name == "cnn" else {}
    c.model = model_config(name, features=features, norm=norm, **cnn_only)
    state, _, _ = create_state_and_steps(c, sharding.create_mesh(-1), _fmnist_info(c))
    return state


def _save(tmp_path, state):
    ckpt = Checkpointer(
        str(tmp_path / "src" / "checkpoints"),
        keep=1,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=False,
    )
    ckpt.save(7, {"train_state": state}, {}, {"config": {}}, None)
    ckpt.close()
    return str(tmp_path / "src")


def test_warm_start_loads_params_but_not_the_optimizer(tmp_path):
    source = _state(seed=1)
    source = source.replace(opt_state=jax.tree.map(lambda x: x + 1, source.opt_state))
    target = _state(seed=2)
    loaded = warm_start(target, _save(tmp_path, source))
    np.testing.assert_array_equal(params_digest(loaded), params_digest(source))
    assert not np.array_equal(params_digest(loaded), params_digest(target))
    chex_equal = jax.tree.map(np.array_equal, loaded.opt_state, target.opt_state)
    assert all(jax.tree.leaves(chex_equal)), "optimizer state must stay freshly initialized"
    assert int(loaded.step) == 0


def test_warm_start_partial_match_keeps_init_for_new_layers(tmp_path):
    source = _state(name="mlp", features=(32,), norm="none", seed=1)
    target = _state(name="mlp", features=(32,), norm="layernorm", seed=2)
    loaded = warm_start(target, _save(tmp_path, source))
    np.testing.assert_array_equal(loaded.params["head"]["kernel"], source.params["head"]["kernel"])
    np.testing.assert_array_equal(
        loaded.params["norms"][0]["layer"]["scale"], target.params["norms"][0]["layer"]["scale"]
    )


def test_warm_start_shape_mismatch_names_the_parameter(tmp_path):
    path = _save(tmp_path, _state(features=(32,)))
    with pytest.raises(
        CheckpointError,
        match=r"params/dense/0/bias has shape \(32,\) in the checkpoint but \(48,\)",
    ):
        warm_start(_state(features=(48,)), path)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        warm_start(_state(), str(tmp_path / "nowhere"))


def test_eval_command_and_cli_warm_start(tmp_path, _trained20):
    source = _copy_of(_trained20, tmp_path)
    final = json.loads((source / "final_metrics.json").read_text())

    def evaluate(which):
        return _CLI("eval", "--workdir", str(source), f"--checkpoint={which}", timeout=300)

    latest = evaluate("latest")
    assert latest.returncode == 0, latest.stderr[-3000:]
    result = json.loads(latest.stdout.strip().splitlines()[-1])
    assert result["step"] == 20
    assert result["test/accuracy"] == final["test/accuracy"]  # same params, same data
    assert (source / "eval" / "eval_latest_step20.json").exists()
    assert json.loads(evaluate("10").stdout.strip().splitlines()[-1])["step"] == 10
    val = {
        r["step"]: r["validation/accuracy"]
        for r in read_metrics(source)
        if "validation/accuracy" in r
    }
    best = json.loads(evaluate("best").stdout.strip().splitlines()[-1])
    assert best["step"] == max(val, key=lambda s: (val[s], s))
    bad = evaluate("123")
    assert bad.returncode == 2 and "use best, latest or one of the saved steps" in bad.stderr

    tuned = _run(tmp_path / "tuned", "--config.total_steps=10", f"--config.init_from={source}")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert "warm start from" in tuned.stderr and "checkpoints/20" in tuned.stderr
    assert "Metadata file does not exist" not in tuned.stderr  # orbax's noise, filtered


def test_failed_save_is_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, _trained20):
    workdir = _copy_of(_trained20, tmp_path)
    # A 100 KB file-size limit makes checkpoint writes fail as on a full disk, without root or
    # a mount; SIGXFSZ is ignored so the write returns an error instead of killing the process.
    # (bash sets the limit: a preexec_fn would fork() a process that runs JAX threads.)
    command = " ".join(shlex.quote(a) for a in _cmd(workdir, "--config.total_steps=40"))
    full = subprocess.run(
        ["bash", "-c", f"ulimit -f 100 && trap '' XFSZ && exec {command}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=300,
    )
    assert full.returncode == 2, full.stderr[-3000:]
    # Orbax also logs its background thread's traceback; our summary is one "error:" line.
    lines = [x for x in full.stderr.splitlines() if x.startswith("error: saving a checkpoint")]
    assert len(lines) == 1 and "File too large" in lines[0], full.stderr[-3000:]
    assert "Earlier complete checkpoints are untouched" in lines[0]
    again = _run(workdir, "--config.total_steps=40")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint step 20" in again.stderr


@pytest.mark.parametrize("mode, best", [("max", 2), ("min", 3)])
def test_keeps_latest_n_plus_best_n(tmp_path, mode, best):
    ckpt = Checkpointer(
        str(tmp_path / "ck"),
        keep=2,
        keep_best=1,
        best_metric="validation/accuracy",
        best_mode=mode,
        async_save=True,
    )
    tree = {"x": jax.numpy.arange(4.0)}
    accuracies = {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.6, 5: 0.7}
    for step, acc in accuracies.items():
        ckpt.save(step, tree, {}, {}, {"validation/accuracy": acc, "validation/loss": 1.0})
    ckpt.wait()
    assert ckpt.steps() == sorted({best, 4, 5})
    assert ckpt.best_step() == best
    ckpt.close()


def _fmnist_info(c):
    return get_dataset_info(data_options(c))
