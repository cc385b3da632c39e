"""Two processes on localhost with JAX's real distributed runtime (gloo CPU collectives).

2 processes x 4 CPU devices must train exactly like 1 process x 8 devices with the same global
batch, and a checkpoint they write must restore in a single process.
"""

import os
import socket
import subprocess
import sys

import numpy as np
from forked_cli import ForkedCLI

from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
# A tiny MLP with batchnorm (cross-device batch statistics) and dropout: what the 2-process
# guarantee is about is the runtime, not the model, so the cheapest model that has every kind of
# state. Evaluations cover the first 2 batches of each split (config.eval_steps); batches are
# read as needed (data.in_memory=false: decoding the whole split costs ~13 CPU-s a process).
ARGS = [
    "--config", "experiments/fashion_mnist_mlp.py",
    "--config.model.features=(32,)", "--config.model.norm=batchnorm", "--config.model.dropout=0.3",
    "--config.batch_size=64", "--config.eval_batch_size=200", "--config.eval_steps=2",
    "--config.data.in_memory=false",
    "--config.data.validation_size=1000", "--config.log_every=5", "--config.eval_every=5",
    "--config.checkpoint.every=5", "--config.optimizer.warmup_steps=3", "--progress=false",
    "--config.optimizer.name=momentum", "--config.optimizer.learning_rate=0.05",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAXTRAIN_DATA_DIR"] = DATA_DIR
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


_CLI = ForkedCLI(REPO, default_env=lambda: _env(8))


def _train(workdir, *extra, devices=8):
    """One process, forked from the CLI server (no Python and JAX start-up to pay)."""
    return _CLI("train", "--workdir", str(workdir), *ARGS, *extra, env=_env(devices), timeout=300)


def _train_two_processes(workdir, *extra):
    distributed = [
        "--config.distributed.num_processes=2",
        f"--config.distributed.coordinator_address=localhost:{_free_port()}",
        "--config.distributed.cpu_devices_per_process=4",
        "--config.distributed.timeout_s=120",
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jaxtrain",
                "train",
                "--workdir",
                str(workdir),
                *ARGS,
                *distributed,
                f"--config.distributed.process_id={p}",
                *extra,
            ],
            cwd=REPO,
            env=_env(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for p in range(2)
    ]
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outputs


def _series(workdir, key):
    return [r[key] for r in read_metrics(workdir) if key in r]


def test_two_processes_match_one_process_and_share_checkpoints(tmp_path):
    one = _train(tmp_path / "one", "--config.total_steps=10")
    assert one.returncode == 0, one.stderr[-3000:]
    _train_two_processes(tmp_path / "two", "--config.total_steps=10")

    for key in ("train/loss", "train/accuracy", "validation/loss", "test/loss"):
        np.testing.assert_allclose(
            _series(tmp_path / "two", key), _series(tmp_path / "one", key), rtol=1e-5, err_msg=key
        )
    assert _series(tmp_path / "two", "test/accuracy") == _series(tmp_path / "one", "test/accuracy")
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints"), key=int) == ["5", "10"]

    # The 2-process checkpoint restores in one process (8 devices) and training continues.
    resumed = _train(tmp_path / "two", "--config.total_steps=15")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint step 10" in resumed.stderr


def test_unreachable_coordinator_is_a_clear_error_not_a_hang(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxtrain", "train", "--workdir", str(tmp_path / "r"), *ARGS,
         "--config.distributed.num_processes=2", "--config.distributed.process_id=1",
         f"--config.distributed.coordinator_address=localhost:{_free_port()}",
         "--config.distributed.cpu_devices_per_process=4", "--config.distributed.timeout_s=3"],
        capture_output=True, text=True, cwd=REPO, env=_env(None), timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert "unreachable from process 1 within 3s" in out.stderr


def test_missing_process_fails_within_the_timeout(tmp_path):
    # Process 0 of 2 alone: JAX's client aborts after the timeout; it must not hang, and our
    # line before it says what it was waiting for.
    out = subprocess.run(
        [sys.executable, "-m", "jaxtrain", "train", "--workdir", str(tmp_path / "r"), *ARGS,
         "--config.distributed.num_processes=2", "--config.distributed.process_id=0",
         f"--config.distributed.coordinator_address=localhost:{_free_port()}",
         "--config.distributed.cpu_devices_per_process=4", "--config.distributed.timeout_s=3"],
        capture_output=True, text=True, cwd=REPO, env=_env(None), timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "process 0 waiting up to 3s for 2 processes to join" in out.stderr


def test_auto_without_a_cluster_is_a_clear_error(tmp_path):
    out = _train(tmp_path / "r", "--config.distributed.auto=true", devices=None)
    assert out.returncode == 2
    assert "config.distributed.auto: JAX found no cluster" in out.stderr
    assert "Traceback" not in out.stderr
