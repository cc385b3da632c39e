"""Knowledge distillation (jaxtrain/distill.py): the loss, a teacher read from a run directory,
and the refusals. Tiny MLPs on synthetic batches; the teacher run is written by the test."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_step import INFO, _batch

from jaxtrain import distill, ensemble
from jaxtrain.build import create_state_and_steps, model_graphdef
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.losses import cross_entropy, distillation_loss
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding
from jaxtrain.validation import validate_config


def _config(features=(32,), **distill_fields):
    c = get_config()
    c.model = model_config("mlp", features=features, norm="layernorm", dropout=0.0)
    c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = "sgd", "constant", 0.1
    for k, v in distill_fields.items():
        c.distill[k] = v
    return c


def _write_run(path, c, state, step=5):
    ckpt = Checkpointer(
        os.path.join(path, "checkpoints"),
        keep=1,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=False,
    )
    ckpt.save(step, {"train_state": state}, {}, {"config": c.to_dict()}, None)
    ckpt.close()
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(c.to_dict(), f)
    return str(path)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A 'finished run': an MLP (16 hidden) trained 2 steps, saved as train would save it."""
    c = _config(features=(16,))
    mesh = sharding.create_mesh(1)
    state, train, _ = create_state_and_steps(c, mesh, INFO)
    for i in range(2):
        state, _ = train(state, sharding.make_global_batch(_batch(32, 100 + i), _bs(mesh)))
    return _write_run(tmp_path_factory.mktemp("teacher"), c, state), c, state


def _bs(mesh):
    return sharding.batch_sharding(mesh)


def _first_losses(c, batches):
    mesh = sharding.create_mesh(1)
    teacher = distill.load_teacher(c, mesh, INFO)
    state, train, _ = create_state_and_steps(c, mesh, INFO, teacher=teacher)
    losses = []
    for b in batches:
        state, m = train(state, sharding.make_global_batch(b, _bs(mesh)))
        losses.append(np.asarray(m["loss"]))
    return state, np.asarray(losses), teacher


def test_distillation_loss_is_t_squared_kl():
    s = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], np.float32)
    t = np.array([[1.0, 1.0, 0.0], [-2.0, 1.0, 2.0]], np.float32)
    temp = 3.0

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t / temp), softmax(s / temp)
    want = temp**2 * np.sum(p * (np.log(p) - np.log(q)), -1)
    got = distillation_loss(jnp.asarray(s), jnp.asarray(t), temperature=temp)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(distillation_loss(s, s, temperature=2.0), 0.0, atol=1e-6)


def test_step_mixes_the_frozen_teachers_soft_loss(teacher_run):
    path, _, tstate = teacher_run
    c = _config(teacher=path, alpha=0.7, temperature=2.0)
    b = _batch(32, seed=7)
    mesh = sharding.create_mesh(1)
    teacher = distill.load_teacher(c, mesh, INFO)
    state, train, _ = create_state_and_steps(c, mesh, INFO, teacher=teacher)
    init = jax.device_get((state.params, state.model_state))  # the step donates the state
    for seed in (7, 8):
        state, m = train(state, sharding.make_global_batch(_batch(32, seed=seed), _bs(mesh)))
        if seed == 7:
            first_loss = float(m["loss"])
    # The teacher was read from the checkpoint as saved, and training never changed it.
    chex.assert_trees_all_equal(teacher.variables[0], tstate.params)

    @jax.jit
    def by_hand(params, model_state, x, labels):
        """Step 1's loss: the student's init and the eval-mode teacher on the same batch."""
        student = nnx.merge(model_graphdef(c, INFO), params, model_state)
        s_logits = student(x, train=False, dropout_key=jax.random.key(0))  # no dropout here
        t_logits = distill.teacher_logits(teacher, teacher.variables, x)
        hard = cross_entropy(s_logits, labels, label_smoothing=0.0)
        soft = distillation_loss(s_logits, t_logits, temperature=2.0)
        return jnp.mean(0.7 * soft + 0.3 * hard), jnp.mean(soft)

    want, soft = by_hand(*init, b["inputs"], b["labels"])
    np.testing.assert_allclose(first_loss, want, rtol=1e-5)
    assert soft > 0.01, "the teacher's soft targets differ from the student's: the mix matters"


