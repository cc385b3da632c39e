"""Conv formulations (jaxtrain/models/conv.py): im2col equals XLA's convolution and the reshape
max pool equals reduce_window, forward and backward, over strides, kernel sizes and odd sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxtrain.checkpoint import check_compatible
from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import model_config
from jaxtrain.models.conv import Conv, im2col_conv, max_pool_2x2, resolve_conv_impl
from jaxtrain.models.registry import family_config_of
from jaxtrain.validation import validate_config


def _xla_conv(x, kernel, stride):
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _arrays(shape, kernel_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=kernel_shape) / np.sqrt(np.prod(kernel_shape[:3])), jnp.float32)
    return x, w


# (input shape, kernel shape, stride): the CNN's and ResNet's cases plus odd sizes, where XLA's
# "SAME" pads more at the bottom/right than at the top/left.
CASES = [
    ((2, 8, 8, 3), (3, 3, 3, 4), 1),
    ((2, 7, 9, 2), (3, 3, 2, 5), 2),
    ((1, 7, 7, 4), (1, 1, 4, 6), 2),
    ((2, 6, 6, 3), (1, 1, 3, 3), 1),
    ((1, 5, 6, 2), (5, 3, 2, 3), 1),
    ((1, 9, 9, 1), (4, 4, 1, 2), 3),
]


@pytest.mark.parametrize("shape,kshape,stride", CASES)
def test_im2col_matches_xla_forward_and_backward(shape, kshape, stride):
    x, w = _arrays(shape, kshape)

    @jax.jit
    def both(x, w):  # one compile per case: outputs and gradients of both formulations
        def value_and_grads(conv):
            loss = lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride)))  # noqa: E731
            return conv(x, w, stride), jax.grad(loss, argnums=(0, 1))(x, w)

        return value_and_grads(_xla_conv), value_and_grads(im2col_conv)

    (ref, ref_grads), (got, got_grads) = both(x, w)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    for r, g in zip(ref_grads, got_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 5, 2)])
def test_reshape_max_pool_matches_reduce_window(shape):
    x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)  # no ties
    ref = nnx.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x, "im2col"), ref)
    np.testing.assert_array_equal(max_pool_2x2(x, "xla"), ref)
    g_ref = jax.jit(jax.grad(lambda x: jnp.sum(jnp.cos(max_pool_2x2(x, "xla")))))(x)
    g_got = jax.jit(jax.grad(lambda x: jnp.sum(jnp.cos(max_pool_2x2(x, "im2col")))))(x)
    np.testing.assert_array_equal(g_got, g_ref)


def test_conv_module_same_params_and_outputs_for_both_impls():
    x, w = _arrays((2, 9, 9, 3), (3, 3, 3, 4), seed=2)
    bias = jnp.linspace(-1.0, 1.0, 4)
    outs, structures = {}, {}
    for impl in ("xla", "im2col"):
        # Built abstractly (no initializer compiles), then given the same values.
        conv = nnx.eval_shape(
            lambda impl=impl: Conv(3, 4, (3, 3), strides=2, impl=impl, rngs=nnx.Rngs(0))
        )
        structures[impl] = jax.tree.map(lambda a: (a.shape, a.dtype), nnx.state(conv, nnx.Param))
        conv.kernel.set_value(w)
        conv.bias.set_value(bias)
        outs[impl] = conv(x)
    assert structures["xla"] == structures["im2col"]  # the same params: checkpoints interchange
    np.testing.assert_allclose(outs["im2col"], outs["xla"], rtol=1e-5, atol=1e-5)


def test_auto_picks_im2col_on_cpu_only():
    expected = "im2col" if jax.default_backend() == "cpu" else "xla"
    assert resolve_conv_impl("auto") == expected
    assert resolve_conv_impl("xla") == "xla"


def test_im2col_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="SAME padding"):
        nnx.eval_shape(lambda: Conv(3, 4, (3, 3), padding="VALID", impl="im2col", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="valid: auto, xla, im2col"):
        resolve_conv_impl("cudnn")
    x, w = _arrays((1, 4, 4, 2), (3, 3, 3, 1))
    with pytest.raises(ValueError, match="2 channels, the kernel expects 3"):
        im2col_conv(x, w, 1)


@pytest.mark.parametrize("family", ["cnn", "resnet"])
def test_bad_conv_impl_is_a_config_error(family):
    c = get_config()
    c.model = model_config(family, conv_impl="winograd")
    with pytest.raises(ConfigError, match=r"config\.model\.conv_impl.*winograd"):
        validate_config(c, 1)


def test_runs_saved_before_conv_impl_read_as_xla():
    """Their checkpoints were trained with XLA's conv: resuming bitwise needs the same one, so
    a run saved without the field reads as conv_impl="xla" (and a config asking for another
    formulation is named as a difference, not silently mixed)."""
    saved = get_config().to_dict()
    saved["model"] = {k: v for k, v in model_config("cnn").to_dict().items() if k != "conv_impl"}
    assert family_config_of(saved["model"])["conv_impl"] == "xla"
    current = get_config().to_dict()
    current["model"] = model_config("cnn", conv_impl="xla").to_dict()
    check_compatible(saved, current, "old")  # same formulation: resumes
    current["model"]["conv_impl"] = "auto"
    with pytest.raises(CheckpointError, match="model.conv_impl: checkpoint 'xla' vs config 'auto'"):
        check_compatible(saved, current, "old")
