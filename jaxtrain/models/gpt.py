"""A GPT-style decoder-only language model with a KV-cache decode path.

Letters: B batch, L sequence (query) length, S cache length, D d_model, H heads, K head dim
(D / H), F MLP width, V vocabulary, N layers, T the three of fused q/k/v.

Parameters are stored in float32 and annotated with logical axes. The layouts make Megatron
tensor parallelism a matter of mapping "heads" and "mlp" to a model axis: q/k/v and the MLP
up-projection are column-parallel (each device holds whole heads / a slice of F, no
communication), the attention output and MLP down-projection are row-parallel (they contract the
sharded axis, so XLA inserts one all-reduce per sub-block). "embed" is the axis FSDP shards.

    embed      [V, D]        ("vocab", "embed")        also the output projection when tied
    pos_embed  [S, D]        (None, "embed")           learned positions only
    qkv        [D, T, H, K]  ("embed", None, "heads", "kv")   column-parallel
    qkv_bias   [T, H, K]     (None, "heads", "kv")
    out        [H, K, D]     ("heads", "kv", "embed")  row-parallel
    up         [D, F]        ("embed", "mlp")          column-parallel
    down       [F, D]        ("mlp", "embed")          row-parallel
    out/up/down biases: ("embed",) / ("mlp",) / ("embed",); LayerNorm scale, bias: ("norm",)
    head       [D, V]        ("embed", "vocab")        untied only

The annotations carry `eager_sharding=False`: they are logical names, not mesh axes, so the
variables must not be placed at creation; the trainer maps names to mesh axes.

`CausalDecoder` is what this decoder shares with the Llama family (models/llama.py): the forward
over the blocks, packed-document inputs (segment ids and per-token positions, see
jaxtrain/data/packing.py) and the KV-cache decode path.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxtrain.models import attention
from jaxtrain.models import settings as S
from jaxtrain.models.attention import dot_product_attention, segment_mask
from jaxtrain.models.layers import REMAT_NAMES, logical_param, remat

POSITIONS = ("learned", "rope")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
INIT_STD = 0.02
ROPE_BASE = 10_000.0
LN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """config.model for model.name=gpt (pad_id comes from the tokenizer)."""

    vocab_size: int = S.dataset_default("vocab_size")  # 0: the tokenizer's vocabulary size
    max_len: int = 256  # longest sequence (learned positions / KV cache size)
    num_layers: int = 4
    d_model: int = 256
    num_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    positions: str = "learned"  # "learned" | "rope"
    tie_embeddings: bool = True  # the output projection shares the input embedding
    compute_dtype: str = "float32"  # or "bfloat16": float32 params, bf16 compute, f32 loss
    # Recompute block activations in the backward pass (saves memory): "none", "full",
    # "dots_saveable", "dots_with_no_batch_dims_saveable" (jaxtrain/models/layers.py).
    remat: str = "none"
    scaled_residual_init: bool = True  # GPT-2: out/down kernels ~ N(0, 0.02 / sqrt(2 N))
    attention_impl: str = "blocked"  # see jaxtrain.models.attention (NAMES; auto, cudnn)
    pretrained: str = ""  # "hf:FOLDER", a GPT-2 HF folder imported at init (models/pretrained.py)
    pad_id: int = S.dataset_field("pad_id", 0)

    def __post_init__(self):
        S.check(self.vocab_size >= 0, "vocab_size", "must be >= 0 (0: the tokenizer's)")
        S.check_positive(self, "max_len", "num_layers", "d_model", "num_heads", "d_ff")
        S.check(
            self.d_model % self.num_heads == 0,
            "num_heads",
            f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}",
        )
        S.check_choice(self.positions, "positions", POSITIONS)
        S.check(
            self.positions != "rope" or (self.d_model // self.num_heads) % 2 == 0,
            "positions",
            "'rope' needs an even head dim (d_model / num_heads)",
        )
        S.check_choice(self.compute_dtype, "compute_dtype", tuple(COMPUTE_DTYPES))
        S.check_dropout(self.dropout)
        S.check_pad_id(self)
        S.check_choice(self.attention_impl, "attention_impl", attention.NAMES)
        S.check_choice(self.remat, "remat", REMAT_NAMES)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def dtype(self) -> jnp.dtype:
        return COMPUTE_DTYPES[self.compute_dtype]

    @property
    def kv_heads(self) -> int:
        return self.num_heads


class KVCache(NamedTuple):
    """Preallocated keys and values of every layer, [N, B, S, H, K] in the compute dtype."""

    k: jax.Array
    v: jax.Array


def _zeros(rngs: nnx.Rngs, shape: tuple[int, ...], names: tuple) -> nnx.Param:
    return logical_param(rngs, jax.nn.initializers.zeros, shape, names)


class LayerNorm(nnx.Module):
    """LayerNorm with float32 statistics; returns the compute dtype (the next matmul's input)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.scale = logical_param(rngs, jax.nn.initializers.ones, (dim,), ("norm",))
        self.bias = _zeros(rngs, (dim,), ("norm",))

    def __call__(self, x_BxLxD: jax.Array, dtype) -> jax.Array:
        x = x_BxLxD.astype(jnp.float32)
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        y = (x - mean) * lax.rsqrt(var + LN_EPS) * self.scale[...] + self.bias[...]
        return y.astype(dtype)


def apply_rope(x_BxLxHxK: jax.Array, positions: jax.Array, base: float = ROPE_BASE) -> jax.Array:
    """Rotary embedding (rotate-half form), angles computed in float32. positions: [L] (every
    row alike) or [B, L] (packed rows, restarting at each document)."""
    half = x_BxLxHxK.shape[-1] // 2
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_Lx1xK = (positions.astype(jnp.float32)[..., None] * inv_freq)[..., None, :]
    sin, cos = jnp.sin(angle_Lx1xK), jnp.cos(angle_Lx1xK)
    x = x_BxLxHxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxLxHxK.dtype)


