"""The pure train/eval steps, models, losses and metrics, on small synthetic batches.

Synthetic arrays are fine here: these tests check arithmetic identities, not learning.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from synthetic_data import image_info

from jaxtrain import ensemble, metrics, models
from jaxtrain.build import create_state_and_steps, model_graphdef, params_digest
from jaxtrain.checkpoint import check_compatible
from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError
from jaxtrain.losses import cross_entropy
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.step import EMATrainState, TrainState
from jaxtrain.tools.export import inference_fn

IN_SHAPE = (28, 28, 1)
INFO = image_info(IN_SHAPE)


def _batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.normal(size=(n, *IN_SHAPE)).astype(np.float32),
        "labels": rng.integers(0, 10, n).astype(np.int32),
        "mask": np.ones(n, np.float32),
    }


def _mlp_config(accum: int = 1, dropout: float = 0.0, norm: str = "layernorm"):
    c = get_config()
    c.model = model_config("mlp", features=(32,), norm=norm, dropout=dropout)
    c.optimizer.name, c.optimizer.grad_accum_steps = "sgd", accum
    c.optimizer.schedule, c.optimizer.learning_rate = "constant", 0.1
    return c


def _run_steps(c, num_devices: int, batches) -> tuple:
    mesh = sharding.create_mesh(num_devices)
    state, train, _ = create_state_and_steps(c, mesh, INFO)
    history = []
    for b in batches:
        state, m = train(state, sharding.make_global_batch(b, sharding.batch_sharding(mesh)))
        history.append(jax.device_get(m))
    return state, history


@pytest.mark.parametrize("num_devices", [1, pytest.param(8, marks=pytest.mark.multidevice)])
def test_grad_accumulation_equals_big_batch(num_devices):
    batches = [_batch(64, seed=s) for s in range(3)]
    big, h_big = _run_steps(_mlp_config(accum=1), num_devices, batches)
    acc, h_acc = _run_steps(_mlp_config(accum=4), num_devices, batches)
    np.testing.assert_allclose(params_digest(acc), params_digest(big), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([h["loss"] for h in h_acc], [h["loss"] for h in h_big], rtol=1e-5)
    assert int(acc.step) == 3


def test_grad_accumulation_differs_if_broken():
    """Guards the test above: a different micro-batch split must actually change something."""
    batches = [_batch(64, seed=s) for s in range(2)]
    big, _ = _run_steps(_mlp_config(accum=1), 1, batches)
    other, _ = _run_steps(_mlp_config(accum=1), 1, batches[::-1])
    assert not np.allclose(params_digest(other), params_digest(big))


def test_step_is_deterministic_and_dropout_uses_the_seed():
    c = _mlp_config(dropout=0.5)
    s1, h1 = _run_steps(c, 1, [_batch(32)] * 2)
    s2, h2 = _run_steps(c, 1, [_batch(32)] * 2)
    chex.assert_trees_all_equal(s1.params, s2.params)
    c.seed = 1
    s3, _ = _run_steps(c, 1, [_batch(32)] * 2)
    assert not np.array_equal(params_digest(s1), params_digest(s3))


def test_rbg_dropout_rng_keeps_init_and_is_deterministic():
    """config.dropout_rng=rbg: same initial params as threefry, its own dropout stream, exact
    repeats, and the same loss as threefry when dropout is off."""
    base = _mlp_config(dropout=0.5)
    fast = _mlp_config(dropout=0.5)
    fast.dropout_rng = "rbg"
    mesh = sharding.create_mesh(1)
    s_base, _, _ = create_state_and_steps(base, mesh, INFO)
    s_fast, _, _ = create_state_and_steps(fast, mesh, INFO)
    chex.assert_trees_all_equal(s_fast.params, s_base.params)
    assert s_fast.rng.shape != s_base.rng.shape  # rbg keys are 4 words, threefry keys 2
    batches = [_batch(32, seed=s) for s in range(2)]
    r1, h1 = _run_steps(fast, 1, batches)
    r2, h2 = _run_steps(fast, 1, batches)
    chex.assert_trees_all_equal(r1.params, r2.params)
    t, _ = _run_steps(base, 1, batches)
    assert not np.array_equal(params_digest(r1), params_digest(t)), "different dropout masks"
    base.model.dropout = fast.model.dropout = 0.0
    _, h_t = _run_steps(base, 1, batches)
    _, h_r = _run_steps(fast, 1, batches)
    assert [h["loss"] for h in h_t] == [h["loss"] for h in h_r]


def test_unknown_dropout_rng_is_a_config_error():
    from jaxtrain.errors import ConfigError
    from jaxtrain.validation import validate_config

    c = _mlp_config()
    c.dropout_rng = "philox"
    with pytest.raises(ConfigError, match="dropout_rng"):
        validate_config(c, 1)


def test_eval_step_counts_only_unmasked_examples():
    c = _mlp_config()
    mesh = sharding.create_mesh(-1)
    state, _, evaluate = create_state_and_steps(c, mesh, INFO)
    b = _batch(16)
    b["mask"][10:] = 0.0
    out = jax.device_get(
        evaluate(state, sharding.make_global_batch(b, sharding.batch_sharding(mesh)))
    )
    assert out["count"] == 10.0
    assert out["confusion"].sum() == 10.0
    np.testing.assert_array_equal(
        out["confusion"].sum(axis=1), np.bincount(b["labels"][:10], minlength=10)
    )


def test_nonfinite_loss_names_the_step():
    c = _mlp_config()
    bad = _batch(16)
    bad["inputs"][0, 0, 0, 0] = np.nan
    _, history = _run_steps(c, 1, [_batch(16), _batch(16), bad])
    assert [int(h["nonfinite_step"]) for h in history] == [-1, -1, 2]
    with pytest.raises(FloatingPointError, match="step 2"):
        metrics.check_finite(float("nan"), 2, step=3)


def test_label_smoothing_matches_the_formula():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    labels = jnp.array([0])
    logp = jax.nn.log_softmax(logits)[0]
    eps = 0.3
    target = jnp.array([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -jnp.sum(target * logp)
    got = cross_entropy(logits, labels, label_smoothing=eps)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got > cross_entropy(logits, labels, label_smoothing=0.0)[0]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm", "none"])
def test_models_output_logits_with_and_without_jit(name, norm):
    cnn_only = {"convs_per_stage": 1, "hidden": 16} if name == "cnn" else {}
    model = models.create_model(
        name,
        num_classes=10,
        init="he",
        norm=norm,
        dropout=0.5,
        features=(8, 16),
        in_shape=IN_SHAPE,
        rngs=nnx.Rngs(0),
        **cnn_only,
    )
    x = jnp.asarray(_batch(4)["inputs"])
    key = jax.random.key(0)

    def forward(x):
        return model(x, train=False, dropout_key=key)

    eager, jitted = forward(x), nnx.jit(forward)(x)
    chex.assert_shape(eager, (4, 10))
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-5)
    # Train mode jitted (one compile for both keys; eager op-by-op compiles cost seconds).
    train = nnx.jit(lambda model, x, k: model(x, train=True, dropout_key=k))
    t1, t2 = train(model, x, jax.random.key(1)), train(model, x, jax.random.key(2))
    assert not np.allclose(t1, t2), "dropout must depend on the key in train mode"


def test_he_and_xavier_initializers_have_their_variances():
    def kernel_std(init):
        m = models.create_model(
            "mlp",
            num_classes=10,
            init=init,
            norm="none",
            dropout=0.0,
            features=(512,),
            in_shape=IN_SHAPE,
            rngs=nnx.Rngs(0),
        )
        return float(jnp.std(m.dense[0].kernel[...]))

    fan_in, fan_out = 784, 512
    assert kernel_std("he") == pytest.approx(np.sqrt(2 / fan_in), rel=0.05)
    assert kernel_std("xavier") == pytest.approx(np.sqrt(2 / (fan_in + fan_out)), rel=0.05)


def test_macro_metrics_from_confusion():
    # rows: true class, cols: predicted.
    cm = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    out = metrics.summarize_confusion(cm)
    assert out["accuracy"] == pytest.approx(5 / 8)
    precision = [1.0, 2 / 3, 0.0]
    recall = [3 / 4, 1 / 2, 0.0]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]
    assert out["precision_macro"] == pytest.approx(np.mean(precision))
    assert out["recall_macro"] == pytest.approx(np.mean(recall))
    assert out["f1_macro"] == pytest.approx(np.mean(f1))


# --- EMA of the weights (config.optimizer.ema_decay) --------------------------------------


def _host(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


@functools.lru_cache
def _ema_run(decay: float, batch_seeds: tuple[int, ...], seed: int = 0):
    """A run of the small MLP over `batch_seeds` batches; cached: the tests only read it.
    Returns (state, params after each step, the eval step, mesh)."""
    c = _mlp_config()
    c.optimizer.ema_decay, c.seed = decay, seed
    mesh = sharding.create_mesh(1)
    state, train, evaluate = create_state_and_steps(c, mesh, INFO)
    history = [_host(state.params)]
    for s in batch_seeds:
        batch = sharding.make_global_batch(_batch(32, seed=s), sharding.batch_sharding(mesh))
        state, _ = train(state, batch)
        history.append(_host(state.params))
    return state, history, evaluate, mesh


def test_ema_follows_its_recursion_and_does_not_change_training():
    plain, _, _, _ = _ema_run(0.0, (0, 2))
    assert type(plain) is TrainState and not hasattr(plain, "ema_params")  # off: no new leaf
    state, history, _, _ = _ema_run(0.9, (0, 2))
    assert isinstance(state, EMATrainState)
    np.testing.assert_array_equal(params_digest(state), params_digest(plain))  # same training
    expected = history[0]  # the average starts at the initial params
    for params in history[1:]:
        expected = [
            np.float32(0.9) * e + np.float32(0.1) * p for e, p in zip(expected, params, strict=True)
        ]
    for got, want in zip(_host(state.ema_params), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(_host(state.ema_params)[0], history[-1][0])


def test_eval_and_export_use_the_ema_weights():
    state, _, evaluate, mesh = _ema_run(0.9, (0, 2))
    b = sharding.make_global_batch(_batch(16, seed=9), sharding.batch_sharding(mesh))
    as_params = TrainState(
        step=state.step,
        params=state.ema_params,
        opt_state=state.opt_state,
        rng=state.rng,
        model_state=state.model_state,
    )
    live = as_params.replace(params=state.params)
    plain_eval = _ema_run(0.0, (0, 2))[2]
    got = jax.device_get(evaluate(state, b))
    chex.assert_trees_all_equal(got, jax.device_get(plain_eval(as_params, b)))
    assert got["loss_sum"] != jax.device_get(plain_eval(live, b))["loss_sum"]
    graphdef = model_graphdef(_mlp_config(), INFO)
    images = np.random.default_rng(0).integers(0, 256, (4, *IN_SHAPE), dtype=np.uint8)
    chex.assert_trees_all_close(
        inference_fn(graphdef, state, 0.0, 1.0)(images),
        inference_fn(graphdef, as_params, 0.0, 1.0)(images),
        atol=1e-6,
    )
    assert (state.weights, as_params.weights) == ("ema", "params")


def test_new_params_restart_the_ema_in_their_own_buffers():
    state = _ema_run(0.9, (0, 2))[0]
    new = jax.tree.map(lambda x: x + 1.0, state.params)
    moved = state.with_params(new)
    chex.assert_trees_all_equal(moved.ema_params, new)
    pairs = zip(jax.tree.leaves(moved.ema_params), jax.tree.leaves(moved.params), strict=True)
    for a, b in pairs:
        assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()  # both donated each step


# One more compile of a vmapped step (~40 s on 2 shared cores): in `make test-slow`.
@pytest.mark.slow
def test_ema_with_vmapped_seeds_equals_each_seed_alone():
    c = _mlp_config()
    c.optimizer.ema_decay, c.num_seeds = 0.9, 2
    mesh = sharding.create_mesh(1)
    both, train, _ = create_state_and_steps(c, mesh, INFO)
    member = ensemble.member_sharding(sharding.batch_sharding(mesh))
    for seeds in ((0, 1), (2, 3)):  # member k reads batches k, k + 2
        stacked = {k: np.stack([_batch(32, seed=s)[k] for s in seeds]) for k in _batch(1)}
        both, _ = train(both, jax.device_put(stacked, member))
    for k in range(2):
        alone = _ema_run(0.9, (k, k + 2), seed=k)[0]
        for m, a in zip(_host(both.ema_params), _host(alone.ema_params), strict=True):
            np.testing.assert_allclose(m[k], a, rtol=1e-5, atol=1e-6)


def test_ema_on_or_off_must_match_the_checkpoint():
    saved, current = get_config().to_dict(), get_config().to_dict()
    current["optimizer"]["ema_decay"] = 0.999
    with pytest.raises(CheckpointError, match=r"optimizer.ema_decay: checkpoint 0.0 vs config"):
        check_compatible(saved, current, "here")
    del saved["optimizer"]["ema_decay"]  # saved before the field existed: no EMA
    check_compatible(saved, get_config().to_dict(), "here")
