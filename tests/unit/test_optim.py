"""Optimizers, schedules, clipping and weight-decay masking."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrain import models, optim
from jaxtrain.config import OPTIMIZER_NAMES
from jaxtrain.errors import ConfigError
from jaxtrain.models.gpt import GPT, GPTConfig

SCHED = dict(
    learning_rate=1.0,
    total_steps=100,
    warmup_steps=0,
    end_lr_factor=0.0,
    decay_rate=0.1,
    boundaries=(0.5, 0.75),
    decay_steps=10,
    restart_period=20,
    restart_mult=2.0,
)
OPT = dict(weight_decay=0.0, clip_norm=0.0, momentum=0.9, b1=0.9, b2=0.999, eps=1e-8)


def _lr(name, step, **overrides):
    return float(optim.get_schedule(name, **{**SCHED, **overrides})(step))


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_optimizer_minimizes_a_quadratic(name):
    params = {"w": jnp.array([[3.0, -2.0]]), "b": jnp.array([1.0])}
    loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
    tx = optim.get_optimizer(name, 0.1, **OPT)
    state = tx.init(params)
    start = loss(params)
    update = jax.jit(tx.update)
    for _ in range(100):
        updates, state = update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * start


def test_schedules_at_landmarks():
    assert _lr("constant", 77) == 1.0
    assert _lr("piecewise", 49) == 1.0
    assert _lr("piecewise", 50) == pytest.approx(0.1)
    assert _lr("piecewise", 80) == pytest.approx(0.01)
    assert _lr("exponential", 10) == pytest.approx(0.1)
    assert _lr("exponential", 20) == pytest.approx(0.01)
    assert _lr("cosine", 0) == 1.0
    assert _lr("cosine", 50) == pytest.approx(0.5)
    assert _lr("cosine", 100) == pytest.approx(0.0, abs=1e-7)
    assert _lr("cosine", 100, end_lr_factor=0.1) == pytest.approx(0.1)


def test_warmup_is_linear_then_hands_over():
    assert _lr("warmup_cosine", 0, warmup_steps=10) == 0.0
    assert _lr("warmup_cosine", 5, warmup_steps=10) == pytest.approx(0.5)
    assert _lr("warmup_cosine", 10, warmup_steps=10) == pytest.approx(1.0)
    # Cosine then runs over the remaining 90 steps: halfway at step 10 + 45.
    assert _lr("warmup_cosine", 55, warmup_steps=10) == pytest.approx(0.5)
    assert _lr("constant", 3, warmup_steps=6) == pytest.approx(0.5)


def test_sgdr_restarts_with_growing_cycles():
    # Cycles of 20, 40, 80 steps: restarts at 20 and 60.
    assert _lr("sgdr", 10) == pytest.approx(0.5)
    assert _lr("sgdr", 19) < 0.01
    assert _lr("sgdr", 20) == pytest.approx(1.0)
    assert _lr("sgdr", 40) == pytest.approx(0.5)
    assert _lr("sgdr", 60) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["sgd", "adamw", "muon"])
def test_weight_decay_skips_biases_and_scales(name):
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,)), "scale": jnp.ones((2,))}
    tx = optim.get_optimizer(name, 0.1, **{**OPT, "weight_decay": 0.5})
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    assert float(jnp.abs(updates["kernel"]).min()) > 0
    chex.assert_trees_all_equal(updates["bias"], jnp.zeros(2))
    chex.assert_trees_all_equal(updates["scale"], jnp.zeros(2))


def test_global_norm_clipping():
    params = {"a": jnp.zeros(3), "b": jnp.zeros(4)}
    grads = {"a": jnp.full(3, 10.0), "b": jnp.full(4, -10.0)}
    tx = optim.get_optimizer("sgd", 1.0, **{**OPT, "clip_norm": 2.0})
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(float(optax.tree.norm(updates)), 2.0, rtol=1e-6)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: sgd, momentum"):
        optim.get_optimizer("lion", 0.1, **OPT)
    with pytest.raises(ValueError, match="valid: constant, piecewise"):
        optim.get_schedule("cosine_warmup_10p", **SCHED)


# --- Muon (optimizer.name=muon) -----------------------------------------------------------


def _muon_leaves(create) -> set[str]:
    """The params of model `create()` (built abstractly: shapes only) that Muon takes."""
    _, params, _ = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    flat = jax.tree_util.tree_flatten_with_path(optim.muon_labels(params))[0]
    return {jax.tree_util.keystr(p).removesuffix(".value") for p, x in flat if x == "muon"}


def test_muon_takes_the_2d_hidden_matrices_only():
    cfg = GPTConfig(vocab_size=11, max_len=8, num_layers=2, d_model=8, num_heads=2, d_ff=16)
    # Not embed, pos_embed (2-D but embeddings), qkv (4-D), out (3-D), biases or norms.
    assert _muon_leaves(lambda: GPT(cfg, rngs=nnx.Rngs(0))) == {
        f"['blocks'][{i}]['{w}']" for i in (0, 1) for w in ("up", "down")
    }
    image = dict(num_classes=10, init="he", norm="batchnorm", dropout=0.0, in_shape=(8, 8, 1))
    mlp = lambda: models.create_model("mlp", features=(16, 8), rngs=nnx.Rngs(0), **image)  # noqa: E731
    assert _muon_leaves(mlp) == {"['dense'][0]['kernel']", "['dense'][1]['kernel']"}
    cnn = lambda: models.create_model(  # noqa: E731
        "cnn", features=(4,), convs_per_stage=1, hidden=16, rngs=nnx.Rngs(0), **image
    )
    assert _muon_leaves(cnn) == {"['hidden']['kernel']"}  # not the 4-D convs, not the head


def test_muon_without_a_hidden_matrix_is_a_config_error():
    params = {
        "stem": {"kernel": jnp.zeros((3, 3, 1, 8))},
        "embed": jnp.zeros((5, 8)),
        "head": {"kernel": jnp.zeros((8, 10)), "bias": jnp.zeros(10)},
    }
    tx = optim.get_optimizer("muon", 0.1, **OPT)
    with pytest.raises(ConfigError, match="config.optimizer.name: muon acts on 2-D hidden"):
        tx.init(params)


def _tiny_mlp(seed: int) -> dict:
    """A small MLP's params, drawn with numpy (no per-op XLA compiles in these tests)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {
        "dense": {"kernel": normal(16, 32) * 0.25, "bias": jnp.zeros(32)},
        "hidden": {"kernel": normal(32, 64) * 0.18},
        "head": {"kernel": normal(64, 4) * 0.13},
    }