class DecoderBlock(nnx.Module):
    """A pre-norm causal block: subclasses define project_qkv (norm, projections, rotation) and
    finish (output projection + residual, MLP sub-block) and set attention_impl."""

    attention_impl: str

    def __call__(self, x_BxLxD, positions, mask, *, train: bool, dropout_key: jax.Array):
        """positions [L] or [B, L]; mask None or bool [B, 1, L, L] (packed segments)."""
        q, k, v = self.project_qkv(x_BxLxD, positions)
        a = dot_product_attention(q, k, v, mask, causal=True, impl=self.attention_impl)
        return self.finish(x_BxLxD, a, train=train, dropout_key=dropout_key)


class Block(DecoderBlock):
    """Pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x)); the residual stream is float32."""

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        d, h, k, f = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff
        w_init = jax.nn.initializers.normal(INIT_STD)
        scale = math.sqrt(2 * cfg.num_layers) if cfg.scaled_residual_init else 1.0
        out_init = jax.nn.initializers.normal(INIT_STD / scale)
        self.cfg = cfg
        self.ln1 = LayerNorm(d, rngs=rngs)
        self.qkv = logical_param(rngs, w_init, (d, 3, h, k), ("embed", None, "heads", "kv"))
        self.qkv_bias = _zeros(rngs, (3, h, k), (None, "heads", "kv"))
        self.out = logical_param(rngs, out_init, (h, k, d), ("heads", "kv", "embed"))
        self.out_bias = _zeros(rngs, (d,), ("embed",))
        self.ln2 = LayerNorm(d, rngs=rngs)
        self.up = logical_param(rngs, w_init, (d, f), ("embed", "mlp"))
        self.up_bias = _zeros(rngs, (f,), ("mlp",))
        self.down = logical_param(rngs, out_init, (f, d), ("mlp", "embed"))
        self.down_bias = _zeros(rngs, (d,), ("embed",))
        self.dropout = nnx.Dropout(cfg.dropout)
        self.attention_impl = attention.resolve_implementation(
            cfg.attention_impl, cfg.dtype, "attention_impl"
        )

    def project_qkv(self, x_BxLxD: jax.Array, positions_L: jax.Array):
        """LN, fused q/k/v projection and (for rope) rotation; three [B, L, H, K] arrays."""
        dt = self.cfg.dtype
        h_BxLxD = self.ln1(x_BxLxD, dt)
        qkv_BxLxTxHxK = jnp.einsum("bld,dthk->blthk", h_BxLxD, self.qkv[...].astype(dt))
        qkv_BxLxTxHxK = qkv_BxLxTxHxK + self.qkv_bias[...].astype(dt)
        q, k, v = (qkv_BxLxTxHxK[:, :, i] for i in range(3))
        if self.cfg.positions == "rope":
            q, k = apply_rope(q, positions_L), apply_rope(k, positions_L)
        return q, k, v

    def finish(self, x_BxLxD, a_BxLxHxK, *, train: bool, dropout_key: jax.Array) -> jax.Array:
        """Output projection + residual, then the MLP sub-block."""
        dt = self.cfg.dtype
        key_attn, key_mlp = jax.random.split(dropout_key)
        y = jnp.einsum("blhk,hkd->bld", a_BxLxHxK, self.out[...].astype(dt))
        y = (y + self.out_bias[...].astype(dt)).astype(jnp.float32)
        x_BxLxD = x_BxLxD + self.dropout(y, deterministic=not train, rngs=key_attn)
        h = self.ln2(x_BxLxD, dt)
        h = jax.nn.gelu(h @ self.up[...].astype(dt) + self.up_bias[...].astype(dt))
        y = (h @ self.down[...].astype(dt) + self.down_bias[...].astype(dt)).astype(jnp.float32)
        return x_BxLxD + self.dropout(y, deterministic=not train, rngs=key_mlp)


