"""The HF tables of jaxtrain's text families, and their configs in both directions.

    jaxtrain   HF architecture      HF tensors (safetensors names)
    llama      LlamaForCausalLM     model.embed_tokens, model.layers.{i}.*, model.norm, lm_head
    gpt        GPT2LMHeadModel      transformer.wte/wpe/h.{i}.*/ln_f, lm_head
    bert       BertModel            embeddings.*, encoder.layer.{i}.* (the classifier's encoder)

Rotary positions: jaxtrain's apply_rope (models/gpt.py) rotates the two halves of each head,
as HF Llama's rotate_half does, with the same frequencies, so q/k rows are copied unpermuted
(tests/unit/test_hf_weights.py checks the logits).

Pure functions for export: `hf_config(cfg)` and `to_hf(params, cfg)`; for import:
`family_of_hf_config(hf)`, `*_config_from_hf(hf, ...)` and `from_hf(tensors, cfg, source)`.
"""

import dataclasses
from typing import Any

import numpy as np

from jaxtrain.errors import CheckpointError
from jaxtrain.models import hf_weights as W
from jaxtrain.models.bert import BertConfig
from jaxtrain.models.gpt import LN_EPS, GPTConfig
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
# HF config.json `architectures` / `model_type` -> our family. BertFor* files import their
# encoder (a warning lists the head's tensors left out).
_ARCHITECTURES = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt", "GPT2Model": "gpt",
                  "BertModel": "bert"}  # fmt: skip
_MODEL_TYPES = {"llama": "llama", "gpt2": "gpt", "bert": "bert"}
SUPPORTED = "LlamaForCausalLM (llama), GPT2LMHeadModel (gpt2), BertModel / BertFor* (bert)"


def family_of(cfg: Any) -> W.Family:
    for family in FAMILIES.values():
        if type(cfg) is family.settings:
            return family
    raise CheckpointError(
        f"{type(cfg).__name__}: no HF mapping; HF weights exist for model.name "
        f"{', '.join(FAMILIES)}"
    )


def family_of_hf_config(hf: dict, source: str) -> W.Family:
    """The family an HF config.json describes; unknown architectures are named."""
    archs = hf.get("architectures") or []
    model_type = hf.get("model_type")
    for arch in archs:
        if arch in _ARCHITECTURES or (arch.startswith("BertFor") and model_type == "bert"):
            name = _ARCHITECTURES.get(arch, "bert")
            if _MODEL_TYPES.get(model_type) == name:
                return FAMILIES[name]
    if not archs and model_type in _MODEL_TYPES:
        return FAMILIES[_MODEL_TYPES[model_type]]
    raise CheckpointError(
        f"{source}: architecture {', '.join(map(str, archs)) or '(none)'} (model_type "
        f"{model_type!r}) is not supported; supported: {SUPPORTED}"
    )


def to_hf(params: Any, cfg: Any) -> dict[str, np.ndarray]:
    """Our model's params (nnx.State or nested dict) -> {HF tensor name: float32 array}."""
    family = family_of(cfg)
    if isinstance(cfg, GPTConfig):
        _check_gpt2_compatible(cfg)
    return W.to_hf(params, family, cfg)


def from_hf(tensors: dict[str, np.ndarray], cfg: Any, source: str) -> dict[str, np.ndarray]:
    """HF tensors -> {our param path: float32 array} (BERT: relative to the encoder)."""
    return W.from_hf(tensors, family_of(cfg), cfg, source)


def hf_config(cfg: Any) -> dict:
    """The HF config.json (a dict) of our settings."""
    family = family_of(cfg)
    return {"llama": _llama_to_hf, "gpt": _gpt_to_hf, "bert": _bert_to_hf}[family.name](cfg)


# --- configs: ours -> HF -----------------------------------------------------------------------

_COMMON = {"dtype": "float32", "bos_token_id": None, "eos_token_id": None}


def _llama_to_hf(c: LlamaConfig) -> dict:
    return {
        **_COMMON,
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.d_ff,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_len,
        "rms_norm_eps": c.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "pad_token_id": c.pad_id,
    }


