"""A BERT encoder (HF `BertModel` architecture, post-LN) and a sequence classifier on top of it.

Layer for layer it matches HuggingFace BERT, so pretrained checkpoints such as all-MiniLM-L6-v2
load through jaxtrain/models/hf_import.py and reproduce the PyTorch hidden states
(tests/e2e/test_bert.py checks every layer to 1e-5).

Letters: B batch, L query length, S key length (= L), D d_model, H heads, E head dim (D / H),
F feed-forward width, K classes, V vocabulary.

Mixed precision: parameters are float32; matmuls run in `compute_dtype`; layer norms, softmax,
the residual stream and everything returned are float32.

One deliberate difference from HF: attention uses the shared kernel in models/attention.py, which
has no dropout on the attention probabilities (HF's attention_probs_dropout_prob). It changes only
the training-time noise; eval outputs are identical.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtrain.models import attention
from jaxtrain.models import settings as S
from jaxtrain.models.attention import dot_product_attention

POOLINGS = ("mean", "cls")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# HF BERT's initializer_range: every weight matrix and embedding ~ N(0, 0.02).
_INIT = nnx.initializers.normal(0.02)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """config.model for model.name=bert: a BERT encoder plus classifier head.

    MiniLM-L6 is 6 x 384, 12 heads, FFN 1536. pad_id comes from the tokenizer."""

    vocab_size: int = S.dataset_default("vocab_size")  # 0: the tokenizer's vocabulary size
    max_len: int = 256  # number of position embeddings; inputs may be at most this long
    num_layers: int = 4
    d_model: int = 256
    num_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1  # embeddings, attention-output, FFN-output and pooled-feature dropout
    num_classes: int = 2
    pooling: str = "mean"  # "mean" | "cls"
    compute_dtype: str = "float32"  # "float32" | "bfloat16"
    pretrained: str = ""  # "minilm" or "hf:FOLDER" (jaxtrain/models/pretrained.py), at init
    type_vocab_size: int = 2  # segment embeddings; inputs use segment 0 only
    layer_norm_eps: float = 1e-12
    attention_impl: str = "blocked"  # see jaxtrain.models.attention
    pad_id: int = S.dataset_field("pad_id", 0)

    def __post_init__(self):
        S.check(self.vocab_size >= 0, "vocab_size", "must be >= 0 (0: the tokenizer's)")
        S.check_positive(self, "max_len", "num_layers", "d_model", "num_heads", "d_ff")
        S.check(
            self.d_model % self.num_heads == 0,
            "num_heads",
            f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}",
        )
        S.check_choice(self.pooling, "pooling", POOLINGS)
        S.check_choice(self.compute_dtype, "compute_dtype", tuple(COMPUTE_DTYPES))
        S.check_choice(self.attention_impl, "attention_impl", attention.NAMES)
        S.check_dropout(self.dropout)
        S.check_pad_id(self)
        S.check(self.num_classes >= 2, "num_classes", f"must be >= 2, got {self.num_classes}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def dtype(self) -> jnp.dtype:
        return COMPUTE_DTYPES[self.compute_dtype]


def _param_init(init, names: tuple[str | None, ...]):
    # eager_sharding=False: the logical names are metadata for the lead's mesh rules; without it
    # flax tries to shard at construction and fails when no mesh is active.
    return nnx.with_partitioning(init, names, eager_sharding=False)


def _linear(din, dout, kernel_names, bias_names, cfg: BertConfig, rngs: nnx.Rngs, axis=-1):
    """nnx.LinearGeneral, so the attention projections can keep an explicit [H, E] head layout."""
    return nnx.LinearGeneral(
        din,
        dout,
        axis=axis,
        kernel_init=_param_init(_INIT, kernel_names),
        bias_init=_param_init(nnx.initializers.zeros_init(), bias_names),
        dtype=cfg.dtype,
        rngs=rngs,
    )


def _layer_norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # use_fast_variance=False computes E[(x - mean)^2] like torch, not E[x^2] - mean^2.
    return nnx.LayerNorm(
        cfg.d_model,
        epsilon=cfg.layer_norm_eps,
        use_fast_variance=False,
        dtype=jnp.float32,
        scale_init=_param_init(nnx.initializers.ones_init(), ("norm",)),
        bias_init=_param_init(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )


def _embed(num: int, names: tuple[str | None, ...], cfg: BertConfig, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(
        num, cfg.d_model, embedding_init=_param_init(_INIT, names), dtype=jnp.float32, rngs=rngs
    )


class BertLayer(nnx.Module):
    """Post-LN block: x = LN(x + drop(attn(x))); x = LN(x + drop(W2 gelu(W1 x)))."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        d, h, e, f = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff
        qkv = (("embed", "heads", "kv"), ("heads", "kv"))
        self.query = _linear(d, (h, e), *qkv, cfg, rngs)
        self.key = _linear(d, (h, e), *qkv, cfg, rngs)
        self.value = _linear(d, (h, e), *qkv, cfg, rngs)
        self.attn_out = _linear(
            (h, e), d, ("heads", "kv", "embed"), ("embed",), cfg, rngs, (-2, -1)
        )
        self.attn_norm = _layer_norm(cfg, rngs)
        self.mlp_in = _linear(d, f, ("embed", "mlp"), ("mlp",), cfg, rngs)
        self.mlp_out = _linear(f, d, ("mlp", "embed"), ("embed",), cfg, rngs)
        self.mlp_norm = _layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.impl = attention.resolve_implementation(
            cfg.attention_impl, cfg.dtype, "attention_impl"
        )

    def __call__(self, x_BxLxD, mask_BxHxLxS, *, train: bool, keys: list) -> jax.Array:
        drop = lambda y, key: self.dropout(y, deterministic=not train, rngs=key)
        q, k, v = self.query(x_BxLxD), self.key(x_BxLxD), self.value(x_BxLxD)
        att_BxLxHxE = dot_product_attention(q, k, v, mask_BxHxLxS, impl=self.impl)
        x_BxLxD = self.attn_norm(x_BxLxD + drop(self.attn_out(att_BxLxHxE), keys[0]))
        # Exact erf GELU (HF "gelu"), not the tanh approximation that jax.nn.gelu defaults to.
        h_BxLxF = jax.nn.gelu(self.mlp_in(x_BxLxD), approximate=False)
        return self.mlp_norm(x_BxLxD + drop(self.mlp_out(h_BxLxF), keys[1]))


