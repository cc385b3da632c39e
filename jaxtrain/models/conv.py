"""2-D convolution and 2x2 max pooling with a choice of formulation (`model.conv_impl`).

- "xla": `lax.conv_general_dilated` and `lax.reduce_window` (flax's nnx.Conv / nnx.max_pool).
- "im2col": the conv as one dense product, patches [B*H'*W', kh*kw*C] @ kernel [kh*kw*C, O],
  and the pool as a reshape to [B, H/2, 2, W/2, 2, C] and a max over the two window axes.
- "auto": "im2col" on CPU, "xla" elsewhere (GPU/TPU convolution kernels are fast).

Why: on XLA:CPU a dense matmul runs near the machine's peak while the convolution and the
select-and-scatter of a max pool's backward pass do not; the CNN's train step on 2 CPU cores is
~1.6x faster with "im2col" (benchmarks/RESULTS.md, "Convolution formulation on CPU"). Both give
the same parameters (same shapes, same initializer draws); outputs agree to float rounding (the
sums run in another order), so switching formulation changes the numbers at the float level.
A max pool's gradient differs only on exact ties inside a window: "xla" sends it to the first
maximum, "im2col" splits it between the tied maxima.
"""

import jax
import jax.numpy as jnp
from flax import nnx

CONV_IMPLS = ("auto", "xla", "im2col")


def resolve_conv_impl(impl: str) -> str:
    """ "auto" -> the formulation for the default backend; others unchanged. ValueError lists
    the valid names."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {impl!r}; valid: {', '.join(CONV_IMPLS)}")
    if impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "xla"
    return impl


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding of one spatial dimension: output ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def im2col_conv(x_BxHxWxC: jax.Array, kernel_HWIO: jax.Array, stride: int) -> jax.Array:
    """ "SAME"-padded conv as patches @ kernel. The patch features are ordered (kh, kw, C), the
    row-major order of the HWIO kernel, so the kernel reshapes without a transpose."""
    b, h, w, c = x_BxHxWxC.shape
    kh, kw, cin, cout = kernel_HWIO.shape
    if cin != c:
        raise ValueError(f"input has {c} channels, the kernel expects {cin}")
    (top, bottom), (left, right) = _same_padding(h, kh, stride), _same_padding(w, kw, stride)
    xp = jnp.pad(x_BxHxWxC, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow = -(-h // stride), -(-w // stride)
    if kh == kw == 1:
        patches = xp[:, : (oh - 1) * stride + 1 : stride, : (ow - 1) * stride + 1 : stride, :]
    else:
        patches = jnp.concatenate(
            [
                xp[
                    :,
                    i : i + (oh - 1) * stride + 1 : stride,
                    j : j + (ow - 1) * stride + 1 : stride,
                ]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-1,
        )
    out = patches.reshape(b * oh * ow, kh * kw * c) @ kernel_HWIO.reshape(kh * kw * c, cout)
    return out.reshape(b, oh, ow, cout)


class Conv(nnx.Conv):
    """nnx.Conv ("SAME" padding, square stride, no dilation or groups) whose formulation is
    chosen by `impl` (see the module docstring). Params and their initialization are nnx.Conv's."""

    def __init__(self, *args, impl: str = "xla", **kwargs):
        super().__init__(*args, **kwargs)
        self.impl = resolve_conv_impl(impl)
        if self.impl == "im2col":
            strides = self.strides if isinstance(self.strides, tuple) else (self.strides,) * 2
            plain = (
                self.padding == "SAME"
                and len(set(strides)) == 1
                and self.kernel_dilation in (1, None, (1, 1))
                and self.input_dilation in (1, None, (1, 1))
                and self.feature_group_count == 1
            )
            if not plain:
                raise ValueError("conv_impl='im2col' supports SAME padding, square strides only")
            self.stride = strides[0]

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl == "xla":
            return super().__call__(x)
        y = im2col_conv(x, self.kernel[...], self.stride)
        if self.bias is not None:
            y = y + self.bias[...]
        return y


def max_pool_2x2(x_BxHxWxC: jax.Array, impl: str) -> jax.Array:
    """2x2 max pool, stride 2, "VALID" (an odd last row/column is dropped)."""
    if resolve_conv_impl(impl) == "xla":
        return nnx.max_pool(x_BxHxWxC, (2, 2), strides=(2, 2))
    b, h, w, c = x_BxHxWxC.shape
    x = x_BxHxWxC[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
