"""The HF tables of jaxtrain's text families (their configs: hf_configs.py).

    jaxtrain   HF architecture      HF tensors (safetensors names)
    llama      LlamaForCausalLM     model.embed_tokens, model.layers.{i}.*, model.norm, lm_head
    gpt        GPT2LMHeadModel      transformer.wte/wpe/h.{i}.*/ln_f, lm_head
    bert       BertModel            embeddings.*, encoder.layer.{i}.* (the classifier's encoder)

Rotary positions: jaxtrain's apply_rope (models/gpt.py) rotates the two halves of each head,
as HF Llama's rotate_half does, with the same frequencies, so q/k rows are copied unpermuted
(tests/unit/test_hf_weights.py checks the logits).

Pure functions: `to_hf(params, cfg)` for export (merge adapters into params before it) and
`from_hf(tensors, cfg, source)` for import.
"""

from typing import Any

import numpy as np

from jaxtrain.errors import CheckpointError
from jaxtrain.models import hf_weights as W
from jaxtrain.models.bert import BertConfig
from jaxtrain.models.gpt import GPTConfig
from jaxtrain.models.hf_weights import rule
from jaxtrain.models.llama import LlamaConfig

# --- Llama -------------------------------------------------------------------------------------

_D = ("d_model",)
_LLAMA_LAYER = (
    rule("model.layers.{i}.input_layernorm.weight", "blocks.{i}.attn_norm.scale", _D),
    rule("model.layers.{i}.self_attn.q_proj.weight", "blocks.{i}.wq", ("q_dim", "d_model"),
         ("d_model", "num_heads", "head_dim"), t=True),
    rule("model.layers.{i}.self_attn.k_proj.weight", "blocks.{i}.wk", ("kv_dim", "d_model"),
         ("d_model", "num_kv_heads", "head_dim"), t=True),
    rule("model.layers.{i}.self_attn.v_proj.weight", "blocks.{i}.wv", ("kv_dim", "d_model"),
         ("d_model", "num_kv_heads", "head_dim"), t=True),
    rule("model.layers.{i}.self_attn.o_proj.weight", "blocks.{i}.wo", ("d_model", "q_dim"),
         ("num_heads", "head_dim", "d_model"), t=True),
    rule("model.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.mlp_norm.scale", _D),
    rule("model.layers.{i}.mlp.gate_proj.weight", "blocks.{i}.gate", ("d_ff", "d_model"), t=True),
    rule("model.layers.{i}.mlp.up_proj.weight", "blocks.{i}.up", ("d_ff", "d_model"), t=True),
    rule("model.layers.{i}.mlp.down_proj.weight", "blocks.{i}.down", ("d_model", "d_ff"), t=True),
)  # fmt: skip


def _llama_rules(cfg: LlamaConfig) -> list[W.Rule]:
    out = [rule("model.embed_tokens.weight", "embed", ("vocab_size", "d_model"))]
    out += W.expand(_LLAMA_LAYER, cfg.num_layers)
    out.append(rule("model.norm.weight", "norm.scale", _D))
    if not cfg.tie_embeddings:
        out.append(rule("lm_head.weight", "head", ("vocab_size", "d_model"), t=True))
    return out


def _llama_sizes(c: LlamaConfig) -> dict[str, int]:
    k = c.head_dim
    return {"vocab_size": c.vocab_size, "d_model": c.d_model, "d_ff": c.d_ff, "head_dim": k,
            "num_heads": c.num_heads, "num_kv_heads": c.num_kv_heads,
            "q_dim": c.num_heads * k, "kv_dim": c.num_kv_heads * k}  # fmt: skip


LLAMA = W.Family(
    name="llama",
    label="Llama (LlamaForCausalLM)",
    settings=LlamaConfig,
    rules=_llama_rules,
    sizes=_llama_sizes,
    size_fields={
        "vocab_size": ("vocab_size", "vocab_size"),
        "d_model": ("d_model", "hidden_size"),
        "d_ff": ("d_ff", "intermediate_size"),
        "q_dim": ("num_heads", "num_attention_heads"),
        "kv_dim": ("num_kv_heads", "num_key_value_heads"),
        "num_layers": ("num_layers", "num_hidden_layers"),
    },
    layers=r"model\.layers\.(\d+)\.",
    # Older checkpoints keep rotary frequencies as a buffer; a tied model may still store its
    # head (HF ties it to the embedding on load).
    ignored=(r".*rotary_emb\.inv_freq", r"lm_head\.weight"),
)

# --- GPT-2 -------------------------------------------------------------------------------------

