"""EMA of the weights and profiler traces on tiny real runs: an EMA run resumes bitwise, its
export carries the average, and a profiled run writes a trace and the same numbers."""

import glob
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrain import data as data_lib
from jaxtrain.build import model_graphdef
from jaxtrain.config import get_config
from jaxtrain.evaluation import data_options
from jaxtrain.models import model_config
from jaxtrain.tools.export import export_model
from jaxtrain.train import train_and_evaluate
from jaxtrain.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
TIMED = ("perf/", "time/")  # wall-clock values, different in every run


def _config(**overrides):
    c = get_config()
    c.data.data_dir, c.data.validation_size = DATA_DIR, 1000
    c.total_steps, c.log_every, c.eval_every, c.eval_steps = 8, 2, 4, 1
    c.batch_size, c.eval_batch_size = 32, 1000
    c.model = model_config("mlp", features=(32,), norm="batchnorm", dropout=0.3)
    c.optimizer.warmup_steps, c.optimizer.ema_decay = 2, 0.9
    c.checkpoint.every, c.checkpoint.keep, c.checkpoint.keep_best = 4, 2, 0
    for key, value in overrides.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def _values(workdir) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(TIMED)} for r in read_metrics(workdir)]


def _leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ema")
    result = train_and_evaluate(_config(), str(workdir), progress=False)
    return workdir, result


def test_ema_run_resumes_bitwise(ema_run, tmp_path):
    ref, result = ema_run
    resumed = tmp_path / "resumed"
    shutil.copytree(ref, resumed)
    shutil.rmtree(resumed / "checkpoints" / "8")  # as if killed between the saves at 4 and 8
    again = train_and_evaluate(_config(), str(resumed), progress=False)
    assert _values(resumed) == _values(ref)
    assert len(_leaves(again.state)) == len(_leaves(result.state))
    for a, b in zip(_leaves(again.state), _leaves(result.state), strict=True):
        np.testing.assert_array_equal(a, b)  # params, optimizer state, EMA, batch statistics
    assert not np.array_equal(_leaves(result.state.ema_params)[0], _leaves(result.state.params)[0])


def test_export_uses_the_ema_weights(ema_run, tmp_path):
    workdir, result = ema_run
    out = tmp_path / "model.jaxexport"
    summary = export_model(str(workdir), "latest", str(out))
    assert summary["weights"] == "ema" and summary["step"] == 8
    exported = jax.export.deserialize(out.read_bytes())
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    got = np.asarray(exported.call(images))
    mean, std = data_lib.pixel_stats("fashion_mnist", DATA_DIR)
    x = (images.astype(np.float32) / 255.0 - mean) / std
    c, state = _config(), result.state
    graphdef = model_graphdef(c, data_lib.get_dataset_info(data_options(c)))
    for params, same in ((state.ema_params, True), (state.params, False)):
        model = nnx.merge(graphdef, params, state.model_state, copy=True)
        want = np.asarray(model(x, train=False, dropout_key=jax.random.key(0)))
        assert np.allclose(got, want, atol=1e-5) == same


def test_profiled_run_writes_a_trace_and_the_same_metrics(ema_run, tmp_path):
    ref, _ = ema_run
    workdir = tmp_path / "profiled"
    train_and_evaluate(
        _config(**{"profile.start_step": 2, "profile.num_steps": 3}), str(workdir), progress=False
    )
    traces = glob.glob(str(workdir / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    assert _values(workdir) == _values(ref)
