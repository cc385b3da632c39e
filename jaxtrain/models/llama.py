"""A Llama-style decoder-only language model: RMSNorm, SwiGLU MLP, rotary positions,
grouped-query attention, no biases; the forward and the KV-cache decode path are gpt.py's.

Letters: B batch, L sequence length, D d_model, H query heads, G key/value heads (dividing H),
K head dim (D / H), F MLP width, V vocabulary.

Parameters are float32 with logical axis names (see gpt.py for the tensor-parallel layout; the
key/value heads have their own name, so they can be replicated when G is smaller than the
tensor axis):

    embed        [V, D]     ("vocab", "embed")          also the output projection when tied
    wq           [D, H, K]  ("embed", "heads", "kv")     column-parallel
    wk, wv       [D, G, K]  ("embed", "kv_heads", "kv")  column-parallel
    wo           [H, K, D]  ("heads", "kv", "embed")     row-parallel
    gate, up     [D, F]     ("embed", "mlp")             column-parallel
    down         [F, D]     ("mlp", "embed")             row-parallel
    RMSNorm scales ("norm",); head [D, V] ("embed", "vocab") when untied

Init: N(0, 0.02), with wo and down scaled by 1 / sqrt(2 N) (GPT-2's residual scaling).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxtrain.models import attention
from jaxtrain.models import settings as S
from jaxtrain.models.gpt import (
    COMPUTE_DTYPES,
    INIT_STD,
    ROPE_BASE,
    CausalDecoder,
    DecoderBlock,
    apply_rope,
    vocab_logits,
)
from jaxtrain.models.layers import REMAT_NAMES, logical_param


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """config.model for model.name=llama (pad_id comes from the tokenizer)."""

    vocab_size: int = S.dataset_default("vocab_size")  # 0: the tokenizer's vocabulary size
    max_len: int = 256  # longest sequence (and KV cache size)
    num_layers: int = 4
    d_model: int = 256
    num_heads: int = 4  # query heads
    num_kv_heads: int = 2  # key/value heads, dividing num_heads (= num_heads: plain MHA)
    d_ff: int = 704  # SwiGLU width (Llama: about 8/3 d_model)
    dropout: float = 0.0  # after the embedding and on each sub-block's output
    rope_base: float = ROPE_BASE  # rotary base (Llama 2: 1e4, Llama 3: 5e5)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = False  # the output projection shares the input embedding
    compute_dtype: str = "float32"  # or "bfloat16": float32 params, bf16 compute, f32 loss
    remat: str = "none"  # none, full, dots_saveable, ... (models/layers.py REMAT_POLICIES)
    attention: str = "auto"  # jaxtrain.models.attention NAMES: auto, reference, blocked, xla, cudnn
    pretrained: str = ""  # "hf:FOLDER", a Llama HF folder imported at init (models/pretrained.py)
    pad_id: int = S.dataset_field("pad_id", 0)

    def __post_init__(self):
        S.check(self.vocab_size >= 0, "vocab_size", "must be >= 0 (0: the tokenizer's)")
        S.check_positive(
            self, "max_len", "num_layers", "d_model", "num_heads", "num_kv_heads", "d_ff"
        )
        S.check(
            self.d_model % self.num_heads == 0,
            "num_heads",
            f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}",
        )
        S.check(
            self.num_heads % self.num_kv_heads == 0,
            "num_kv_heads",
            f"{self.num_kv_heads} does not divide num_heads={self.num_heads}",
        )
        S.check(self.head_dim % 2 == 0, "num_heads", "rotary positions need an even head dim")
        S.check(self.rope_base > 1.0, "rope_base", f"must be > 1, got {self.rope_base}")
        S.check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        S.check_choice(self.compute_dtype, "compute_dtype", tuple(COMPUTE_DTYPES))
        S.check_dropout(self.dropout)
        S.check_pad_id(self)
        S.check_choice(self.attention, "attention", attention.NAMES)
        S.check_choice(self.remat, "remat", REMAT_NAMES)
        S.check(
            self.attention != "cudnn" or self.compute_dtype == "bfloat16",
            "attention",
            "'cudnn' needs compute_dtype=bfloat16",
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads

    @property
    def dtype(self) -> jnp.dtype:
        return COMPUTE_DTYPES[self.compute_dtype]


class RMSNorm(nnx.Module):
    """x / rms(x) * scale with float32 statistics; returns the compute dtype."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs):
        self.scale = logical_param(rngs, jax.nn.initializers.ones, (dim,), ("norm",))
        self.eps = eps

    def __call__(self, x_BxLxD: jax.Array, dtype) -> jax.Array:
        x = x_BxLxD.astype(jnp.float32)
        y = x * lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(dtype)