_GPT_LAYER = (
    rule("transformer.h.{i}.ln_1.weight", "blocks.{i}.ln1.scale", _D),
    rule("transformer.h.{i}.ln_1.bias", "blocks.{i}.ln1.bias", _D),
    # GPT-2's Conv1D stores [in, out] like ours: reshapes only. c_attn's columns are q | k | v,
    # each split into heads.
    rule("transformer.h.{i}.attn.c_attn.weight", "blocks.{i}.qkv", ("d_model", "qkv_dim"),
         ("d_model", "three", "num_heads", "head_dim")),
    rule("transformer.h.{i}.attn.c_attn.bias", "blocks.{i}.qkv_bias", ("qkv_dim",),
         ("three", "num_heads", "head_dim")),
    rule("transformer.h.{i}.attn.c_proj.weight", "blocks.{i}.out", ("d_model", "d_model"),
         ("num_heads", "head_dim", "d_model")),
    rule("transformer.h.{i}.attn.c_proj.bias", "blocks.{i}.out_bias", _D),
    rule("transformer.h.{i}.ln_2.weight", "blocks.{i}.ln2.scale", _D),
    rule("transformer.h.{i}.ln_2.bias", "blocks.{i}.ln2.bias", _D),
    rule("transformer.h.{i}.mlp.c_fc.weight", "blocks.{i}.up", ("d_model", "d_ff")),
    rule("transformer.h.{i}.mlp.c_fc.bias", "blocks.{i}.up_bias", ("d_ff",)),
    rule("transformer.h.{i}.mlp.c_proj.weight", "blocks.{i}.down", ("d_ff", "d_model")),
    rule("transformer.h.{i}.mlp.c_proj.bias", "blocks.{i}.down_bias", _D),
)  # fmt: skip


def _gpt_rules(cfg: GPTConfig) -> list[W.Rule]:
    out = [
        rule("transformer.wte.weight", "embed", ("vocab_size", "d_model")),
        rule("transformer.wpe.weight", "pos_embed", ("max_len", "d_model"), rows=True),
    ]
    out += W.expand(_GPT_LAYER, cfg.num_layers)
    out += [
        rule("transformer.ln_f.weight", "ln_f.scale", _D),
        rule("transformer.ln_f.bias", "ln_f.bias", _D),
    ]
    if not cfg.tie_embeddings:
        out.append(rule("lm_head.weight", "head", ("vocab_size", "d_model"), t=True))
    return out


def _gpt_sizes(c: GPTConfig) -> dict[str, int]:
    return {"vocab_size": c.vocab_size, "d_model": c.d_model, "d_ff": c.d_ff,
            "max_len": c.max_len, "num_heads": c.num_heads, "head_dim": c.head_dim,
            "three": 3, "qkv_dim": 3 * c.d_model}  # fmt: skip


def _gpt_normalize(tensors: dict) -> dict:
    """GPT2Model files (and the original gpt2 upload) have no "transformer." prefix."""
    if "wte.weight" in tensors:
        return {k if k.startswith("lm_head.") else "transformer." + k: v
                for k, v in tensors.items()}  # fmt: skip
    return tensors


GPT2 = W.Family(
    name="gpt",
    label="GPT-2 (GPT2LMHeadModel)",
    settings=GPTConfig,
    rules=_gpt_rules,
    sizes=_gpt_sizes,
    size_fields={
        "vocab_size": ("vocab_size", "vocab_size"),
        "d_model": ("d_model", "n_embd"),
        "qkv_dim": ("d_model", "n_embd"),
        "d_ff": ("d_ff", "n_inner"),
        "max_len": ("max_len", "n_positions"),
        "num_layers": ("num_layers", "n_layer"),
    },
    layers=r"transformer\.h\.(\d+)\.",
    # attn.bias / attn.masked_bias: the causal-mask buffers of older files.
    ignored=(r"transformer\.h\.\d+\.attn\.(masked_)?bias", r"lm_head\.weight"),
    normalize=_gpt_normalize,
)

# --- BERT --------------------------------------------------------------------------------------

_DxD = ("d_model", "d_model")
_HEADS = ("num_heads", "head_dim")
_BERT_EMBEDDINGS = (
    rule("embeddings.word_embeddings.weight", "word.embedding", ("vocab_size", "d_model")),
    # The file may hold more positions than the config uses (max_len < max_position_embeddings).
    rule("embeddings.position_embeddings.weight", "position.embedding", ("max_len", "d_model"),
         rows=True),
    rule("embeddings.token_type_embeddings.weight", "token_type.embedding",
         ("type_vocab_size", "d_model")),
    rule("embeddings.LayerNorm.weight", "embed_norm.scale", _D),
    rule("embeddings.LayerNorm.bias", "embed_norm.bias", _D),
)  # fmt: skip