def test_members_share_one_teacher(teacher_run):
    path, _, _ = teacher_run
    batches = [_batch(16, seed=s) for s in (1, 2)]
    c = _config(teacher=path, alpha=0.5)
    c.num_seeds = 2
    mesh = sharding.create_mesh(1)
    teacher = distill.load_teacher(c, mesh, INFO)
    state, train, _ = create_state_and_steps(c, mesh, INFO, teacher=teacher)
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    member = ensemble.member_sharding(_bs(mesh))
    _, m = train(state, jax.device_put(stacked, member))
    _, alone, _ = _first_losses(_config(teacher=path, alpha=0.5), [batches[0]])  # seed 0
    np.testing.assert_allclose(np.asarray(m["loss"])[0], alone[0], rtol=1e-5)
    assert np.asarray(m["loss"])[1] != np.asarray(m["loss"])[0]  # its own init and batch


def test_not_a_run_is_refused(tmp_path):
    mesh = sharding.create_mesh(1)
    for where in (tmp_path / "missing", tmp_path):
        c = _config(teacher=str(where))
        with pytest.raises(ConfigError, match=r"config\.distill\.teacher: .* not a finished"):
            distill.load_teacher(c, mesh, INFO)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match="needs config.json and a checkpoint"):
        distill.load_teacher(_config(teacher=str(tmp_path)), mesh, INFO)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data.name": "mr_polarity"}, "'mr_polarity' but the student trains on 'fashion_mnist'"),
        ({"model.num_classes": 5}, r"predicts 5 classes .* 'fashion_mnist' has 10"),
        ({"num_seeds": 3}, "holds 3 vmapped members"),
        ({"model.features": (64,)}, r"params/dense/0/bias has shape \(16,\) .* needs \(64,\)"),
    ],
)
def test_mismatched_teacher_names_both_sides(tmp_path, teacher_run, change, message):
    _, tc, tstate = teacher_run
    cfg = tc.to_dict()
    for key, value in change.items():
        node, _, leaf = key.rpartition(".")
        (cfg[node] if node else cfg)[leaf] = value
    run = tmp_path / "t"
    run.mkdir()
    _write_run(run, tc, tstate)
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.distill\.teacher: .*" + message):
        distill.load_teacher(_config(teacher=str(run)), sharding.create_mesh(1), INFO)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("alpha", 1.5, r"config\.distill\.alpha: must be in \[0, 1\], got 1\.5"),
        ("alpha", -0.1, r"config\.distill\.alpha: must be in \[0, 1\]"),
        ("temperature", 0.0, r"config\.distill\.temperature: must be > 0, got 0\.0"),
        ("temperature", -2.0, r"config\.distill\.temperature: must be > 0"),
    ],
)
def test_bad_alpha_and_temperature_name_the_field(field, value, message):
    c = _config()
    c.distill[field] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(c, 1)


@pytest.mark.multidevice
def test_distilled_pruned_step_on_an_fsdp_mesh_matches_one_device(teacher_run):
    """Teacher params split over fsdp like the student's, masks sharded like their params: the
    same numbers as on one device."""
    path, _, _ = teacher_run
    c = _config(teacher=path, alpha=0.5)
    c.total_steps, c.prune.target_sparsity, c.prune.end_step, c.prune.every = 4, 0.5, 2, 1
    batches = [_batch(32, seed=s) for s in range(3)]
    results = []
    for num_devices, shape in ((1, (-1, 1, 1)), (8, (2, 4, 1))):
        c.mesh.shape = shape
        mesh = sharding.create_mesh(num_devices, shape)
        teacher = distill.load_teacher(c, mesh, INFO)
        state, train, _ = create_state_and_steps(c, mesh, INFO, teacher=teacher)
        losses = []
        for b in batches:
            state, m = train(state, sharding.make_global_batch(b, _bs(mesh)))
            losses.append(float(m["loss"]))
        results.append((losses, state, teacher))
    (one, s1, _), (eight, s8, t8) = results
    kernel = t8.variables[0]["dense"][0]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
    mask = s8.opt_state.masks["dense"][0]["kernel"]
    assert mask.sharding == s8.params["dense"][0]["kernel"].sharding
    np.testing.assert_allclose(eight, one, rtol=1e-5)
    # Magnitudes differ by rounding between meshes, so a weight at the threshold may flip.
    same = np.asarray(mask) == np.asarray(s1.opt_state.masks["dense"][0]["kernel"])
    assert same.mean() > 0.999