def _block_forward(block: DecoderBlock, x_BxLxD, positions, mask, dropout_key, train: bool):
    return block(x_BxLxD, positions, mask, train=train, dropout_key=dropout_key)


def vocab_logits(h_BxLxD: jax.Array, embed: nnx.Param, head: nnx.Param | None, dt) -> jax.Array:
    """Float32 [B, L, V] logits of the final-normed stream: through the input embedding
    (tied, head None) or the separate head [D, V]."""
    f32 = jnp.float32
    if head is None:
        w_VxD = embed[...].astype(dt)
        return jnp.einsum("bld,vd->blv", h_BxLxD, w_VxD, preferred_element_type=f32)
    w_DxV = head[...].astype(dt)
    return jnp.einsum("bld,dv->blv", h_BxLxD, w_DxV, preferred_element_type=f32)


class CausalDecoder(nnx.Module):
    """The forward and the decoding of a decoder-only LM, shared by its families. Subclasses set
    NAME, cfg (max_len, num_layers, kv_heads, head_dim, dtype, remat), blocks (DecoderBlocks),
    dropout, and define _embed(tokens, positions) and _logits(x)."""

    NAME: str

    def __call__(
        self,
        tokens_BxL: jax.Array,
        *,
        train: bool,
        dropout_key: jax.Array,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        """Causal LM logits, float32 [B, L, V]. Right padding needs no mask: causality already
        keeps every real position from seeing the pads after it. Packed rows pass segment_ids
        [B, L] (a token attends only to earlier tokens of its own segment) and positions [B, L]
        (restarting at each document); without them positions are 0..L-1 in every row."""
        length = tokens_BxL.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(
                f"sequence length {length} exceeds {self.NAME}.max_len {self.cfg.max_len}"
            )
        positions = jnp.arange(length) if positions is None else positions
        mask = None if segment_ids is None else segment_mask(segment_ids)
        x = self._embed(tokens_BxL, positions)
        x = self.dropout(x, deterministic=not train, rngs=jax.random.fold_in(dropout_key, 0))
        # Rematerialised (cfg.remat != "none"): the backward pass recomputes each block's
        # activations from its input, keeping only what the policy saves. `train` is static.
        forward = remat(_block_forward, self.cfg.remat, static_argnums=(5,))
        for i, block in enumerate(self.blocks):
            x = forward(block, x, positions, mask, jax.random.fold_in(dropout_key, i + 1), train)
        return self._logits(x)

    # --- decoding -----------------------------------------------------------------------------

    def init_cache(self, batch: int, length: int) -> KVCache:
        """Zeroed [N, B, S=length, G, K] key/value buffers in the compute dtype (G: key/value
        heads, fewer than the query heads under grouped-query attention)."""
        c = self.cfg
        shape = (c.num_layers, batch, length, c.kv_heads, c.head_dim)
        return KVCache(jnp.zeros(shape, c.dtype), jnp.zeros(shape, c.dtype))

    def extend(self, tokens_BxL: jax.Array, cache: KVCache, start) -> tuple[jax.Array, KVCache]:
        """Runs tokens at positions [start, start+L) against the cache; writes their keys and
        values at those positions. Returns (logits_BxLxV float32, cache). Cost O(L * S)."""
        length, cache_len = tokens_BxL.shape[1], cache.k.shape[2]
        positions_L = start + jnp.arange(length)
        # Query at position p may read cache slots [0, p]; later slots hold zeros or stale data.
        mask_LxS = jnp.arange(cache_len)[None, :] <= positions_L[:, None]
        x = self._embed(tokens_BxL, positions_L)
        k_all, v_all = cache
        no_key = jax.random.key(0)  # dropout is off when decoding
        for i, block in enumerate(self.blocks):
            q, k, v = block.project_qkv(x, positions_L)
            at = (i, 0, start, 0, 0)  # layer i, slots [start, start + L)
            k_all = lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), at)
            v_all = lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), at)
            # cuDNN's fused kernel is for long causal blocks; a query against a masked cache
            # goes through XLA's kernel.
            impl = "jax" if block.attention_impl == "cudnn" else block.attention_impl
            a = dot_product_attention(q, k_all[i], v_all[i], mask_LxS, impl=impl)
            x = block.finish(x, a, train=False, dropout_key=no_key)
        return self._logits(x), KVCache(k_all, v_all)

    def prefill(self, tokens_BxL: jax.Array, cache_len: int) -> tuple[jax.Array, KVCache]:
        """Logits of a prompt and a cache of `cache_len` slots holding its keys and values."""
        if not tokens_BxL.shape[1] <= cache_len <= self.cfg.max_len:
            raise ValueError(
                f"need prompt length {tokens_BxL.shape[1]} <= cache_len {cache_len} <= "
                f"{self.NAME}.max_len {self.cfg.max_len}"
            )
        return self.extend(tokens_BxL, self.init_cache(tokens_BxL.shape[0], cache_len), 0)

    def decode_step(
        self, token_B: jax.Array, cache: KVCache, position
    ) -> tuple[jax.Array, KVCache]:
        """One new token per row at `position`: (logits_BxV float32, updated cache)."""
        logits_Bx1xV, cache = self.extend(token_B[:, None], cache, position)
        return logits_Bx1xV[:, 0], cache


