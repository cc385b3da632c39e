"""Scaled dot-product attention kernels shared by the text models.

Letters: B batch, L query length, S key length, H heads, D head dim.

`dot_product_attention` takes q/k/v in the [B, L, H, D] layout that the projections produce,
an optional boolean mask (True = attend) broadcastable to [B, H, L, S] and/or a causal flag,
and returns [B, L, H, D] in the dtype of `v`. Scores, the mask bias and the softmax are float32
whatever the compute dtype, so bfloat16 runs keep a float32 normalisation.

Several implementations are kept, selected by name, because XLA's CPU backend is sensitive to
how attention is written (benchmarks/attention_cpu.py times them in the real GPT training step):
- "bias":    one additive float32 bias built from iota comparisons (no bool mask tensor), the
             1/sqrt(D) scale folded into q, einsums whose batch dims are (B, H).
- "blocked": (default) [B, H, L, D] layout inside, a hand-written backward pass (FlashAttention's
             ds = p * (dp - rowsum(do * o))), and for causal calls query blocks of BLOCK_Q
             rows, block i reading only keys [0, (i+1) * BLOCK_Q): the masked upper triangle is
             skipped (25% fewer score/value FLOPs at L = 2 * BLOCK_Q). Exact up to float
             rounding: softmax is row-wise.
- "where":   the textbook form: materialised bool mask and jnp.where (like flax's attention).
- "jax":     jax.nn.dot_product_attention(implementation="xla").
- "cudnn":   jax.nn.dot_product_attention(implementation="cudnn"): cuDNN's fused flash attention;
             GPU only, bfloat16/float16 only.
Two more names for the same kernels: "reference" is "where" (the plain form every other kernel
is tested against) and "xla" is "jax". "auto" picks one per backend and dtype
(`select_implementation`): cudnn on a GPU in bf16/f16, blocked on CPU, xla elsewhere.

Grouped-query attention: k and v may have G heads, G dividing q's H heads; query head h reads
key/value head h // (H / G). The jax.nn kernels take G heads as they are; the others repeat
each key/value head H / G times first (no copy when G == H).
"""

import jax
import jax.numpy as jnp
from jax import lax

from jaxtrain.errors import ConfigError

# Finite, so a row with every key masked gives a uniform softmax instead of NaN; exp() of it
# (relative to any unmasked score) is exactly 0 in float32.
NEG_INF = -1e30
BLOCK_Q = 128  # query block of the "blocked" kernel


def _causal_bias_LxS(length: int, keys: int) -> jax.Array:
    """0 where key j <= query i + (keys - length) (bottom-right aligned), NEG_INF elsewhere."""
    q_LxS = lax.broadcasted_iota(jnp.int32, (length, keys), 0) + (keys - length)
    k_LxS = lax.broadcasted_iota(jnp.int32, (length, keys), 1)
    return jnp.where(k_LxS <= q_LxS, 0.0, NEG_INF).astype(jnp.float32)


def _mask_bias(mask) -> jax.Array:
    return jnp.where(mask, 0.0, NEG_INF).astype(jnp.float32)


def _bias(length: int, keys: int, mask, causal: bool) -> jax.Array | None:
    """The additive float32 bias of a causal and/or masked call, broadcastable to BxHxLxS."""
    bias = _causal_bias_LxS(length, keys) if causal else None
    if mask is not None:
        bias = _mask_bias(mask) if bias is None else bias + _mask_bias(mask)
    return bias


def _attend_bias(q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, bias) -> jax.Array:
    scale = q_BxLxHxD.shape[-1] ** -0.5
    q_BxLxHxD = q_BxLxHxD * jnp.asarray(scale, q_BxLxHxD.dtype)
    s_BxHxLxS = jnp.einsum(
        "blhd,bshd->bhls", q_BxLxHxD, k_BxSxHxD, preferred_element_type=jnp.float32
    )
    if bias is not None:
        s_BxHxLxS = s_BxHxLxS + bias
    p_BxHxLxS = jax.nn.softmax(s_BxHxLxS, axis=-1).astype(v_BxSxHxD.dtype)
    return jnp.einsum("bhls,bshd->blhd", p_BxHxLxS, v_BxSxHxD)


def _attention_bias(q, k, v, mask, causal: bool) -> jax.Array:
    return _attend_bias(q, k, v, _bias(q.shape[1], k.shape[1], mask, causal))


def _to_bhld(x_BxLxHxD: jax.Array) -> jax.Array:
    return jnp.swapaxes(x_BxLxHxD, 1, 2)


@jax.custom_vjp
def _attend_bhld(q_BxHxLxD, k_BxHxSxD, v_BxHxSxD, bias):
    return _attend_bhld_fwd(q_BxHxLxD, k_BxHxSxD, v_BxHxSxD, bias)[0]