_H, _O = "encoder.layer.{i}.", "layers.{i}."  # HF / our prefix of layer i
_BERT_LAYER = (
    rule(_H + "attention.self.query.weight", _O + "query.kernel", _DxD, ("d_model", *_HEADS),
         t=True),
    rule(_H + "attention.self.query.bias", _O + "query.bias", _D, _HEADS),
    rule(_H + "attention.self.key.weight", _O + "key.kernel", _DxD, ("d_model", *_HEADS), t=True),
    rule(_H + "attention.self.key.bias", _O + "key.bias", _D, _HEADS),
    rule(_H + "attention.self.value.weight", _O + "value.kernel", _DxD, ("d_model", *_HEADS),
         t=True),
    rule(_H + "attention.self.value.bias", _O + "value.bias", _D, _HEADS),
    rule(_H + "attention.output.dense.weight", _O + "attn_out.kernel", _DxD,
         (*_HEADS, "d_model"), t=True),
    rule(_H + "attention.output.dense.bias", _O + "attn_out.bias", _D),
    rule(_H + "attention.output.LayerNorm.weight", _O + "attn_norm.scale", _D),
    rule(_H + "attention.output.LayerNorm.bias", _O + "attn_norm.bias", _D),
    rule(_H + "intermediate.dense.weight", _O + "mlp_in.kernel", ("d_ff", "d_model"), t=True),
    rule(_H + "intermediate.dense.bias", _O + "mlp_in.bias", ("d_ff",)),
    rule(_H + "output.dense.weight", _O + "mlp_out.kernel", ("d_model", "d_ff"), t=True),
    rule(_H + "output.dense.bias", _O + "mlp_out.bias", _D),
    rule(_H + "output.LayerNorm.weight", _O + "mlp_norm.scale", _D),
    rule(_H + "output.LayerNorm.bias", _O + "mlp_norm.bias", _D),
)  # fmt: skip


def _bert_rules(cfg: BertConfig) -> list[W.Rule]:
    return list(_BERT_EMBEDDINGS) + W.expand(_BERT_LAYER, cfg.num_layers)


def _bert_sizes(c: BertConfig) -> dict[str, int]:
    return {"vocab_size": c.vocab_size, "max_len": c.max_len, "d_model": c.d_model,
            "type_vocab_size": c.type_vocab_size, "d_ff": c.d_ff, "num_heads": c.num_heads,
            "head_dim": c.head_dim}  # fmt: skip


def _bert_normalize(tensors: dict) -> dict:
    if "bert.embeddings.word_embeddings.weight" in tensors:  # BertFor* checkpoints
        return {k.removeprefix("bert."): v for k, v in tensors.items()}
    return tensors


BERT = W.Family(
    name="bert",
    label="BERT",
    settings=BertConfig,
    rules=_bert_rules,
    sizes=_bert_sizes,
    size_fields={
        "vocab_size": ("vocab_size", "vocab_size"),
        "max_len": ("max_len", "max_position_embeddings"),
        "type_vocab_size": ("type_vocab_size", "type_vocab_size"),
        "d_model": ("d_model", "hidden_size"),
        "d_ff": ("d_ff", "intermediate_size"),
        "num_layers": ("num_layers", "num_hidden_layers"),
    },
    layers=r"encoder\.layer\.(\d+)\.",
    prefix="encoder.",  # BertClassifier's encoder; its head stays out of HF
    # BERT's tanh [CLS] pooler (trained for next-sentence prediction; we pool ourselves) and the
    # position_ids buffer.
    ignored=(r"pooler\.dense\.(weight|bias)", r"embeddings\.position_ids"),
    normalize=_bert_normalize,
    extra_params=("head.kernel", "head.bias"),
)

FAMILIES: dict[str, W.Family] = {f.name: f for f in (GPT2, LLAMA, BERT)}


def family_of(cfg: Any) -> W.Family:
    for family in FAMILIES.values():
        if type(cfg) is family.settings:
            return family
    raise CheckpointError(
        f"{type(cfg).__name__}: no HF mapping; HF weights exist for model.name "
        f"{', '.join(FAMILIES)}"
    )


def to_hf(params: Any, cfg: Any) -> dict[str, np.ndarray]:
    """Our model's params (nnx.State or nested dict) -> {HF tensor name: float32 array}."""
    family = family_of(cfg)
    if isinstance(cfg, GPTConfig):
        check_gpt2_compatible(cfg)
    return W.to_hf(params, family, cfg)


def from_hf(tensors: dict[str, np.ndarray], cfg: Any, source: str) -> dict[str, np.ndarray]:
    """HF tensors -> {our param path: float32 array} (BERT: relative to the encoder)."""
    return W.from_hf(tensors, family_of(cfg), cfg, source)


def check_gpt2_compatible(c: GPTConfig) -> None:
    if c.positions != "learned":
        raise CheckpointError(
            f"config.model.positions={c.positions!r}: GPT-2 (GPT2LMHeadModel) has learned "
            "positions only, so this GPT has no HF equivalent; train with positions=learned, "
            "or model.name=llama for rotary positions"
        )


def bert_head_to_hf(params: Any) -> dict[str, np.ndarray]:
    """A BertClassifier's head as a torch Linear's tensors: classifier.weight [K, D], .bias."""
    flat = W.flat_params(params)
    return {
        "classifier.weight": np.ascontiguousarray(flat["head.kernel"].T, np.float32),
        "classifier.bias": np.asarray(flat["head.bias"], np.float32),
    }
