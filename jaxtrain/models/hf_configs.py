"""HF config.json <-> jaxtrain settings for the families of hf_families.py, both ways.

Export: `hf_config(cfg)` (a dict for config.json). Import: `family_of_hf_config(hf)` picks the
family from `architectures` / `model_type` (an unsupported one is named, with the supported
list), and `*_config_from_hf(hf, source, ...)` builds the settings, naming every feature of the
file that jaxtrain's model lacks (rope scaling, biases, another activation or head_dim).
"""

import dataclasses
from typing import Any

from jaxtrain.errors import CheckpointError
from jaxtrain.models import hf_families as F
from jaxtrain.models import hf_weights as W
from jaxtrain.models.bert import BertConfig
from jaxtrain.models.gpt import LN_EPS, GPTConfig
from jaxtrain.models.llama import LlamaConfig

# HF config.json `architectures` / `model_type` -> our family. BertFor* files import their
# encoder (a warning lists the head's tensors left out).
_ARCHITECTURES = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt", "GPT2Model": "gpt",
                  "BertModel": "bert"}  # fmt: skip
_MODEL_TYPES = {"llama": "llama", "gpt2": "gpt", "bert": "bert"}
SUPPORTED = "LlamaForCausalLM (llama), GPT2LMHeadModel (gpt2), BertModel / BertFor* (bert)"


def family_of_hf_config(hf: dict, source: str) -> W.Family:
    """The family an HF config.json describes; unknown architectures are named."""
    archs = hf.get("architectures") or []
    model_type = hf.get("model_type")
    for arch in archs:
        if arch in _ARCHITECTURES or (arch.startswith("BertFor") and model_type == "bert"):
            name = _ARCHITECTURES.get(arch, "bert")
            if _MODEL_TYPES.get(model_type) == name:
                return F.FAMILIES[name]
    if not archs and model_type in _MODEL_TYPES:
        return F.FAMILIES[_MODEL_TYPES[model_type]]
    raise CheckpointError(
        f"{source}: architecture {', '.join(map(str, archs)) or '(none)'} (model_type "
        f"{model_type!r}) is not supported; supported: {SUPPORTED}"
    )


def hf_config(cfg: Any) -> dict:
    """The HF config.json (a dict) of our settings."""
    family = F.family_of(cfg)
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


def _gpt_to_hf(c: GPTConfig) -> dict:
    F.check_gpt2_compatible(c)
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
    if family_of_hf_config(hf, source) is not F.LLAMA:
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
    if family_of_hf_config(hf, source) is not F.GPT2:
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