def _attend_bhld_fwd(q, k, v, bias):
    dt, f32 = v.dtype, jnp.float32
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    s_BxHxLxS = jnp.einsum("bhld,bhsd->bhls", q, k, preferred_element_type=f32)
    if bias is not None:
        s_BxHxLxS = s_BxHxLxS + bias
    p_BxHxLxS = jax.nn.softmax(s_BxHxLxS, axis=-1)
    o_BxHxLxD = jnp.einsum("bhls,bhsd->bhld", p_BxHxLxS.astype(dt), v, preferred_element_type=f32)
    o_BxHxLxD = o_BxHxLxD.astype(dt)
    return o_BxHxLxD, (q, k, v, p_BxHxLxS, o_BxHxLxD)


def _attend_bhld_bwd(res, do_BxHxLxD):
    # Softmax backward as in FlashAttention: ds = p * (dp - rowsum(do * o)); the row sum runs
    # over D instead of S, one pass over [L, S] fewer than autodiff's rowsum(dp * p).
    q, k, v, p, o = res
    dt, f32 = v.dtype, jnp.float32
    p_c = p.astype(dt)
    dv = jnp.einsum("bhls,bhld->bhsd", p_c, do_BxHxLxD, preferred_element_type=f32)
    dp = jnp.einsum("bhld,bhsd->bhls", do_BxHxLxD, v, preferred_element_type=f32)
    rows = jnp.sum(do_BxHxLxD.astype(f32) * o.astype(f32), -1, keepdims=True)
    ds = (p * (dp - rows)).astype(dt)
    scale = q.shape[-1] ** -0.5  # q in res is already scaled; dq needs the scale once more
    dq = jnp.einsum("bhls,bhsd->bhld", ds, k, preferred_element_type=f32) * scale
    dk = jnp.einsum("bhls,bhld->bhsd", ds, q, preferred_element_type=f32)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt), None


_attend_bhld.defvjp(_attend_bhld_fwd, _attend_bhld_bwd)


def _attention_blocked(q, k, v, mask, causal: bool) -> jax.Array:
    q, k, v = _to_bhld(q), _to_bhld(k), _to_bhld(v)
    length, keys = q.shape[2], k.shape[2]
    if not causal or length <= BLOCK_Q:
        return _to_bhld(_attend_bhld(q, k, v, _bias(length, keys, mask, causal)))
    if mask is not None:
        mask = jnp.asarray(mask)
        mask = mask.reshape((1,) * max(0, 2 - mask.ndim) + mask.shape)  # give it L, S axes
    outs = []
    for start in range(0, length, BLOCK_Q):
        stop = min(start + BLOCK_Q, length)
        end = stop + keys - length  # causal: these queries see keys [0, end) only
        # Bottom-right alignment of the [stop - start, end) bias puts query i at start + i.
        bias = _causal_bias_LxS(stop - start, end)
        if mask is not None:
            rows = mask if mask.shape[-2] == 1 else mask[..., start:stop, :]
            bias = bias + _mask_bias(rows if rows.shape[-1] == 1 else rows[..., :end])
        outs.append(_attend_bhld(q[:, :, start:stop], k[:, :, :end], v[:, :, :end], bias))
    return _to_bhld(jnp.concatenate(outs, axis=2))


def _attention_where(q, k, v, mask, causal: bool) -> jax.Array:
    length, keys = q.shape[1], k.shape[1]
    s = jnp.einsum("blhd,bshd->bhls", q, k, preferred_element_type=jnp.float32)
    s = s / jnp.sqrt(jnp.float32(q.shape[-1]))
    full = jnp.ones((length, keys), jnp.bool_)
    if causal:
        full = jnp.tril(full, keys - length)
    if mask is not None:
        full = jnp.logical_and(full, mask)
    s = jnp.where(full, s, NEG_INF)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    return jnp.einsum("bhls,bshd->blhd", p, v)


def _attention_jax_nn(q, k, v, mask, causal: bool, implementation: str) -> jax.Array:
    if causal and q.shape[1] != k.shape[1]:
        # jax aligns its causal mask top-left; express the bottom-right one as a mask.
        tri = _causal_bias_LxS(q.shape[1], k.shape[1]) == 0
        mask = tri if mask is None else jnp.logical_and(tri, mask)
        causal = False
    if mask is not None:
        mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=causal, implementation=implementation
    )


def _attention_jax(q, k, v, mask, causal: bool) -> jax.Array:
    return _attention_jax_nn(q, k, v, mask, causal, "xla")


def _attention_cudnn(q, k, v, mask, causal: bool) -> jax.Array:
    return _attention_jax_nn(q, k, v, mask, causal, "cudnn")