class GPT(CausalDecoder):
    """Token (+ learned position) embedding -> N pre-LN blocks -> LN -> vocabulary logits."""

    NAME = "gpt"

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        w_init = jax.nn.initializers.normal(INIT_STD)
        self.embed = logical_param(rngs, w_init, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"))
        if cfg.positions == "learned":
            self.pos_embed = logical_param(
                rngs, w_init, (cfg.max_len, cfg.d_model), (None, "embed")
            )
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.ln_f = LayerNorm(cfg.d_model, rngs=rngs)
        if not cfg.tie_embeddings:
            self.head = logical_param(
                rngs, w_init, (cfg.d_model, cfg.vocab_size), ("embed", "vocab")
            )
        self.dropout = nnx.Dropout(cfg.dropout)

    def _embed(self, tokens_BxL: jax.Array, positions: jax.Array) -> jax.Array:
        x_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0)
        if self.cfg.positions == "learned":  # positions [L] or [B, L]
            x_BxLxD = x_BxLxD + jnp.take(self.pos_embed[...], positions, axis=0)
        return x_BxLxD

    def _logits(self, x_BxLxD: jax.Array) -> jax.Array:
        head = None if self.cfg.tie_embeddings else self.head
        return vocab_logits(self.ln_f(x_BxLxD, self.cfg.dtype), self.embed, head, self.cfg.dtype)


def count_params(cfg: GPTConfig) -> int:
    """Exact number of trainable parameters of GPT(cfg)."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d)
    total = v * d + cfg.num_layers * per_block + 2 * d
    if cfg.positions == "learned":
        total += cfg.max_len * d
    if not cfg.tie_embeddings:
        total += d * v
    return total


def matmul_params(cfg: GPTConfig) -> int:
    """Weights used in matmuls per token: the blocks' kernels plus the output projection (tied
    or not). Embedding/position lookups, biases and LayerNorms do no matmul FLOPs."""
    d, f = cfg.d_model, cfg.d_ff
    return cfg.num_layers * (4 * d * d + 2 * d * f) + d * cfg.vocab_size


def flops_per_token(cfg: GPTConfig, seq_len: int) -> int:
    """Training FLOPs per token: 6 N + 12 n_layer d_model seq_len (Kaplan et al. 2020 sec. 2.1;
    PaLM, Chowdhery et al. 2022 app. B). Each matmul weight costs 2 FLOPs forward and 4 backward
    per token, N = matmul_params(cfg); attention's QK^T and PV add 2 * 2 * seq_len * d_model
    per layer forward, x3 with the backward pass. seq_len counts the whole sequence (no discount
    for the causal mask, as in PaLM's MFU), so kernels that skip masked blocks do not change it."""
    return 6 * matmul_params(cfg) + 12 * cfg.num_layers * cfg.d_model * seq_len