def _check_gpt2_compatible(c: GPTConfig) -> None:
    if c.positions != "learned":
        raise CheckpointError(
            f"config.model.positions={c.positions!r}: GPT-2 (GPT2LMHeadModel) has learned "
            "positions only, so this GPT has no HF equivalent; train with positions=learned, "
            "or model.name=llama for rotary positions"
        )


def _gpt_to_hf(c: GPTConfig) -> dict:
    _check_gpt2_compatible(c)
    return {
        **_COMMON,
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_embd": c.d_model,
        "n_layer": c.num_layers,
        "n_head": c.num_heads,
        "n_positions": c.max_len,
        "n_inner": c.d_ff,
        "activation_function": "gelu_new",  # jax.nn.gelu's tanh approximation
        "layer_norm_epsilon": LN_EPS,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": 0.0,  # jaxtrain's attention has no dropout on the probabilities
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": c.tie_embeddings,
        "pad_token_id": c.pad_id,
    }


def _bert_to_hf(c: BertConfig) -> dict:
    return {
        **_COMMON,
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.d_ff,
        "hidden_act": "gelu",  # exact erf GELU
        "max_position_embeddings": c.max_len,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps,
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": 0.0,
        "position_embedding_type": "absolute",
        "pad_token_id": c.pad_id,
        # jaxtrain's classifier head (classifier_head.safetensors): logits =
        # pool(last_hidden_state) @ classifier.weight.T + classifier.bias
        "jaxtrain_pooling": c.pooling,
        "jaxtrain_num_classes": c.num_classes,
    }


def bert_head_to_hf(params: Any) -> dict[str, np.ndarray]:
    """A BertClassifier's head as a torch Linear's tensors: classifier.weight [K, D], .bias."""
    flat = W.flat_params(params)
    return {
        "classifier.weight": np.ascontiguousarray(flat["head.kernel"].T, np.float32),
        "classifier.bias": np.asarray(flat["head.bias"], np.float32),
    }


# --- configs: HF -> ours -----------------------------------------------------------------------


def _need(hf: dict, source: str, *keys: str) -> None:
    missing = [k for k in keys if k not in hf]
    if missing:
        raise CheckpointError(f"{source}: missing {', '.join(missing)}")


def _refuse(source: str, key: str, value: Any, label: str, supported: str) -> None:
    raise CheckpointError(
        f"{source}: {key}={value!r} is not supported by jaxtrain's {label} ({supported})"
    )


def _max_len(source: str, max_len: int | None, positions: int, key: str) -> int:
    if max_len is None:
        return positions
    if not 0 < max_len <= positions:
        raise CheckpointError(f"max_len={max_len}: must be in [1, {positions}] ({key} in {source})")
    return max_len


def _build(settings: type, from_file: dict, ours: dict) -> Any:
    """settings(**from_file, **ours); `ours` may only set fields the HF config does not."""
    clash = sorted(set(from_file) & set(ours))
    unknown = sorted(set(ours) - {f.name for f in dataclasses.fields(settings)})
    if clash or unknown:
        raise CheckpointError(
            f"{settings.__name__}: {', '.join(clash + unknown)} cannot be set here "
            f"({'read from the HF config' if clash else 'no such field'})"
        )
    return settings(**from_file, **ours)


