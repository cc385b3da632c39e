"""int8 weight-only quantization: error bound, a trained model's logits, exported file size."""

import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from jaxtrain.models.cnn import CNN
from jaxtrain.step import TrainState
from jaxtrain.tools.export import inference_fn
from jaxtrain.tools.quantize import (
    QMAX,
    dequantize,
    param_bytes,
    quantization_error_bound,
    quantize_array,
    quantize_params,
    quantized_inference_fn,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
MEAN, STD = 0.2860, 0.3530


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (50, 10), (7, 2)])
def test_round_trip_error_is_at_most_half_a_step(shape):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 0.3
    w[..., 0] = 0.0  # an all-zero output channel must survive exactly
    q, scale = quantize_array(w)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert scale.shape == (1,) * (w.ndim - 1) + (w.shape[-1],)
    assert np.abs(q.astype(np.int32)).max() <= QMAX
    # The largest |w| of every nonzero channel maps to +-127: the full range is used.
    np.testing.assert_array_equal(np.abs(q[..., 1:]).reshape(-1, w.shape[-1] - 1).max(0), QMAX)
    err = np.abs(q.astype(np.float32) * scale - w)
    assert np.all(err <= scale / 2 * (1 + 1e-6))
    np.testing.assert_array_equal(q[..., 0], 0)


def _real_images(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    builder = tfds.builder_from_directory(os.path.join(DATA_DIR, "jaxtrain_fashion_mnist", "1.0.0"))
    source = builder.as_data_source(split)
    rows = source.__getitems__(list(range(n)))
    return np.stack([r["image"] for r in rows]), np.array([r["label"] for r in rows])


@pytest.fixture(scope="module")
def trained_cnn():
    """A small CNN trained for 60 steps on 3,000 real Fashion-MNIST train images."""
    create = functools.partial(
        CNN,
        in_shape=(28, 28, 1),
        features=(8, 16),
        convs_per_stage=1,
        hidden=32,
        num_classes=10,
        init="he",
        norm="batchnorm",
        dropout=0.0,
    )
    graphdef, _, _ = nnx.split(nnx.eval_shape(lambda: create(rngs=nnx.Rngs(0))), nnx.Param, ...)
    params, rest = jax.jit(lambda: nnx.split(create(rngs=nnx.Rngs(0)), nnx.Param, ...)[1:])()
    images, labels = _real_images("train", 3000)
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, rest, opt_state, x, y):
        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            logits = model(x, train=True, dropout_key=jax.random.key(0))
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, nnx.state(model, nnx.Not(nnx.Param))

        (_, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), rest, opt_state

    opt_state = tx.init(params)
    for i in range(60):
        rows = slice((i * 100) % 3000, (i * 100) % 3000 + 100)
        params, rest, opt_state = step(params, rest, opt_state, x[rows], labels[rows])
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=(),
        rng=jax.random.key_data(jax.random.key(0)),
        model_state=rest,
    )
    return graphdef, state


def test_quantize_params_only_touches_kernels(trained_cnn):
    _, state = trained_cnn
    values, scales = quantize_params(state.params)
    flat_params = nnx.to_flat_state(state.params)
    flat_values, flat_scales = nnx.to_flat_state(values), nnx.to_flat_state(scales)
    kernels = 0
    for (path, p), (_, v), (_, s) in zip(flat_params, flat_values, flat_scales, strict=True):
        p, v, s = np.asarray(p.get_value()), np.asarray(v.get_value()), np.asarray(s.get_value())
        if p.ndim > 1:
            kernels += 1
            assert v.dtype == np.int8, path
            assert np.all(np.abs(v * s - p) <= s / 2 * (1 + 1e-6)), path
        else:  # biases and norm scales stay float32, bitwise
            assert v.dtype == np.float32, path
            np.testing.assert_array_equal(v, p)
    assert kernels == 4  # two convs, hidden and head
    bound = quantization_error_bound(scales)
    chex.assert_trees_all_close(
        dequantize(values, scales),
        state.params,
        atol=max(float(np.max(b)) for b in jax.tree.leaves(bound)) + 1e-6,
    )
    # Kernels dominate the bytes, so the tree shrinks by close to 4x.
    assert param_bytes(values) + param_bytes(scales) < param_bytes(state.params) / 3


def test_int8_logits_close_to_float_on_real_images(trained_cnn):
    graphdef, state = trained_cnn
    images, labels = _real_images("test", 1000)
    float_logits = np.asarray(jax.jit(inference_fn(graphdef, state, MEAN, STD))(images))
    int8_logits = np.asarray(jax.jit(quantized_inference_fn(graphdef, state, MEAN, STD))(images))
    float_acc = np.mean(float_logits.argmax(-1) == labels)
    int8_acc = np.mean(int8_logits.argmax(-1) == labels)
    assert float_acc > 0.6  # the model learned something, so the comparison means something
    assert abs(float_acc - int8_acc) <= 0.01
    assert np.mean(float_logits.argmax(-1) == int8_logits.argmax(-1)) >= 0.98
    spread = float_logits.max() - float_logits.min()
    assert np.abs(float_logits - int8_logits).max() < 0.05 * spread
    assert not np.array_equal(float_logits, int8_logits)  # it really is a different model


def test_exported_int8_file_is_smaller_and_reproduces_logits(trained_cnn, tmp_path):
    graphdef, state = trained_cnn
    shape = jax.export.symbolic_shape("b, 28, 28, 1")
    arg = jax.ShapeDtypeStruct(shape, jnp.uint8)
    sizes = {}
    for name, make in (("float", inference_fn), ("int8", quantized_inference_fn)):
        exported = jax.export.export(jax.jit(make(graphdef, state, MEAN, STD)))(arg)
        path = tmp_path / f"{name}.jaxexport"
        path.write_bytes(exported.serialize())
        sizes[name] = path.stat().st_size
    assert sizes["int8"] < sizes["float"] / 2.5, sizes
    images, _ = _real_images("test", 64)
    reloaded = jax.export.deserialize((tmp_path / "int8.jaxexport").read_bytes())
    local = jax.jit(quantized_inference_fn(graphdef, state, MEAN, STD))(images)
    np.testing.assert_allclose(np.asarray(reloaded.call(images)), local, rtol=1e-5, atol=1e-5)
