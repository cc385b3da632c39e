"""Gradual magnitude pruning (jaxtrain/prune.py) on a tiny MLP and synthetic batches."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_step import INFO, _batch

from jaxtrain import prune
from jaxtrain.build import abstract_like, create_state_and_steps, params_digest
from jaxtrain.checkpoint import Checkpointer, check_compatible
from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.validation import validate_config


def _config(optimizer="momentum", target=0.75, start=1, end=5, every=2, pattern="unstructured"):
    c = get_config()
    c.model = model_config("mlp", features=(32,), norm="layernorm", dropout=0.0)
    c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = optimizer, "constant", 0.05
    c.optimizer.weight_decay, c.optimizer.clip_norm = 0.01, 1.0
    c.total_steps = 8
    c.prune.target_sparsity, c.prune.pattern = target, pattern
    c.prune.start_step, c.prune.end_step, c.prune.every = start, end, every
    return c


def _train(c, steps, state=None):
    mesh = sharding.create_mesh(1)
    fresh, train, _ = create_state_and_steps(c, mesh, INFO)
    state = fresh if state is None else state
    history = []
    for i in range(int(state.step), int(state.step) + steps):
        batch = sharding.make_global_batch(_batch(32, seed=i), sharding.batch_sharding(mesh))
        state, _ = train(state, batch)
        masks = getattr(state.opt_state, "masks", None)  # None: pruning off
        history.append(jax.device_get((state.params, masks)))
    return state, history


def _kernels(tree):
    return {
        jax.tree_util.keystr(p): np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if "kernel" in jax.tree_util.keystr(p)
    }


def test_cubic_schedule_and_mask_update_steps():
    s = prune.PruneSettings(0.9, start_step=10, end_step=50, every=10, pattern="unstructured",
                            total_steps=60)  # fmt: skip
    t = np.arange(0, 61)
    want = 0.9 + (0.0 - 0.9) * (1 - np.clip((t - 10) / 40, 0, 1)) ** 3
    np.testing.assert_allclose(prune.sparsity_at(jnp.asarray(t), s), want, atol=1e-6)
    assert list(t[np.asarray(prune.is_mask_update(jnp.asarray(t), s))]) == [20, 30, 40, 50]
    odd = prune.PruneSettings(0.5, 0, 25, 10, "unstructured", 30)
    assert list(t[np.asarray(prune.is_mask_update(jnp.asarray(t), odd))]) == [10, 20, 25]


@pytest.mark.parametrize("optimizer", ["momentum", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_training(optimizer):
    """Momentum, weight decay (L2 or decoupled) and clipping never move a pruned weight."""
    _, history = _train(_config(optimizer), 8)
    prev = None
    for t, (params, masks) in enumerate(history, start=1):
        for name, mask in _kernels(masks).items():
            w = _kernels(params)[name]
            assert np.all(w[~mask] == 0), f"step {t}: {name} has pruned weights that are not 0"
            if prev is not None:
                assert np.all(mask <= prev[name]), f"step {t}: {name} regrew a pruned weight"
        prev = _kernels(masks)
    final_params, final_masks = history[-1]
    for name, w in _kernels(final_params).items():
        assert np.mean(w == 0) == pytest.approx(0.75, abs=1 / w.size), name
    biases = [x for p, x in jax.tree_util.tree_flatten_with_path(final_masks)[0]
              if "kernel" not in jax.tree_util.keystr(p)]  # fmt: skip
    assert all(np.all(b) for b in biases), "biases and norm scales are never pruned"
    assert prune.sparsity_of(final_params, "unstructured") == pytest.approx(0.75, abs=1e-3)


def test_masks_keep_the_largest_weights_and_2_4_keeps_two_of_four():
    w = jax.random.normal(jax.random.key(0), (16, 6))
    tree = {"dense": {"kernel": w, "bias": jnp.ones(6)}, "odd": {"kernel": jnp.ones((3, 6))}}
    ones = jax.tree.map(lambda x: jnp.ones(x.shape, bool), tree)
    new_masks = jax.jit(prune._new_masks, static_argnums=3)
    m = new_masks(tree, ones, jnp.float32(0.75), "unstructured")
    kept = np.abs(np.asarray(w))[np.asarray(m["dense"]["kernel"])]
    assert kept.size == 24 and kept.min() >= np.sort(np.abs(np.asarray(w)).ravel())[-24]
    assert np.all(m["dense"]["bias"])
    m24 = new_masks(tree, ones, jnp.float32(0.5), "2:4")
    groups = np.asarray(m24["dense"]["kernel"]).reshape(4, 4, 6)
    np.testing.assert_array_equal(groups.sum(axis=1), 2)
    a = np.abs(np.asarray(w)).reshape(4, 4, 6)
    assert np.all(np.where(groups, a, np.inf).min(1) >= np.where(groups, -np.inf, a).max(1))
    assert np.all(m24["odd"]["kernel"]), "an axis -2 of 3 cannot form groups of 4: left dense"


@pytest.mark.slow  # the 2:4 masks themselves are checked above, in one small jit
def test_2_4_pattern_through_training():
    c = _config(target=0.5, pattern="2:4", end=4)
    c.model = model_config("mlp", features=(32,), norm="none", dropout=0.0)
    _, history = _train(c, 5)
    params, masks = history[-1]
    for name, mask in _kernels(masks).items():
        groups = mask.reshape(mask.shape[0] // 4, 4, mask.shape[1])
        np.testing.assert_array_equal(groups.sum(axis=1), 2, err_msg=name)
        assert np.all(_kernels(params)[name][~mask] == 0)


def test_before_the_first_mask_update_pruning_changes_nothing_but_rounding():
    """Masks all True: the wrapper passes gradients and updates through. (Not bit for bit: XLA
    fuses the update differently around the selects, which moves some weights by an ulp.)"""
    on, _ = _train(_config("adamw"), 1)  # the first mask update is after step 1 + every
    c = _config("adamw")
    c.prune.target_sparsity = 0.0
    off, _ = _train(c, 1)
    np.testing.assert_allclose(params_digest(on), params_digest(off), rtol=1e-6, atol=1e-7)
    # Off: the optimizer state is the plain optax state, with no masks in it.
    assert not isinstance(off.opt_state, prune.PruneState)
    assert isinstance(on.opt_state, prune.PruneState)


def test_masks_are_checkpointed_and_resume_is_bitwise(tmp_path):
    c = _config("adamw")
    straight, _ = _train(c, 6)
    half, _ = _train(c, 3)
    ckpt = Checkpointer(
        str(tmp_path / "ck"),
        keep=1,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=False,
    )
    ckpt.save(3, {"train_state": half}, {}, {"config": {}}, None)
    restored = ckpt.restore(3, abstract_like({"train_state": half})).state["train_state"]
    ckpt.close()
    chex.assert_trees_all_equal(restored.opt_state.masks, half.opt_state.masks)
    resumed, _ = _train(c, 3, state=restored)
    chex.assert_trees_all_equal(resumed.params, straight.params)
    chex.assert_trees_all_equal(resumed.opt_state, straight.opt_state)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("target_sparsity", 1.0, r"config\.prune\.target_sparsity: must be in \[0, 1\)"),
        ("target_sparsity", -0.1, r"config\.prune\.target_sparsity: must be in \[0, 1\)"),
        ("pattern", "4:8", r"config\.prune\.pattern: '4:8' is not one of"),
        ("end_step", 1, r"config\.prune\.end_step: 1 must be after prune\.start_step=1"),
        ("end_step", 9, r"config\.prune\.end_step: 9 is beyond total_steps=8"),
        ("start_step", -1, r"config\.prune\.start_step: must be >= 0"),
        ("every", 0, r"config\.prune\.every: must be >= 1"),
    ],
)
def test_bad_prune_settings_name_the_field(field, value, message):
    c = _config()
    c.prune[field] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(c, 1)


def test_2_4_needs_half_sparsity_and_end_step_minus_one_means_total_steps():
    c = _config(target=0.8, pattern="2:4")
    with pytest.raises(ConfigError, match=r"prune\.target_sparsity: pattern 2:4 .* set it to 0\.5"):
        validate_config(c, 1)
    c = _config(end=-1)
    validate_config(c, 1)
    assert prune.prune_settings(c).end_step == c.total_steps


def test_a_checkpoint_with_other_pruning_is_refused():
    saved = {"model": {"name": "mlp"}, "prune": {"target_sparsity": 0.0}}
    current = {"model": {"name": "mlp"}, "prune": {"target_sparsity": 0.5}}
    with pytest.raises(
        CheckpointError, match=r"prune\.target_sparsity: checkpoint 0\.0 vs config 0\.5"
    ):
        check_compatible(saved, current, "ck/4")
    check_compatible({"model": {"name": "mlp"}}, saved, "ck/4")  # saved before config.prune existed
