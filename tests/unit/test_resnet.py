"""ResNet: shapes, batchnorm train/eval behaviour, sharded jit, gradients, axis metadata."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxtrain.models.resnet import ResNet


def _resnet(
    *,
    features=(8, 16, 32),
    blocks: int = 1,
    num_classes: int = 10,
    dropout: float = 0.0,
    norm: str = "batchnorm",
    seed: int = 0,
) -> ResNet:
    return ResNet(
        in_shape=(28, 28, 1),
        features=features,
        blocks_per_stage=blocks,
        num_classes=num_classes,
        init="he",
        norm=norm,
        dropout=dropout,
        rngs=nnx.Rngs(seed),
    )


def _split(*, real_init: bool = False, **kwargs):
    """(graphdef, params, rest). By default the values are drawn with numpy in He scale: XLA's
    CPU compile of the jitted random init takes tens of seconds on a busy 2-core machine, and
    these tests are about the forward/backward pass, not the initializer."""
    create = functools.partial(_resnet, **kwargs)
    graphdef, params, rest = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    if real_init:
        params, rest = jax.jit(lambda: nnx.split(create(), nnx.Param, ...)[1:])()
        return graphdef, params, rest
    rng = np.random.default_rng(0)

    def fill(path, x):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = int(np.prod(x.shape[:-1]))
            return jnp.asarray(rng.normal(size=x.shape) * np.sqrt(2 / fan_in), x.dtype)
        if "scale" in name or "var" in name:
            return jnp.ones(x.shape, x.dtype)
        return jnp.zeros(x.shape, x.dtype)  # biases, running means

    return graphdef, *(jax.tree.map_with_path(fill, t) for t in (params, rest))


def _images(b: int, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (b, 28, 28, 1), jnp.float32)


@functools.partial(jax.jit, static_argnums=0, static_argnames="train")
def _forward(graphdef, params, rest, x, *, train: bool, key=None):
    model = nnx.merge(graphdef, params, rest, copy=True)
    key = jax.random.key(0) if key is None else key
    logits = model(x, train=train, dropout_key=key)
    return logits, nnx.state(model, nnx.Not(nnx.Param))


@pytest.mark.parametrize("features,blocks", [((8, 16, 32), 1), ((4, 8), 2), ((6,), 3)])
def test_logits_shape_and_spatial_stages(features, blocks):
    model = nnx.eval_shape(
        lambda: _resnet(features=features, blocks=blocks, num_classes=7, dropout=0.1)
    )
    logits, _ = _forward(
        *_split(features=features, blocks=blocks, num_classes=7, dropout=0.1),
        _images(3),
        train=False,
    )
    chex.assert_shape(logits, (3, 7))
    chex.assert_tree_all_finite(logits)
    assert len(model.blocks) == len(features) * blocks
    # Every stage after the first starts with a strided block that needs a projection.
    strided = [b for b in model.blocks if b.proj is not None]
    assert len(strided) == len(features) - 1


def test_real_init_is_he_scaled_and_runs():
    graphdef, params, rest = _split(features=(8, 16), real_init=True)
    kernel = np.asarray(params["blocks"][1]["conv2"]["kernel"][...])  # 3 x 3 x 16 -> 16
    assert abs(kernel.std() / np.sqrt(2 / (9 * 16)) - 1) < 0.15
    np.testing.assert_array_equal(params["stem_norm"]["layer"]["scale"][...], 1.0)
    logits, _ = _forward(graphdef, params, rest, _images(2), train=False)
    chex.assert_shape(logits, (2, 10))
    chex.assert_tree_all_finite(logits)


def test_batchnorm_train_uses_batch_stats_and_eval_uses_running_stats():
    graphdef, params, rest = _split()
    x = _images(8)
    fwd = _forward

    # Train mode: statistics come from the batch, so example 0's logits change with its batch
    # mates, and the running averages move.
    a, new_rest = fwd(graphdef, params, rest, x, train=True)
    b, _ = fwd(graphdef, params, rest, x.at[1:].multiply(3.0), train=True)
    assert not np.allclose(a[0], b[0], atol=1e-4)
    moved = jax.tree.map(lambda u, v: bool(jnp.any(u != v)), rest, new_rest)
    assert any(jax.tree.leaves(moved))

    # Eval mode: running statistics, so each example is independent of the batch, and nothing
    # is updated.
    c, eval_rest = fwd(graphdef, params, rest, x, train=False)
    d, _ = fwd(graphdef, params, rest, x.at[1:].multiply(3.0), train=False)
    np.testing.assert_allclose(c[0], d[0], rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_equal(rest, eval_rest)


def test_dropout_only_in_train_mode():
    graphdef, params, rest = _split(dropout=0.5)
    x = _images(4)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    t1, _ = _forward(graphdef, params, rest, x, train=True, key=k1)
    t2, _ = _forward(graphdef, params, rest, x, train=True, key=k2)
    e1, _ = _forward(graphdef, params, rest, x, train=False, key=k1)
    e2, _ = _forward(graphdef, params, rest, x, train=False, key=k2)
    assert not np.allclose(t1, t2)
    np.testing.assert_array_equal(e1, e2)


@pytest.mark.multidevice
def test_jit_replicated_params_on_8_devices_matches_one_device():
    assert jax.device_count() == 8
    graphdef, params, rest = _split()
    x = _images(16)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec("data"))
    step = jax.jit(
        lambda p, r, x: _forward(graphdef, p, r, x, train=True),
        in_shardings=(replicated, replicated, batch),
        out_shardings=(batch, replicated),
    )
    sharded_logits, sharded_rest = step(
        jax.device_put(params, replicated), jax.device_put(rest, replicated), x
    )
    local_logits, local_rest = _forward(graphdef, params, rest, x, train=True)
    # Batchnorm statistics are over the global batch, so sharding changes nothing but rounding.
    np.testing.assert_allclose(sharded_logits, local_logits, rtol=1e-4, atol=1e-4)
    chex.assert_trees_all_close(sharded_rest, local_rest, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_gradient_reaches_the_first_conv(norm):
    graphdef, params, rest = _split(norm=norm)
    x, labels = _images(8), jnp.arange(8) % 10

    def loss(p):
        logits, _ = _forward(graphdef, p, rest, x, train=True)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1))

    grads = jax.grad(loss)(params)
    stem = np.asarray(grads["stem"]["kernel"][...])
    assert stem.shape == (3, 3, 1, 8)
    assert np.all(np.isfinite(stem)) and np.abs(stem).max() > 1e-6
    chex.assert_tree_all_finite(grads)


def test_params_carry_logical_axis_names():
    _, params, _ = _split()
    specs = nnx.get_partition_spec(params)
    conv = PartitionSpec("kernel_h", "kernel_w", "conv_in", "conv_out")
    assert specs["stem"]["kernel"].get_value() == conv
    assert specs["blocks"][1]["proj"]["kernel"].get_value() == conv
    assert specs["blocks"][0]["norm1"]["layer"]["scale"].get_value() == PartitionSpec("norm")
    assert specs["head"]["kernel"].get_value() == PartitionSpec("conv_out", "classes")
    assert specs["head"]["bias"].get_value() == PartitionSpec("classes")


def test_bad_arguments():
    with pytest.raises(ValueError, match="blocks_per_stage"):
        ResNet(
            in_shape=(28, 28, 1),
            features=(8,),
            blocks_per_stage=0,
            num_classes=10,
            init="he",
            norm="batchnorm",
            dropout=0.0,
            rngs=nnx.Rngs(0),
        )
    with pytest.raises(ValueError, match="unknown norm"):
        nnx.eval_shape(lambda: _resnet(norm="groupnorm"))
