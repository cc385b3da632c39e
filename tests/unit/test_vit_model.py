"""ViT: settings validation, patchify, shapes with and without jit, pooling, dropout, axis names."""

import dataclasses
import functools
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config, settings_from_config
from jaxtrain.models.vit import ViT, ViTSettings, patchify, sincos_2d
from jaxtrain.parallel import partitioning
from jaxtrain.validation import validate_config

# Tiny: 28x28 images in 7x7 patches are 16 tokens (17 with [CLS]).
TINY = dict(patch_size=7, num_layers=1, d_model=16, num_heads=2, d_ff=32, num_classes=5)


def _settings(**kw) -> ViTSettings:
    # One dropout for every test, so tests with the same pooling share one compiled forward.
    return ViTSettings(**{**TINY, "dropout": 0.1, **kw})


@functools.lru_cache
def _split(s: ViTSettings):
    """(graphdef, params), cached: the arrays are immutable, so tests can share them. The values
    are drawn with numpy (kernels ~ N(0, 1/fan_in), norm scales 1, biases 0): XLA compiles of
    the random initializers cost seconds of CPU, and these tests are about the forward and
    backward pass; test_real_init checks the initializer."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: ViT(s, rngs=nnx.Rngs(0))), nnx.Param)
    rng = np.random.default_rng(0)

    def fill(path, x):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return jnp.ones(x.shape, x.dtype)
        if "bias" in name:
            return jnp.zeros(x.shape, x.dtype)
        std = 0.1 if len(x.shape) < 2 or "pos_embed" in name else x.shape[0] ** -0.5
        return jnp.asarray(rng.normal(size=x.shape) * std, x.dtype)

    return graphdef, jax.tree.map_with_path(fill, params)


def _apply(graphdef, params, x, *, train: bool, key: int = 0):
    model = nnx.merge(graphdef, params, copy=True)
    return model(x, train=train, dropout_key=jax.random.key(key))


# Unoptimized XLA for the tests' jits: each graph runs a few times on 3 images, so compiling is
# the cost, and level 0 compiles the backward pass in about a third of the CPU time.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_apply_jit = jax.jit(
    _apply, static_argnums=0, static_argnames="train", compiler_options=FAST_COMPILE
)


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _train_logits_and_grads(graphdef, params, x, labels, key):
    """Train-mode logits and the cross-entropy gradient: one compile serves both tests."""

    def loss(p):
        logits = _apply(graphdef, p, x, train=True, key=key)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], -1)), logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return logits, grads


def _images(b: int = 3, shape=(28, 28, 1), seed: int = 0) -> jax.Array:
    # Batch 3 everywhere: tests that share a graph then share its compiled forward.
    return jax.random.normal(jax.random.key(seed), (b, *shape), jnp.float32)


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("patch_size", 5, "config.model.patch_size: 5 does not divide the 28x28 images"),
        ("patch_size", 0, "config.model.patch_size: must be > 0"),
        ("num_heads", 3, "config.model.num_heads: d_model=128 is not divisible by num_heads=3"),
        ("d_model", 0, "config.model.d_model: must be > 0"),
        ("num_layers", 0, "config.model.num_layers: must be > 0"),
        ("d_ff", -1, "config.model.d_ff: must be > 0"),
        ("pooling", "max", "config.model.pooling: 'max' is not one of cls, mean"),
        ("dropout", 1.0, r"config.model.dropout: must be in \[0, 1\)"),
        ("num_classes", 1, "config.model.num_classes: must be >= 2"),
        ("compute_dtype", "float16", "config.model.compute_dtype: 'float16' is not one of"),
        ("attention_impl", "flash", "config.model.attention_impl: 'flash' is not one of"),
        ("pos_init", "zeros", "config.model.pos_init: 'zeros' is not one of sincos2d, normal"),
    ],
)
def test_bad_settings_name_the_field_before_anything_compiles(field, value, message):
    c = get_config()
    c.model = model_config("vit", **{field: value})
    with pytest.raises(ConfigError, match=message):
        validate_config(c, num_devices=1)


def test_sincos_positions_need_a_d_model_divisible_by_4():
    c = get_config()
    c.model = model_config("vit", d_model=30, num_heads=2)
    with pytest.raises(ConfigError, match="config.model.d_model: pos_init='sincos2d' needs a"):
        validate_config(c, num_devices=1)
    c.model.pos_init = "normal"
    validate_config(c, num_devices=1)


def test_attention_kernel_that_cannot_run_here_is_refused_when_the_model_is_built():
    """cudnn passes the settings check (it is a kernel name) but needs a GPU and bf16: building
    the model (eval_shape: no arrays, no compile) names the field."""
    s = _settings(attention_impl="cudnn")
    with pytest.raises(ConfigError, match="config.model.attention_impl: 'cudnn' needs a GPU"):
        nnx.eval_shape(lambda: ViT(s, rngs=nnx.Rngs(0)))


def test_default_settings_validate_and_unknown_fields_are_refused():
    c = get_config()
    c.model = model_config("vit", pooling="mean")
    validate_config(c, num_devices=1)
    with pytest.raises(ConfigError, match="model 'vit' has no field 'patch'"):
        model_config("vit", patch=4)


def test_patch_size_is_checked_against_the_datasets_image_shape():
    info = types.SimpleNamespace(input_shape=(32, 32, 3))
    s = settings_from_config(model_config("vit", patch_size=8), info)
    assert s.in_shape == (32, 32, 3) and s.num_patches == 16 and s.num_tokens == 17
    with pytest.raises(ConfigError, match="config.model.patch_size: 7 does not divide the 32x32"):
        settings_from_config(model_config("vit", patch_size=7), info)
    gray = types.SimpleNamespace(input_shape=(28, 28))
    with pytest.raises(ConfigError, match=r"vit needs \(H, W, C\) images"):
        settings_from_config(model_config("vit"), gray)


# --- patches ----------------------------------------------------------------------------------


def test_patch_embedding_equals_a_strided_conv():
    """Dense on patchify(x) is the conv with kernel P x P and stride P of the same weights."""
    x = _images(2, (8, 12, 3))
    w = jax.random.normal(jax.random.key(1), (4 * 4 * 3, 5))
    both = lambda x, w: (
        patchify(x, 4) @ w,  # [B, 2*3, 5]
        jax.lax.conv_general_dilated(
            x, w.reshape(4, 4, 3, 5), (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
    )
    dense, conv = jax.jit(both, compiler_options=FAST_COMPILE)(x, w)
    chex.assert_shape(conv, (2, 2, 3, 5))
    np.testing.assert_allclose(dense, conv.reshape(2, 6, 5), rtol=1e-5, atol=1e-5)


def test_sincos_table_codes_row_and_column():
    table = np.asarray(sincos_2d(2, 3, 8))  # 6 patches, two frequencies per sin/cos part
    chex.assert_shape(table, (6, 8))
    np.testing.assert_allclose(table[0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)
    # Row-major: patches 1 and 4 share column 1, patches 3, 4, 5 share row 1.
    np.testing.assert_allclose(table[1, :4], table[4, :4])
    np.testing.assert_allclose(table[3:, 4:], np.broadcast_to(table[3, 4:], (3, 4)))
    np.testing.assert_allclose(table[1, 0], np.sin(1.0), rtol=1e-6)  # column 1, frequency 1
    np.testing.assert_allclose(table[3, 5], np.sin(0.01), rtol=1e-5)  # row 1, frequency 1e-2
    assert len({tuple(r) for r in table.round(5)}) == 6


def test_real_init():
    """The initializer as the trainer runs it (jitted): positions start from the sin-cos table
    ([CLS] at 0), patch kernels are LeCun-normal, block kernels N(0, 0.02)."""
    s = _settings(pooling="cls")
    init = lambda: nnx.split(ViT(s, rngs=nnx.Rngs(0)), nnx.Param)[1]
    params = jax.jit(init, compiler_options=FAST_COMPILE)()
    pos = np.asarray(params["pos_embed"][...])
    np.testing.assert_array_equal(pos[0], 0.0)  # [CLS] has no grid position
    np.testing.assert_allclose(pos[1:], sincos_2d(4, 4, 16), atol=1e-6)
    patch = np.asarray(params["patch"]["kernel"][...])  # fan-in 7 * 7 * 1
    assert abs(patch.std() * 7 - 1) < 0.2, patch.std()
    assert abs(np.asarray(params["blocks"][0]["up"][...]).std() / 0.02 - 1) < 0.2


# --- forward ----------------------------------------------------------------------------------


def test_logits_shape_with_and_without_jit_in_train_and_eval():
    """Eager and jitted agree in eval mode; train mode runs jitted only (eager NNX dispatches
    every small op, and the dropout ops cost seconds of CPU to dispatch one by one)."""
    graphdef, params = _split(_settings(pooling="cls"))
    x, labels = _images(3), jnp.arange(3)
    train_jit = lambda key: _train_logits_and_grads(graphdef, params, x, labels, key)[0]
    eager = _apply(graphdef, params, x, train=False, key=4)
    jitted = _apply_jit(graphdef, params, x, train=False, key=4)
    train = train_jit(4)
    chex.assert_shape([eager, jitted, train], (3, 5))
    chex.assert_type([eager, jitted, train], jnp.float32)
    chex.assert_tree_all_finite([eager, jitted, train])
    np.testing.assert_allclose(eager, jitted, rtol=1e-4, atol=1e-5)
    # Dropout acts in train mode only: eval logits do not depend on the key, train logits do
    # (and differ from eval), and one key gives one mask.
    np.testing.assert_array_equal(jitted, _apply_jit(graphdef, params, x, train=False, key=2))
    assert not np.allclose(train_jit(1), train_jit(2))
    assert not np.allclose(train, jitted)
    np.testing.assert_array_equal(train, train_jit(4))


def test_pooling_variants_hold_the_cls_token_only_when_they_use_it():
    cls_params = _split(_settings(pooling="cls"))[1]
    mean_params = _split(_settings(pooling="mean"))[1]
    assert cls_params["cls"][...].shape == (16,)
    chex.assert_shape(cls_params["pos_embed"][...], (17, 16))  # [CLS] + 16 patches
    assert "cls" not in mean_params
    chex.assert_shape(mean_params["pos_embed"][...], (16, 16))


def test_attention_is_bidirectional():
    """The [CLS] token comes first, so under a causal mask it would see no patch at all; here
    changing only the last patch moves the [CLS]-pooled logits."""
    graphdef, params = _split(_settings(pooling="cls"))
    x = _images(3)
    moved = x.at[:, 21:, 21:, :].add(3.0)
    a = _apply_jit(graphdef, params, x, train=False)
    b = _apply_jit(graphdef, params, moved, train=False)
    assert np.abs(np.asarray(a - b)).max() > 1e-4


def test_mean_pooling_is_invariant_to_moving_patches_when_positions_are_equal():
    """With all position embeddings equal, mean pooling sees a set of patches: swapping two
    patches leaves the logits unchanged (up to rounding), as a pure permutation must."""
    graphdef, params = _split(_settings(pooling="mean"))
    # A new tree (the cached split is shared by other tests): zero positions, the rest as is.
    zero_pos = lambda path, a: jnp.zeros_like(a) if "pos_embed" in jax.tree_util.keystr(path) else a
    params = jax.tree.map_with_path(zero_pos, params)
    assert not np.any(params["pos_embed"][...]) and np.any(
        _split(_settings(pooling="mean"))[1]["pos_embed"][...]
    )
    x = _images(3)
    swapped = x.at[:, :7, :7].set(x[:, 21:, 21:]).at[:, 21:, 21:].set(x[:, :7, :7])
    a = _apply_jit(graphdef, params, x, train=False)
    b = _apply_jit(graphdef, params, swapped, train=False)
    chex.assert_shape(a, (3, 5))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, _apply_jit(graphdef, params, x[:, ::-1], train=False), atol=1e-4)


def test_bfloat16_compute_returns_float32_logits_close_to_float32():
    s = _settings()
    graphdef32, params = _split(s)
    s16 = dataclasses.replace(s, compute_dtype="bfloat16")
    # eval_shape: only the graph is needed (the float32 params serve both), no second init.
    graphdef16 = nnx.split(nnx.eval_shape(lambda: ViT(s16, rngs=nnx.Rngs(0))), nnx.Param)[0]
    x = _images(3)
    f32 = _apply_jit(graphdef32, params, x, train=False)
    bf16 = _apply_jit(graphdef16, params, x, train=False)
    chex.assert_type(bf16, jnp.float32)
    np.testing.assert_allclose(bf16, f32, atol=5e-2)


def test_wrong_image_shape_is_refused():
    graphdef, params = _split(_settings())
    with pytest.raises(ValueError, match=r"vit expects images of shape \(28, 28, 1\)"):
        _apply(graphdef, params, _images(1, (32, 32, 1)), train=False)


# --- parameters -------------------------------------------------------------------------------


def test_params_carry_logical_axis_names():
    _, params = _split(_settings(pooling="cls"))
    specs = nnx.get_partition_spec(params)
    assert specs["patch"]["kernel"].get_value() == P(None, "embed")
    assert specs["pos_embed"].get_value() == P(None, "embed")
    assert specs["cls"].get_value() == P("embed")
    assert specs["head"]["kernel"].get_value() == P("embed", "classes")
    block = specs["blocks"][0]
    assert block["qkv"].get_value() == P("embed", None, "heads", "kv")
    assert block["up"].get_value() == P("embed", "mlp")
    # The base config's rules put them on the mesh: FSDP over "embed", tensor over heads/MLP.
    rules = get_config().mesh.rules
    to_mesh = lambda spec: partitioning.logical_to_mesh_spec(tuple(spec), rules)
    assert to_mesh(specs["patch"]["kernel"].get_value()) == P(None, "fsdp")
    assert to_mesh(block["qkv"].get_value()) == P("fsdp", None, "tensor", None)
    assert to_mesh(block["down"].get_value()) == P("tensor", "fsdp")
    assert to_mesh(specs["head"]["kernel"].get_value()) == P("fsdp", None)
    named = {"embed", "heads", "kv", "mlp", "norm", "classes", None}
    for spec in jax.tree.leaves(specs, is_leaf=lambda v: isinstance(v, P)):
        assert set(spec) <= named, spec


def test_gradients_reach_every_param():
    graphdef, params = _split(_settings(pooling="cls"))
    _, grads = _train_logits_and_grads(graphdef, params, _images(3), jnp.arange(3), 0)
    chex.assert_tree_all_finite(grads)
    for path, g in jax.tree.leaves_with_path(grads):
        assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)
