"""Kills at random points (slow): KILLS runs of one config, each SIGKILLed at a random moment of
its training loop (during a step, an asynchronous save, an evaluation or a metrics write) and
then re-run with the same command, must each end bitwise equal to the uninterrupted run: the
same metrics.jsonl values and the same final parameters.

The moment is drawn uniformly over the loop's wall time measured on the uninterrupted run; what
the kill interrupted is read back from the workdir (an orbax temporary folder: a save; a last
line without a newline: a metrics write) and printed with the result.
"""

import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxtrain.writers import read_metrics

REPO = str(Path(__file__).resolve().parents[2])
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
KILLS = 20
SEED = 17  # of the kill times; the moments themselves also depend on the machine's speed
# 60 steps of a small MLP with dropout: a metrics write every 5 steps, an evaluation and an
# asynchronous save every 10, so a random moment of the loop often falls in one of them.
ARGS = [
    "--config",
    "experiments/fashion_mnist_mlp.py",
    "--config.total_steps=60",
    "--config.log_every=5",
    "--config.eval_every=10",
    "--config.eval_steps=2",
    "--config.eval_batch_size=500",
    "--config.checkpoint.every=10",
    "--config.optimizer.warmup_steps=5",
    "--config.model.features=(64,)",
    "--config.data.in_memory=false",
    "--noprogress",
]


def _start(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jaxtrain", "train", "--workdir", str(workdir), *ARGS],
        cwd=REPO,
        env={**os.environ, "JAXTRAIN_DATA_DIR": DATA_DIR},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_loop(workdir: Path, proc: subprocess.Popen) -> None:
    """Until metrics.jsonl exists: the writer opens it right before the first step."""
    deadline = time.monotonic() + 300
    while not (workdir / "metrics.jsonl").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run never reached its loop"
        time.sleep(0.01)


def _interrupted(workdir: Path) -> str:
    """What the kill left half done, as far as the workdir shows."""
    if any(".orbax-checkpoint-tmp" in p.name for p in (workdir / "checkpoints").iterdir()):
        return "save"
    text = (workdir / "metrics.jsonl").read_text()
    if text and not text.endswith("\n"):
        return "metrics write"
    return "step or evaluation"


def _values(workdir: Path) -> list[dict]:
    keep = ("train/", "validation/", "test/")
    return [{k: v for k, v in r.items() if k == "step" or k.startswith(keep)}
            for r in read_metrics(workdir)]  # fmt: skip


def _final_params(workdir: Path) -> np.ndarray:
    path = workdir / "checkpoints" / "60" / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    layout = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), layout)
    tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree["train_state"])])


@pytest.mark.slow
def test_random_kills_then_resume_end_bitwise_equal(tmp_path):
    ref = tmp_path / "ref"
    proc = _start(ref)
    _wait_for_loop(ref, proc)
    loop_start = time.monotonic()
    _, err = proc.communicate(timeout=600)
    loop_seconds = time.monotonic() - loop_start
    assert proc.returncode == 0, err[-3000:]

    rng = random.Random(SEED)
    interrupted = collections.Counter()
    for i in range(KILLS):
        run = tmp_path / f"kill{i}"
        for _attempt in range(5):  # redraw when the run finished before the kill
            shutil.rmtree(run, ignore_errors=True)
            proc = _start(run)
            _wait_for_loop(run, proc)
            delay = rng.uniform(0.0, loop_seconds)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                break
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"kill {i}: the run always finished first"
        interrupted[_interrupted(run)] += 1

        resumed = subprocess.run(
            [sys.executable, "-m", "jaxtrain", "train", "--workdir", str(run), *ARGS],
            cwd=REPO,
            env={**os.environ, "JAXTRAIN_DATA_DIR": DATA_DIR},
            capture_output=True,
            text=True,
            timeout=600,
        )
        where = f"kill {i} after {delay:.2f}s of a {loop_seconds:.2f}s loop"
        assert resumed.returncode == 0, f"{where}: {resumed.stderr[-3000:]}"
        assert _values(run) == _values(ref), where
        np.testing.assert_array_equal(_final_params(run), _final_params(ref), err_msg=where)
        shutil.rmtree(run)
    print(f"{KILLS} of {KILLS} killed runs resumed bitwise equal; interrupted: {dict(interrupted)}")