IMPLEMENTATIONS = {
    "bias": _attention_bias,
    "blocked": _attention_blocked,
    "where": _attention_where,
    "jax": _attention_jax,
    "cudnn": _attention_cudnn,
}
ALIASES = {"reference": "where", "xla": "jax"}
AUTO = "auto"
# What config.model.attention (llama) / attention_impl (gpt, bert) accept.
NAMES = (*IMPLEMENTATIONS, *ALIASES, AUTO)
DEFAULT_IMPL = "blocked"
_GROUPED_NATIVELY = ("jax", "cudnn")  # jax.nn takes k/v with fewer heads as they are
_HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def select_implementation(name: str, *, backend: str, dtype, field: str = "attention") -> str:
    """The kernel that `name` runs on `backend` ("cpu", "gpu", "tpu") for q/k/v of `dtype`.

    Pure: aliases resolve to their kernel; "auto" is cudnn on a GPU in bf16/f16, blocked on CPU
    and xla otherwise. ConfigError naming `config.model.<field>` for an unknown name or cudnn
    where it cannot run (off GPU, or float32)."""
    if name not in NAMES:
        raise ConfigError(
            f"config.model.{field}: unknown attention impl {name!r}; valid: {', '.join(NAMES)}"
        )
    half = jnp.dtype(dtype) in _HALF_DTYPES
    if name == AUTO:
        if backend == "gpu" and half:
            return "cudnn"
        return "blocked" if backend == "cpu" else "jax"
    name = ALIASES.get(name, name)
    if name == "cudnn" and (backend != "gpu" or not half):
        raise ConfigError(
            f"config.model.{field}: 'cudnn' needs a GPU and compute_dtype=bfloat16 (backend "
            f"{backend!r}, dtype {jnp.dtype(dtype).name}); use auto, blocked or xla"
        )
    return name


def resolve_implementation(name: str, dtype, field: str = "attention") -> str:
    """The kernel `name` runs on this process's default backend (select_implementation); models
    call it when they are built, so a bad choice fails before anything compiles."""
    return select_implementation(name, backend=jax.default_backend(), dtype=dtype, field=field)


def runnable_implementations(backend: str) -> tuple[str, ...]:
    """The kernels that run on `backend` (cudnn needs a GPU)."""
    return tuple(n for n in IMPLEMENTATIONS if n != "cudnn" or backend == "gpu")


def segment_mask(segment_ids_BxL: jax.Array) -> jax.Array:
    """bool [B, 1, L, L]: query i may attend key j only within its own segment (packed rows).
    Padding (segment 0) attends only to padding, so no row of the softmax is empty."""
    return segment_ids_BxL[:, None, :, None] == segment_ids_BxL[:, None, None, :]


def _repeat_kv_heads(x_BxSxGxD: jax.Array, heads: int) -> jax.Array:
    """[B, S, G, D] -> [B, S, H, D]: key/value head g serves query heads g*H/G .. (g+1)*H/G-1."""
    groups = heads // x_BxSxGxD.shape[2]
    return x_BxSxGxD if groups == 1 else jnp.repeat(x_BxSxGxD, groups, axis=2)


def dot_product_attention(
    q_BxLxHxD: jax.Array,
    k_BxSxGxD: jax.Array,
    v_BxSxGxD: jax.Array,
    mask: jax.Array | None = None,
    *,
    causal: bool = False,
    impl: str = DEFAULT_IMPL,
) -> jax.Array:
    """softmax(q k^T / sqrt(D) + mask) v per head; returns out_BxLxHxD in v's dtype.

    mask: bool, broadcastable to [B, H, L, S], True = attend. causal: query i attends key j iff
    j <= i + (S - L) (bottom-right aligned, so L == S is ordinary causal self-attention).
    k, v may have G <= H heads (grouped-query attention), G dividing H. `impl` is any of NAMES;
    "auto" and the aliases resolve for the default backend (select_implementation).
    """
    heads = q_BxLxHxD.shape[-2] if q_BxLxHxD.ndim == 4 else 0
    kv_heads = k_BxSxGxD.shape[-2] if k_BxSxGxD.ndim == 4 else 0
    if not (heads and kv_heads and k_BxSxGxD.shape == v_BxSxGxD.shape and heads % kv_heads == 0):
        raise ValueError(
            f"attention wants q [B,L,H,D] and k, v [B,S,G,D] of equal shape with G dividing H; "
            f"got {q_BxLxHxD.shape}, {k_BxSxGxD.shape}, {v_BxSxGxD.shape}"
        )
    impl = select_implementation(impl, backend=jax.default_backend(), dtype=v_BxSxGxD.dtype)
    if impl not in _GROUPED_NATIVELY:
        k_BxSxGxD = _repeat_kv_heads(k_BxSxGxD, heads)
        v_BxSxGxD = _repeat_kv_heads(v_BxSxGxD, heads)
    return IMPLEMENTATIONS[impl](q_BxLxHxD, k_BxSxGxD, v_BxSxGxD, mask, causal)