class LlamaBlock(DecoderBlock):
    """x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); the residual stream is float32."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        d, h, g, k, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff
        w_init = jax.nn.initializers.normal(INIT_STD)
        out_init = jax.nn.initializers.normal(INIT_STD / math.sqrt(2 * cfg.num_layers))
        self.cfg = cfg
        self.attn_norm = RMSNorm(d, cfg.norm_eps, rngs=rngs)
        self.wq = logical_param(rngs, w_init, (d, h, k), ("embed", "heads", "kv"))
        self.wk = logical_param(rngs, w_init, (d, g, k), ("embed", "kv_heads", "kv"))
        self.wv = logical_param(rngs, w_init, (d, g, k), ("embed", "kv_heads", "kv"))
        self.wo = logical_param(rngs, out_init, (h, k, d), ("heads", "kv", "embed"))
        self.mlp_norm = RMSNorm(d, cfg.norm_eps, rngs=rngs)
        self.gate = logical_param(rngs, w_init, (d, f), ("embed", "mlp"))
        self.up = logical_param(rngs, w_init, (d, f), ("embed", "mlp"))
        self.down = logical_param(rngs, out_init, (f, d), ("mlp", "embed"))
        self.dropout = nnx.Dropout(cfg.dropout)
        self.attention_impl = attention.resolve_implementation(cfg.attention, cfg.dtype)

    def project_qkv(self, x_BxLxD: jax.Array, positions: jax.Array):
        """RMSNorm, q [B, L, H, K] and k, v [B, L, G, K] projections, rotary q and k."""
        dt, base = self.cfg.dtype, self.cfg.rope_base
        h_BxLxD = self.attn_norm(x_BxLxD, dt)
        q = jnp.einsum("bld,dhk->blhk", h_BxLxD, self.wq[...].astype(dt))
        k = jnp.einsum("bld,dgk->blgk", h_BxLxD, self.wk[...].astype(dt))
        v = jnp.einsum("bld,dgk->blgk", h_BxLxD, self.wv[...].astype(dt))
        return apply_rope(q, positions, base), apply_rope(k, positions, base), v

    def finish(self, x_BxLxD, a_BxLxHxK, *, train: bool, dropout_key: jax.Array) -> jax.Array:
        """Output projection + residual, then the SwiGLU sub-block: down(silu(gate x) * up x)."""
        dt = self.cfg.dtype
        key_attn, key_mlp = jax.random.split(dropout_key)
        y = jnp.einsum("blhk,hkd->bld", a_BxLxHxK, self.wo[...].astype(dt)).astype(jnp.float32)
        x_BxLxD = x_BxLxD + self.dropout(y, deterministic=not train, rngs=key_attn)
        h = self.mlp_norm(x_BxLxD, dt)
        h_BxLxF = jax.nn.silu(h @ self.gate[...].astype(dt)) * (h @ self.up[...].astype(dt))
        y = (h_BxLxF @ self.down[...].astype(dt)).astype(jnp.float32)
        return x_BxLxD + self.dropout(y, deterministic=not train, rngs=key_mlp)


class Llama(CausalDecoder):
    """Token embedding -> N blocks (rotary positions inside attention) -> RMSNorm -> logits."""

    NAME = "llama"

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        w_init = jax.nn.initializers.normal(INIT_STD)
        d, v = cfg.d_model, cfg.vocab_size
        self.embed = logical_param(rngs, w_init, (v, d), ("vocab", "embed"))
        self.blocks = nnx.List([LlamaBlock(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(d, cfg.norm_eps, rngs=rngs)
        if not cfg.tie_embeddings:
            self.head = logical_param(rngs, w_init, (d, v), ("embed", "vocab"))
        self.dropout = nnx.Dropout(cfg.dropout)

    def _embed(self, tokens_BxL: jax.Array, positions: jax.Array) -> jax.Array:
        del positions  # rotary: positions enter in every block's attention
        return jnp.take(self.embed[...], tokens_BxL, axis=0)

    def _logits(self, x_BxLxD: jax.Array) -> jax.Array:
        head = None if self.cfg.tie_embeddings else self.head
        return vocab_logits(self.norm(x_BxLxD, self.cfg.dtype), self.embed, head, self.cfg.dtype)


def count_params(cfg: LlamaConfig) -> int:
    """Exact number of trainable parameters of Llama(cfg)."""
    d, f, v, k = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.head_dim
    attn = d * cfg.num_heads * k * 2 + d * cfg.num_kv_heads * k * 2  # wq, wo; wk, wv
    per_block = 2 * d + attn + 3 * d * f
    return v * d + cfg.num_layers * per_block + d + (0 if cfg.tie_embeddings else d * v)