def _rope_theta(hf: dict, source: str) -> float:
    """transformers 5 writes rope_parameters; older files rope_theta (and rope_scaling)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling")
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "default":
            _refuse(source, "rope_scaling", scaling, "Llama", "plain rotary positions only")
    kind = params.get("rope_type", "default")
    if kind != "default":
        _refuse(source, "rope_parameters.rope_type", kind, "Llama", "plain rotary positions only")
    return float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))


def llama_config_from_hf(
    hf: dict, source: str, *, max_len: int | None = None, **ours: Any
) -> LlamaConfig:
    """LlamaConfig from a LlamaForCausalLM config.json (a dict); `ours` sets jaxtrain-only fields
    (dropout, compute_dtype, remat, attention). max_len None: max_position_embeddings."""
    if family_of_hf_config(hf, source) is not LLAMA:
        raise CheckpointError(f"{source}: not a Llama config (model_type {hf.get('model_type')!r})")
    _need(hf, source, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
          "num_attention_heads")  # fmt: skip
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if hf.get(key, want) != want:
            _refuse(source, key, hf[key], "Llama", f"{key}={want!r} only")
    if hf.get("head_dim") not in (None, d // heads):
        _refuse(source, "head_dim", hf["head_dim"], "Llama",
                f"head_dim = hidden_size / num_attention_heads = {d // heads} only")  # fmt: skip
    theta = _rope_theta(hf, source)
    pad = hf.get("pad_token_id")
    return _build(LlamaConfig, dict(
            vocab_size=hf["vocab_size"],
            max_len=_max_len(source, max_len, hf.get("max_position_embeddings", 2048),
                             "max_position_embeddings"),  # fmt: skip
            num_layers=hf["num_hidden_layers"],
            d_model=d,
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            d_ff=hf["intermediate_size"],
            rope_base=theta,
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            pad_id=pad if isinstance(pad, int) else 0,
    ), ours)  # fmt: skip


def gpt_config_from_hf(hf: dict, source: str, *, max_len: int | None = None, **ours) -> GPTConfig:
    """GPTConfig (learned positions) from a GPT2LMHeadModel config.json (a dict)."""
    if family_of_hf_config(hf, source) is not GPT2:
        raise CheckpointError(f"{source}: not a GPT-2 config (model_type {hf.get('model_type')!r})")
    _need(hf, source, "vocab_size", "n_embd", "n_layer", "n_head")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        _refuse(source, "activation_function", act, "GPT", "the tanh GELU, gelu_new, only")
    if hf.get("layer_norm_epsilon", LN_EPS) != LN_EPS:
        _refuse(source, "layer_norm_epsilon", hf["layer_norm_epsilon"], "GPT", f"{LN_EPS} only")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("add_cross_attention", False)):  # fmt: skip
        if hf.get(key, want) != want:
            _refuse(source, key, hf[key], "GPT", f"{key}={want!r} only")
    pad = hf.get("pad_token_id")
    return _build(
        GPTConfig,
        dict(
            vocab_size=hf["vocab_size"],
            max_len=_max_len(source, max_len, hf.get("n_positions", 1024), "n_positions"),
            num_layers=hf["n_layer"],
            d_model=hf["n_embd"],
            num_heads=hf["n_head"],
            d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
            positions="learned",
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            pad_id=pad if isinstance(pad, int) else 0,
        ),
        ours,
    )


def bert_config_from_hf(
    hf: dict, source: str, *, num_classes: int, pooling: str, dropout: float,
    max_len: int | None = None, compute_dtype: str = "float32",
) -> BertConfig:  # fmt: skip
    """BertConfig (encoder from the file, a new head) from a BERT config.json (a dict)."""
    _need(hf, source, "vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_size",
          "intermediate_size", "num_hidden_layers", "model_type", "hidden_act",
          "num_attention_heads", "layer_norm_eps")  # fmt: skip
    for key, want in (("model_type", "bert"), ("hidden_act", "gelu")):
        if hf.get(key) != want:
            raise CheckpointError(
                f"{source}: {key}={hf.get(key)!r}, but jaxtrain's BERT implements "
                f"{key}={want!r} only (exact-erf GELU, HF BertModel)"
            )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{source}: only absolute position embeddings supported")
    return BertConfig(
        vocab_size=hf["vocab_size"],
        max_len=_max_len(
            source, max_len, hf["max_position_embeddings"], "max_position_embeddings"
        ),  # fmt: skip
        type_vocab_size=hf["type_vocab_size"],
        num_layers=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        dropout=dropout,
        layer_norm_eps=hf["layer_norm_eps"],
        pad_id=hf.get("pad_token_id", 0),
        num_classes=num_classes,
        pooling=pooling,
        compute_dtype=compute_dtype,
    )
