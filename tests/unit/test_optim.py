"""Optimizers, schedules, clipping and weight-decay masking."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain import optim
from jaxtrain.config import OPTIMIZER_NAMES

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
    for _ in range(100):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
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


@pytest.mark.parametrize("name", ["sgd", "adamw"])
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