class BertEncoder(nnx.Module):
    """Embeddings (word + position + token type -> LN -> dropout) and `num_layers` BertLayers."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.word = _embed(cfg.vocab_size, ("vocab", "embed"), cfg, rngs)
        self.position = _embed(cfg.max_len, (None, "embed"), cfg, rngs)
        self.token_type = _embed(cfg.type_vocab_size, (None, "embed"), cfg, rngs)
        self.embed_norm = _layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.layers = nnx.List([BertLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

    def encode(
        self, tokens_BxL: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> tuple[list[jax.Array], jax.Array]:
        """Hidden states [B, L, D] float32 (embeddings output, then each layer) and the padding
        mask [B, L] (True = real token). All token types are 0 (single-segment inputs)."""
        length = tokens_BxL.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(
                f"sequence length {length} exceeds the {self.cfg.max_len} position embeddings "
                "(BertConfig.max_len); truncate the inputs"
            )
        if train and self.cfg.dropout > 0 and dropout_key is None:
            raise ValueError("train=True with dropout > 0 needs a dropout_key")
        keys = _split_keys(dropout_key, 1 + 2 * self.cfg.num_layers)
        mask_BxL = tokens_BxL != self.cfg.pad_id
        x_BxLxD = (
            self.word(tokens_BxL)
            + self.position(jnp.arange(length))[None]
            + self.token_type(jnp.zeros_like(tokens_BxL))
        )
        x_BxLxD = self.embed_norm(x_BxLxD)
        x_BxLxD = self.dropout(x_BxLxD, deterministic=not train, rngs=keys[0])
        hidden = [x_BxLxD]
        mask_BxHxLxS = mask_BxL[:, None, None, :]  # every query sees every real key
        for i, layer in enumerate(self.layers):
            x_BxLxD = layer(x_BxLxD, mask_BxHxLxS, train=train, keys=keys[1 + 2 * i : 3 + 2 * i])
            hidden.append(x_BxLxD)
        return hidden, mask_BxL

    def sentence_embedding(
        self, tokens_BxL: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """The sentence-transformers all-MiniLM-L6-v2 pipeline: masked mean of the last hidden
        states, L2-normalised. Returns [B, D] float32."""
        hidden, mask_BxL = self.encode(tokens_BxL, train=train, dropout_key=dropout_key)
        x_BxD = mean_pool(hidden[-1], mask_BxL)
        norm_Bx1 = jnp.linalg.norm(x_BxD, axis=-1, keepdims=True)
        return x_BxD / jnp.maximum(norm_Bx1, 1e-12)  # torch.nn.functional.normalize's eps


def _split_keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


def mean_pool(x_BxLxD: jax.Array, mask_BxL: jax.Array) -> jax.Array:
    """Mean over real tokens. An all-pad row gives zeros (the 1e-9 floor is sentence-transformers'
    clamp), so eval batches filled with pad rows stay finite."""
    m_BxLx1 = mask_BxL[..., None].astype(x_BxLxD.dtype)
    return jnp.sum(x_BxLxD * m_BxLx1, axis=1) / jnp.maximum(jnp.sum(m_BxLx1, axis=1), 1e-9)


class BertClassifier(nnx.Module):
    """BertEncoder -> pooling (mean over real tokens, or [CLS]) -> dropout -> Linear(K)."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.encoder = BertEncoder(cfg, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.head = nnx.Linear(
            cfg.d_model,
            cfg.num_classes,
            kernel_init=_param_init(_INIT, ("embed", "classes")),
            bias_init=_param_init(nnx.initializers.zeros_init(), ("classes",)),
            rngs=rngs,
        )

    def __call__(
        self, tokens_BxL: jax.Array, *, train: bool, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        enc_key, head_key = _split_keys(dropout_key, 2)
        hidden, mask_BxL = self.encoder.encode(tokens_BxL, train=train, dropout_key=enc_key)
        if self.cfg.pooling == "mean":
            x_BxD = mean_pool(hidden[-1], mask_BxL)
        elif self.cfg.pooling == "cls":
            x_BxD = hidden[-1][:, 0]
        else:
            raise ValueError(f"unknown pooling {self.cfg.pooling!r}; valid: {', '.join(POOLINGS)}")
        x_BxD = self.dropout(x_BxD, deterministic=not train, rngs=head_key)
        return self.head(x_BxD)  # logits_BxK, float32 (the head's params and input are float32)