def _condition(x: jax.Array) -> float:
    sv = np.linalg.svd(np.asarray(x), compute_uv=False)
    return float(sv.max() / sv.min())


MUON_OPT = {**OPT, "b2": 0.99}


def test_muon_orthogonalizes_hidden_updates_and_leaves_the_rest_to_adamw():
    params, grads = _tiny_mlp(0), _tiny_mlp(1)  # Gaussian "gradients" of the same shapes
    muon, adamw = (optim.get_optimizer(n, 0.01, **MUON_OPT) for n in ("muon", "adamw"))
    first, _ = jax.jit(muon.update)(grads, muon.init(params), params)
    plain, _ = jax.jit(adamw.update)(grads, adamw.init(params), params)
    # The head and the biases take exactly AdamW's update.
    chex.assert_trees_all_close(first["head"], plain["head"], rtol=1e-6)
    chex.assert_trees_all_close(first["dense"]["bias"], plain["dense"]["bias"], rtol=1e-6)
    # The hidden matrices an orthogonalized one: Newton-Schulz moves every singular value of a
    # [32, 64] Gaussian gradient (spread ~6x) near 1; AdamW's sign-like update keeps the spread.
    assert _condition(grads["hidden"]["kernel"]) > 4.0
    assert _condition(first["dense"]["kernel"]) < 2.0
    assert _condition(first["hidden"]["kernel"]) < 2.0
    assert _condition(plain["hidden"]["kernel"]) > 4.0


def test_muon_trains_a_tiny_mlp():
    params, rng = _tiny_mlp(0), np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 4, 64), jnp.int32)

    def loss(p):
        h = jax.nn.relu(x @ p["dense"]["kernel"] + p["dense"]["bias"])
        logits = jax.nn.relu(h @ p["hidden"]["kernel"]) @ p["head"]["kernel"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    muon = optim.get_optimizer("muon", 0.01, **MUON_OPT)

    @jax.jit
    def step(p, state):
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = muon.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    state, losses = muon.init(params), []
    for _ in range(21):
        params, state, value = step(params, state)
        losses.append(float(value))
    assert losses[-1] < 0.7 * losses[0]
