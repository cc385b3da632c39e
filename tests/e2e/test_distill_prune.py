"""Distillation and pruning through the real loop on Fashion-MNIST: a student distilled from a
finished teacher run and pruned on the way resumes bitwise, and its export holds the zeros."""

import os
import re
import shutil

import jax
import numpy as np
import pytest

from jaxtrain import prune
from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.tools.evaluate import restore_run_state
from jaxtrain.tools.export import export_model
from jaxtrain.train import train_and_evaluate
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))


def _config(**overrides):
    c = get_config()
    c.data.data_dir, c.data.validation_size = DATA_DIR, 1000
    c.total_steps, c.log_every, c.eval_every, c.checkpoint.every = 8, 4, 8, 4
    c.batch_size, c.eval_batch_size, c.eval_steps = 32, 1000, 1
    c.optimizer.warmup_steps = 2
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


@pytest.fixture(scope="module")
def student_runs(tmp_path_factory):
    """A teacher MLP run, then a smaller MLP student with dropout, distilled from it and pruned
    to 50% by step 6, trained straight through (a) and cut back to its step-4 checkpoint and
    resumed (b)."""
    root = tmp_path_factory.mktemp("shrink")
    teacher = _config(model=model_config("mlp", features=(64,), dropout=0.0))
    train_and_evaluate(teacher, str(root / "teacher"), progress=False)
    student = _config(
        **{
            "model": model_config("mlp", features=(32,), dropout=0.3),
            "distill.teacher": str(root / "teacher"),
            "distill.alpha": 0.7,
            "prune.target_sparsity": 0.5,
            "prune.end_step": 6,
            "prune.every": 2,
        }
    )
    full = train_and_evaluate(student, str(root / "a"), progress=False)
    shutil.copytree(root / "a", root / "b")
    shutil.rmtree(root / "b" / "checkpoints" / "8")
    resumed = train_and_evaluate(student, str(root / "b"), progress=False)
    return root, full, resumed


def test_distilled_pruned_student_resumes_bitwise(student_runs):
    root, full, resumed = student_runs
    leaves = lambda s: [np.asarray(x) for x in jax.tree.leaves(s)]  # noqa: E731
    for a, b in zip(leaves(full.state), leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)  # params, optimizer state and masks
    train = lambda d: [r for r in read_metrics(d) if "train/loss" in r]  # noqa: E731
    assert [r["train/loss"] for r in train(root / "b")] == [
        r["train/loss"] for r in train(root / "a")
    ]
    assert full.metrics["test/accuracy"] == resumed.metrics["test/accuracy"]
    assert full.metrics["prune/sparsity"] == pytest.approx(0.5, abs=1e-3)


def _f32_constants(module_text: str) -> dict[tuple[int, ...], list[np.ndarray]]:
    """The float32 dense constants of a StableHLO module, by shape. Large ones are printed as
    little-endian hex, small ones as decimal literals with enough digits to round-trip."""
    found: dict[tuple[int, ...], list[np.ndarray]] = {}
    for body, dims in re.findall(r"dense<([^>]*)> : tensor<([0-9x]+)xf32>", module_text):
        shape = tuple(int(d) for d in dims.split("x"))
        if body.startswith('"0x'):
            values = np.frombuffer(bytes.fromhex(body[3:-1]), dtype="<f4")
        else:
            values = np.asarray(re.findall(r"[-+0-9.eE]+", body), dtype=np.float64)
        if values.size == np.prod(shape):
            found.setdefault(shape, []).append(values.astype(np.float32).reshape(shape))
    return found


def test_export_holds_the_pruned_zeros(tmp_path, student_runs):
    root, full, _ = student_runs
    out = tmp_path / "student.jaxexport"
    export_model(str(root / "a"), "latest", str(out))
    exported = jax.export.deserialize(out.read_bytes())
    constants = _f32_constants(exported.mlir_module())
    run = restore_run_state(str(root / "a"), "latest")
    kernels = {
        jax.tree_util.keystr(p): np.asarray(w)
        for p, w in jax.tree_util.tree_flatten_with_path(run.state.params)[0]
        if prune.is_prunable(p, w.shape, "unstructured")
    }
    assert len(kernels) == 2  # hidden, head
    for name, w in kernels.items():
        assert np.mean(w == 0) == pytest.approx(0.5, abs=1 / w.size), name
        baked = [c for c in constants.get(w.shape, []) if np.array_equal(c, w)]
        assert baked, f"{name} {w.shape} is not in the exported module as trained"


def test_a_teacher_that_is_not_a_run_stops_before_anything_is_written(tmp_path):
    c = _config(**{"distill.teacher": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"config\.distill\.teacher: .* is not a finished"):
        train_and_evaluate(c, str(tmp_path / "student"), progress=False)
    assert not (tmp_path / "student").exists()
