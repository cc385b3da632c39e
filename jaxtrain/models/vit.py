"""A Vision Transformer classifier (Dosovitskiy et al. 2021) for small images such as 28x28x1.

Non-overlapping P x P patches -> linear patch embedding (the same map as a conv with stride P)
-> [CLS] token (pooling=cls) + learned position embeddings -> dropout -> N pre-LN encoder blocks
-> LayerNorm -> [CLS] token or mean over patches -> dropout -> dense head. A 28x28 image with
P = 4 is 49 tokens.

The encoder blocks are GPT's pre-LN blocks (models/gpt.py: fused q/k/v, GELU MLP, dropout on
both residual branches, float32 residual stream, bf16 compute option), run without the causal
mask: every token attends to every other. So they carry the same logical axis names, and FSDP
("embed") and tensor-parallel ("heads", "mlp") rules apply unchanged. The parameters added here:

    patch/kernel [P*P*C, D]   (None, "embed")      patch/bias [D]  ("embed",)
    cls          [D]          ("embed",)           pooling=cls only
    pos_embed    [T, D]       (None, "embed")      T = patches (+ 1 with the [CLS] token)
    head/kernel  [D, K]       ("embed", "classes") head/bias  [K]  ("classes",)

Letters: B batch, H/W/C image height, width, channels, P patch size, N patches, T tokens,
D d_model, K classes.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtrain.models import attention, gpt
from jaxtrain.models import settings as S

POOLINGS = ("cls", "mean")
POS_INITS = ("sincos2d", "normal")


@dataclasses.dataclass(frozen=True)
class ViTSettings:
    """config.model for model.name=vit."""

    num_classes: int = 10
    patch_size: int = 4  # P: square patches; the image height and width must be multiples of it
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    d_ff: int = 256  # MLP width of each block
    dropout: float = 0.1  # embeddings, both residual branches of every block, pooled features
    pooling: str = "cls"  # "cls" (a learned [CLS] token) | "mean" (mean over the patch tokens)
    compute_dtype: str = "float32"  # or "bfloat16": float32 params, bf16 matmuls, f32 logits
    attention_impl: str = "blocked"  # see jaxtrain.models.attention (NAMES; auto, cudnn)
    # Start of the learned position embeddings: "sincos2d" (a 2D sin-cos table of the patch row
    # and column, as in Beyer et al. 2022, "Better plain ViT baselines"; needs d_model % 4 == 0)
    # or "normal" (N(0, 0.02)).
    pos_init: str = "sincos2d"
    in_shape: tuple[int, ...] = S.dataset_field("input_shape", (28, 28, 1))

    def __post_init__(self):
        S.check(self.num_classes >= 2, "num_classes", f"must be >= 2, got {self.num_classes}")
        S.check_positive(self, "patch_size", "num_layers", "d_model", "num_heads", "d_ff")
        S.check(
            self.d_model % self.num_heads == 0,
            "num_heads",
            f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}",
        )
        S.check_dropout(self.dropout)
        S.check_choice(self.pooling, "pooling", POOLINGS)
        S.check_choice(self.pos_init, "pos_init", POS_INITS)
        S.check(
            self.pos_init != "sincos2d" or self.d_model % 4 == 0,
            "d_model",
            f"pos_init='sincos2d' needs a multiple of 4, got {self.d_model}",
        )
        S.check_choice(self.compute_dtype, "compute_dtype", tuple(gpt.COMPUTE_DTYPES))
        S.check_choice(self.attention_impl, "attention_impl", attention.NAMES)
        S.check(len(self.in_shape) == 3, "name", f"vit needs (H, W, C) images, got {self.in_shape}")
        height, width, _ = self.in_shape
        S.check(
            height % self.patch_size == 0 and width % self.patch_size == 0,
            "patch_size",
            f"{self.patch_size} does not divide the {height}x{width} images; pick a divisor of "
            "both (e.g. 4 or 7 for 28x28)",
        )

    @property
    def num_patches(self) -> int:
        height, width, _ = self.in_shape
        return (height // self.patch_size) * (width // self.patch_size)

    @property
    def num_tokens(self) -> int:
        return self.num_patches + (self.pooling == "cls")


def create_vit(s: ViTSettings, *, rngs: nnx.Rngs) -> "ViT":
    return ViT(s, rngs=rngs)


def _block_settings(s: ViTSettings) -> gpt.GPTConfig:
    """The settings GPT's block reads (widths, heads, dropout, dtype, attention kernel); the
    vocabulary and positions fields are unused by a block."""
    return gpt.GPTConfig(
        vocab_size=0,
        max_len=s.num_tokens,
        num_layers=s.num_layers,
        d_model=s.d_model,
        num_heads=s.num_heads,
        d_ff=s.d_ff,
        dropout=s.dropout,
        compute_dtype=s.compute_dtype,
        attention_impl=s.attention_impl,
    )


def _named(init: jax.nn.initializers.Initializer, names: tuple[str | None, ...]):
    # eager_sharding=False: logical names, mapped to mesh axes by the trainer (see gpt.py).
    return nnx.with_partitioning(init, names, eager_sharding=False)


def _dense(din: int, dout: int, names: tuple[str | None, str], init, *, rngs: nnx.Rngs):
    return nnx.Linear(
        din,
        dout,
        kernel_init=_named(init, names),
        bias_init=_named(jax.nn.initializers.zeros, names[1:]),
        rngs=rngs,
    )


def patchify(x_BxHxWxC: jax.Array, patch: int) -> jax.Array:
    """[B, H, W, C] -> [B, N, P*P*C]: non-overlapping patches in row-major order, each flattened
    as (row, column, channel), so a dense layer on them equals a conv with stride P."""
    b, h, w, c = x_BxHxWxC.shape
    x = x_BxHxWxC.reshape(b, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def sincos_2d(rows: int, cols: int, dim: int) -> jax.Array:
    """[rows * cols, dim] float32 table for a rows x cols grid in row-major order: sin and cos of
    the column index, then of the row index, each at dim / 4 geometric frequencies 1 .. 1e-4."""
    omega_F = 1.0 / 10_000 ** (jnp.arange(dim // 4, dtype=jnp.float32) / (dim // 4))
    row_G, col_G = (
        a.reshape(-1) for a in jnp.meshgrid(jnp.arange(rows), jnp.arange(cols), indexing="ij")
    )
    col_GxF, row_GxF = col_G[:, None] * omega_F, row_G[:, None] * omega_F
    parts = [jnp.sin(col_GxF), jnp.cos(col_GxF), jnp.sin(row_GxF), jnp.cos(row_GxF)]
    return jnp.concatenate(parts, axis=1)


def _pos_init(s: ViTSettings) -> jax.nn.initializers.Initializer:
    if s.pos_init == "normal":
        return jax.nn.initializers.normal(gpt.INIT_STD)
    height, width, _ = s.in_shape
    table_TxD = sincos_2d(height // s.patch_size, width // s.patch_size, s.d_model)
    if s.pooling == "cls":  # the [CLS] token has no place in the grid: it starts at 0
        table_TxD = jnp.concatenate([jnp.zeros((1, s.d_model)), table_TxD])
    return lambda key, shape, dtype=jnp.float32: table_TxD.astype(dtype)


class ViT(nnx.Module):
    """Patches -> embedding (+ [CLS]) + positions -> pre-LN encoder blocks -> LN -> pool -> head."""

    def __init__(self, s: ViTSettings, *, rngs: nnx.Rngs):
        self.s = s
        patch_dim = s.patch_size**2 * s.in_shape[2]
        # LeCun-normal patch kernel: unit-variance pixels give unit-variance tokens.
        lecun = jax.nn.initializers.lecun_normal()
        self.patch = _dense(patch_dim, s.d_model, (None, "embed"), lecun, rngs=rngs)
        small = jax.nn.initializers.normal(gpt.INIT_STD)
        if s.pooling == "cls":
            self.cls = nnx.Param(_named(small, ("embed",))(rngs.params(), (s.d_model,)))
        shape = (s.num_tokens, s.d_model)
        self.pos_embed = nnx.Param(_named(_pos_init(s), (None, "embed"))(rngs.params(), shape))
        block = _block_settings(s)
        self.blocks = nnx.List([gpt.Block(block, rngs=rngs) for _ in range(s.num_layers)])
        self.ln_f = gpt.LayerNorm(s.d_model, rngs=rngs)
        self.dropout = nnx.Dropout(s.dropout)
        self.head = _dense(s.d_model, s.num_classes, ("embed", "classes"), small, rngs=rngs)

    def _tokens(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """Patch embeddings (after the [CLS] token when pooling=cls) plus positions, float32."""
        s = self.s
        if tuple(x_BxHxWxC.shape[1:]) != tuple(s.in_shape):
            raise ValueError(f"vit expects images of shape {s.in_shape}, got {x_BxHxWxC.shape}")
        x_BxNxD = self.patch(patchify(x_BxHxWxC.astype(jnp.float32), s.patch_size))
        if s.pooling == "cls":
            cls_Bx1xD = jnp.broadcast_to(self.cls[...], (x_BxNxD.shape[0], 1, s.d_model))
            x_BxNxD = jnp.concatenate([cls_Bx1xD, x_BxNxD], axis=1)
        return x_BxNxD + self.pos_embed[...]

    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool, dropout_key: jax.Array) -> jax.Array:
        # Dropout keys: 0 the embeddings, i + 1 block i, N + 1 the pooled features.
        keys = [jax.random.fold_in(dropout_key, i) for i in range(len(self.blocks) + 2)]
        x_BxTxD = self.dropout(self._tokens(x_BxHxWxC), deterministic=not train, rngs=keys[0])
        positions_T = jnp.arange(x_BxTxD.shape[1])  # unused by learned-position blocks
        for block, key in zip(self.blocks, keys[1:-1], strict=True):
            q, k, v = block.project_qkv(x_BxTxD, positions_T)
            # No mask: every token attends to every other. The block resolved its kernel
            # (aliases, auto) when it was built, so a kernel that cannot run here failed there.
            a_BxTxHxK = attention.dot_product_attention(q, k, v, impl=block.attention_impl)
            x_BxTxD = block.finish(x_BxTxD, a_BxTxHxK, train=train, dropout_key=key)
        h_BxTxD = self.ln_f(x_BxTxD, jnp.float32)
        h_BxD = h_BxTxD[:, 0] if self.s.pooling == "cls" else jnp.mean(h_BxTxD, axis=1)
        h_BxD = self.dropout(h_BxD, deterministic=not train, rngs=keys[-1])
        return self.head(h_BxD)  # logits_BxK, float32
