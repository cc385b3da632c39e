"""HF weights both ways against real `transformers` models (the test extra installs torch and
transformers): a random LlamaForCausalLM imported into jaxtrain gives HF's logits; random
jaxtrain gpt, llama and bert params exported load in transformers and give jaxtrain's logits /
hidden states; round trips are exact; bad inputs name the architecture, tensor or field."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import hf_configs, hf_families, hf_import, hf_weights
from jaxtrain.models.bert import BertClassifier, BertConfig, mean_pool
from jaxtrain.models.gpt import GPT, GPTConfig
from jaxtrain.models.llama import Llama, LlamaConfig
from jaxtrain.models.mlp import MLPSettings
from jaxtrain.tools.export import check_format

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 on both sides
VOCAB, LENGTH = 61, 12
TOKENS = np.random.default_rng(0).integers(1, VOCAB, (2, LENGTH)).astype(np.int32)


def _hf_llama_config(**kw) -> transformers.LlamaConfig:
    fields = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                  rms_norm_eps=1e-5, rope_theta=500_000.0, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0)  # fmt: skip
    return transformers.LlamaConfig(**{**fields, **kw})


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every matrix ~ N(0, 0.3), norm scales ~ 1 + N(0, 0.3): HF's 0.02 init gives near-uniform
    logits that hide mistakes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (p.ndim == 1))
    return model.eval()


def _saved_hf_llama(folder, tied: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = _randomize(transformers.LlamaForCausalLM(_hf_llama_config(tie_word_embeddings=tied)),
                       seed)  # fmt: skip
    model.save_pretrained(str(folder), safe_serialization=True)
    return model


def _torch_logits(model, tokens, **kw) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long), **kw).logits.numpy()


def _jax_forward(graphdef, params, tokens) -> np.ndarray:
    model = nnx.merge(graphdef, params)
    return np.asarray(model(tokens, train=False, dropout_key=jax.random.key(0)))


def _import_llama(folder):
    cfg = hf_import.llama_config_from_hf(str(folder / "config.json"))
    hf = hf_import.load_hf_params(str(folder / "model.safetensors"), cfg)
    abstract = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(params=0)))
    graphdef, params = nnx.split(abstract, nnx.Param)
    return cfg, graphdef, hf_import.import_into(params, hf, prefix=())


# --- HF -> jaxtrain ----------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_imported_llama_gives_hf_logits(tmp_path, tied):
    hf_model = _saved_hf_llama(tmp_path, tied)
    cfg, graphdef, params = _import_llama(tmp_path)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.d_ff, cfg.tie_embeddings) == (4, 2, 40, tied)
    assert (cfg.rope_base, cfg.norm_eps, cfg.max_len) == (500_000.0, 1e-5, 16)
    ours = _jax_forward(graphdef, params, TOKENS)
    theirs = _torch_logits(hf_model, TOKENS)
    assert np.std(theirs) > 1.0  # far from uniform: a wrong weight would show
    np.testing.assert_allclose(ours, theirs, **TOL)


@pytest.mark.parametrize("tied", [True, False])
def test_imported_gpt2_gives_hf_logits(tmp_path, tied):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                     n_positions=20, n_inner=48, tie_word_embeddings=tied,
                                     bos_token_id=None, eos_token_id=None)  # fmt: skip
    torch.manual_seed(3)
    hf_model = _randomize(transformers.GPT2LMHeadModel(config), 3)
    hf_model.save_pretrained(str(tmp_path), safe_serialization=True)
    name, cfg = hf_import.config_from_hf(str(tmp_path / "config.json"), max_len=16, dropout=0.0)
    assert (name, cfg.max_len, cfg.d_ff, cfg.tie_embeddings) == ("gpt", 16, 48, tied)
    hf = hf_import.load_hf_params(str(tmp_path / "model.safetensors"), cfg)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    params = hf_import.import_into(params, hf, prefix=())
    theirs = _torch_logits(hf_model, TOKENS)
    assert np.std(theirs) > 1.0
    np.testing.assert_allclose(_jax_forward(graphdef, params, TOKENS), theirs, **TOL)


# --- jaxtrain -> HF ----------------------------------------------------------------------------

GPT_CFG = GPTConfig(vocab_size=VOCAB, max_len=16, num_layers=2, d_model=32, num_heads=4, d_ff=48,
                    dropout=0.0, pad_id=0)  # fmt: skip
LLAMA_CFG = LlamaConfig(vocab_size=VOCAB, max_len=16, num_layers=2, d_model=32, num_heads=4,
                        num_kv_heads=2, d_ff=40, rope_base=10_000.0, pad_id=0)  # fmt: skip
BERT_CFG = BertConfig(vocab_size=VOCAB, max_len=16, num_layers=2, d_model=32, num_heads=4, d_ff=48,
                      dropout=0.0, num_classes=3, pooling="mean", pad_id=0)  # fmt: skip


def _export(folder, cfg, params, extra=None):
    config = hf_configs.hf_config(cfg)
    hf_weights.write_hf_folder(str(folder), config, hf_families.to_hf(params, cfg), extra)
    return config


@pytest.mark.parametrize("cls,cfg", [(GPT, GPT_CFG), (Llama, LLAMA_CFG)])
@pytest.mark.parametrize("tied", [True, False])
def test_exported_decoder_gives_jaxtrain_logits_in_transformers(
    tmp_path, random_split, cls, cfg, tied
):
    cfg = type(cfg)(**{**cfg.__dict__, "tie_embeddings": tied})
    graphdef, params = random_split(cls, cfg)
    config = _export(tmp_path, cfg, params)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert type(hf_model).__name__ == config["architectures"][0]
    assert not hf_model.training
    ours = _jax_forward(graphdef, params, TOKENS)
    theirs = _torch_logits(hf_model, TOKENS)
    assert np.std(theirs) > 0.3  # far from uniform
    np.testing.assert_allclose(theirs, ours, **TOL)


def test_exported_bert_encoder_gives_jaxtrain_hidden_states_and_logits(tmp_path, random_split):
    graphdef, params = random_split(BertClassifier, BERT_CFG)
    _export(tmp_path, BERT_CFG, params, {"classifier_head.safetensors":
                                         hf_families.bert_head_to_hf(params)})  # fmt: skip
    tokens = TOKENS.copy()
    tokens[1, 8:] = BERT_CFG.pad_id  # right padding: masked keys on both sides
    model = nnx.merge(graphdef, params)
    hidden, mask = model.encoder.encode(tokens)
    hf_model = transformers.AutoModel.from_pretrained(str(tmp_path), add_pooling_layer=False)
    assert type(hf_model).__name__ == "BertModel"
    with torch.no_grad():
        out = hf_model(
            torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(tokens != BERT_CFG.pad_id, dtype=torch.long),
            output_hidden_states=True,
        )
    assert len(out.hidden_states) == len(hidden) == BERT_CFG.num_layers + 1
    for i, (theirs, ours) in enumerate(zip(out.hidden_states, hidden, strict=True)):
        np.testing.assert_allclose(theirs.numpy(), np.asarray(ours), **TOL, err_msg=f"layer {i}")
    # The head file rebuilds the classifier's logits from HF's last hidden state.
    head = hf_weights.read_safetensors(str(tmp_path / "classifier_head.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["jaxtrain_pooling"] == "mean"
    pooled = mean_pool(out.last_hidden_state.numpy(), mask)
    logits = np.asarray(pooled) @ head["classifier.weight"].T + head["classifier.bias"]
    ours = model(tokens, train=False)
    np.testing.assert_allclose(logits, np.asarray(ours), **TOL)


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_hf_llama_round_trip_is_exact(tmp_path, tied):
    _saved_hf_llama(tmp_path, tied, seed=1)
    tensors = hf_weights.read_safetensors(str(tmp_path / "model.safetensors"))
    cfg, _, params = _import_llama(tmp_path)
    back = hf_families.to_hf(params, cfg)
    assert sorted(back) == sorted(tensors)
    for name, w in tensors.items():
        np.testing.assert_array_equal(back[name], w, err_msg=name)
    saved, ours = json.loads((tmp_path / "config.json").read_text()), hf_configs.hf_config(cfg)
    assert hf_configs.llama_config_from_hf(ours, "x") == cfg
    shared = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_parameters",
        "tie_word_embeddings",
        "attention_bias",
        "mlp_bias",
        "model_type",
        "architectures",
    )
    assert {k: ours[k] for k in shared} == {k: saved[k] for k in shared}  # fmt: skip


@pytest.mark.parametrize(
    "cls,cfg,prefix",
    [(GPT, GPT_CFG, ""), (Llama, LLAMA_CFG, ""), (BertClassifier, BERT_CFG, "encoder.")],
)
def test_jaxtrain_round_trip_is_exact(random_split, cls, cfg, prefix):
    _, params = random_split(cls, cfg)
    flat = hf_weights.flat_params(params)
    back = hf_families.from_hf(hf_families.to_hf(params, cfg), cfg, "exported")
    assert sorted(prefix + k for k in back) == sorted(
        k for k in flat if k not in hf_families.family_of(cfg).extra_params
    )
    for name, w in back.items():
        np.testing.assert_array_equal(w, flat[prefix + name], err_msg=name)
    config = hf_configs.hf_config(cfg)
    if cls is Llama:
        assert hf_configs.llama_config_from_hf(config, "x") == cfg
    elif cls is GPT:
        assert hf_configs.gpt_config_from_hf(config, "x", dropout=0.0) == cfg
    else:
        head = {k: getattr(cfg, k) for k in ("num_classes", "pooling", "dropout")}
        assert hf_configs.bert_config_from_hf(config, "x", **head) == cfg


# --- bad input ---------------------------------------------------------------------------------


def _config_file(tmp_path, hf: dict) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(hf))
    return str(path)


@pytest.fixture(scope="module")
def llama_json() -> dict:
    return _hf_llama_config().to_dict()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
          "sliding_window": 4096},
         r"architecture MistralForCausalLM \(model_type 'mistral'\) is not supported; "
         r"supported: LlamaForCausalLM \(llama\), GPT2LMHeadModel"),
        ({"architectures": [], "model_type": "falcon"}, r"\(none\) \(model_type 'falcon'\)"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling=.*llama3"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}},
         "rope_parameters.rope_type='yarn'"),
        ({"attention_bias": True}, "attention_bias=True is not supported"),
        ({"mlp_bias": True}, "mlp_bias=True is not supported"),
        ({"head_dim": 16}, r"head_dim=16 is not supported .*= 8 only"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"num_attention_heads": None}, "missing num_attention_heads"),
    ],
)  # fmt: skip
def test_unsupported_llama_configs_are_named(tmp_path, llama_json, change, match):
    hf = {**llama_json, **change}
    hf = {k: v for k, v in hf.items() if v is not None}
    with pytest.raises(CheckpointError, match=match):
        hf_import.llama_config_from_hf(_config_file(tmp_path, hf))


def test_config_dispatch_and_bad_files(tmp_path, llama_json):
    name, cfg = hf_import.config_from_hf(_config_file(tmp_path, llama_json), max_len=8)
    assert name == "llama" and cfg.max_len == 8 and cfg.num_kv_heads == 2
    with pytest.raises(CheckpointError, match=r"max_len=17: must be in \[1, 16\]"):
        hf_import.config_from_hf(_config_file(tmp_path, llama_json), max_len=17)
    with pytest.raises(CheckpointError, match="vocab_size cannot be set here"):
        hf_import.llama_config_from_hf(_config_file(tmp_path, llama_json), vocab_size=3)
    with pytest.raises(CheckpointError, match="no_such cannot be set here .*no such field"):
        hf_import.llama_config_from_hf(_config_file(tmp_path, llama_json), no_such=3)
    gpt2 = hf_configs.hf_config(GPT_CFG)
    for key, value in (("activation_function", "relu"), ("layer_norm_epsilon", 1e-6)):
        with pytest.raises(CheckpointError, match=f"{key}={value!r} is not supported"):
            hf_import.gpt_config_from_hf(_config_file(tmp_path, {**gpt2, key: value}))
    with pytest.raises(CheckpointError, match="config.json: no such file"):
        hf_import.config_from_hf(str(tmp_path / "nothing" / "config.json"))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not an HF config"):
        hf_import.config_from_hf(str(tmp_path / "config.json"))


def test_bad_llama_weights_name_tensor_and_field(tmp_path):
    _saved_hf_llama(tmp_path, tied=False, seed=2)
    path = str(tmp_path / "model.safetensors")
    tensors = hf_weights.read_safetensors(path)
    cfg = hf_import.llama_config_from_hf(str(tmp_path / "config.json"))

    def load(cfg, drop=(), **replace):
        kept = {k: v for k, v in tensors.items() if k not in drop}
        return hf_families.from_hf({**kept, **replace}, cfg, path)

    with pytest.raises(CheckpointError, match=r"tensor model.layers.1.mlp.up_proj.weight is "
                       r"missing \(needed for blocks.1.up\); is this a Llama"):  # fmt: skip
        load(cfg, drop=["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(CheckpointError, match="tensor lm_head.weight is missing"):
        load(cfg, drop=["lm_head.weight"])
    wide = LlamaConfig(**{**cfg.__dict__, "d_ff": 48})
    with pytest.raises(
        CheckpointError,
        match=r"model.layers.0.self_attn.q_proj.weight|model.layers.0.mlp.gate_proj.weight has "
        r"shape \(40, 32\) but the config expects \(48, 32\).*LlamaConfig.d_ff \(config.json "
        r"intermediate_size\)",
    ):
        load(wide)
    mha = LlamaConfig(**{**cfg.__dict__, "num_kv_heads": 4})
    kv_field = r"LlamaConfig.num_kv_heads \(config.json num_key_value_heads\)"
    with pytest.raises(CheckpointError, match=r"k_proj.weight has shape \(16, 32\) .*\(32, 32\).*"
                       + kv_field):  # fmt: skip
        load(mha)
    deeper = LlamaConfig(**{**cfg.__dict__, "num_layers": 3})
    with pytest.raises(CheckpointError, match="holds 2 layers but LlamaConfig.num_layers=3"):
        load(deeper)
    with pytest.warns(UserWarning, match=r"1 tensors not imported: model.layers.0.extra$"):
        load(cfg, **{"model.layers.0.extra": np.zeros(3, np.float32)})
    # A model built from another config than the weights were checked against.
    abstract = nnx.eval_shape(lambda: Llama(wide, rngs=nnx.Rngs(params=0)))
    _, other = nnx.split(abstract, nnx.Param)
    with pytest.raises(CheckpointError, match=r"imported blocks.0.down has shape \(40, 32\) but "
                       r"the model's blocks.0.down is \(48, 32\)"):  # fmt: skip
        hf_import.import_into(other, load(cfg), prefix=())


def test_bad_exports_are_refused(tmp_path, random_split):
    rope = GPTConfig(**{**GPT_CFG.__dict__, "positions": "rope"})
    _, params = random_split(GPT, rope)
    with pytest.raises(CheckpointError, match="positions='rope': GPT-2 .*learned positions only"):
        hf_families.to_hf(params, rope)
    with pytest.raises(CheckpointError, match="positions='rope'"):
        hf_configs.hf_config(rope)
    _, params = random_split(Llama, LLAMA_CFG)
    flat = hf_weights.flat_params(params)
    adapted = {**flat, "blocks.0.wq_lora_a": np.zeros((32, 2), np.float32)}
    with pytest.raises(CheckpointError, match="blocks.0.wq_lora_a have no Llama .*merge adapters"):
        hf_families.to_hf(adapted, LLAMA_CFG)
    wrong = {**flat, "blocks.1.down": np.zeros((3, 32), np.float32)}
    with pytest.raises(CheckpointError, match=r"param blocks.1.down has shape \(3, 32\) but "
                       r"LlamaConfig expects \(40, 32\)"):  # fmt: skip
        hf_families.to_hf(wrong, LLAMA_CFG)
    with pytest.raises(CheckpointError, match="the params have no norm.scale"):
        hf_families.to_hf({k: v for k, v in flat.items() if k != "norm.scale"}, LLAMA_CFG)
    image = MLPSettings(num_classes=10)
    with pytest.raises(
        CheckpointError,
        match="MLPSettings: no HF mapping; HF weights exist for model.name gpt, llama, bert",
    ):
        hf_configs.hf_config(image)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(CheckpointError, match="a_file/hf: cannot write the HF model"):
        hf_weights.write_hf_folder(str(tmp_path / "a_file" / "hf"), {}, {})
    with pytest.raises(ConfigError, match="--format='onnx': use one of jax_export, hf"):
        check_format("onnx", int8=False)
    with pytest.raises(ConfigError, match="--int8 is for --format jax_export"):
        check_format("hf", int8=True)
