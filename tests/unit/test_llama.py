"""Llama decoder: config errors, GQA attention paths and their selection, remat, bf16,
sharding metadata, and KV-cache decoding equal to full recomputation. Causality (within a
document) is checked by gradients in test_packing.py. Params come from `random_split`
(conftest): abstract init plus numpy draws, since every initializer would compile."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxtrain.config import get_config
from jaxtrain.errors import ConfigError
from jaxtrain.models import attention, model_config
from jaxtrain.models.llama import Llama, LlamaConfig, count_params
from jaxtrain.tools.sample import generate
from jaxtrain.validation import validate_config

VOCAB = 29


def _cfg(**kw) -> LlamaConfig:
    base = dict(
        vocab_size=VOCAB,
        max_len=16,
        num_layers=2,
        d_model=32,
        num_heads=4,
        num_kv_heads=2,
        d_ff=48,
        dropout=0.0,
        pad_id=0,
    )
    return LlamaConfig(**{**base, **kw})


def _abstract(cfg: LlamaConfig) -> Llama:
    return nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(params=0)))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("train",))
def _logits(graphdef, params, tokens, *, train=False, key=0):
    model = nnx.merge(graphdef, params, copy=True)
    return model(tokens, train=train, dropout_key=jax.random.key(key))


def _tokens(shape, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, VOCAB)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"num_kv_heads": 0}, "num_kv_heads"),
        ({"d_model": 30}, "num_heads"),
        ({"attention": "flash"}, "attention"),
        ({"attention": "cudnn"}, "attention"),  # needs bfloat16
        ({"rope_base": 1.0}, "rope_base"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"dropout": 1.0}, "dropout"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
        ({"pad_id": VOCAB}, "vocab_size"),
    ],
)
def test_bad_config(kw, field):
    with pytest.raises(ConfigError, match=rf"config\.model\.{field}"):
        _cfg(**kw)


def test_bad_config_through_validate_config():
    c = get_config()
    c.model = model_config("llama", num_heads=4, num_kv_heads=3)
    with pytest.raises(ConfigError, match="config.model.num_kv_heads: 3 does not divide"):
        validate_config(c, num_devices=1)
    c.model = model_config("llama", attention="xla")
    validate_config(c, num_devices=1)


def test_cudnn_off_gpu_is_refused_when_the_model_is_built():
    cfg = _cfg(attention="cudnn", compute_dtype="bfloat16")
    with pytest.raises(ConfigError, match="config.model.attention: 'cudnn' needs a GPU"):
        _abstract(cfg)


# --- attention: selection and the paths available on CPU -----------------------------------


def test_select_implementation():
    select = attention.select_implementation
    assert select("auto", backend="cpu", dtype=jnp.float32) == "blocked"
    assert select("auto", backend="cpu", dtype=jnp.bfloat16) == "blocked"
    assert select("auto", backend="gpu", dtype=jnp.bfloat16) == "cudnn"
    assert select("auto", backend="gpu", dtype=jnp.float32) == "jax"
    assert select("auto", backend="tpu", dtype=jnp.bfloat16) == "jax"
    assert select("cudnn", backend="gpu", dtype=jnp.bfloat16) == "cudnn"
    assert select("reference", backend="cpu", dtype=jnp.float32) == "where"
    assert select("xla", backend="gpu", dtype=jnp.bfloat16) == "jax"
    assert select("blocked", backend="gpu", dtype=jnp.bfloat16) == "blocked"
    with pytest.raises(ConfigError, match="'cudnn' needs a GPU"):
        select("cudnn", backend="cpu", dtype=jnp.bfloat16)
    with pytest.raises(ConfigError, match="'cudnn' needs a GPU and compute_dtype=bfloat16"):
        select("cudnn", backend="gpu", dtype=jnp.float32)
    with pytest.raises(ConfigError, match="valid: bias, blocked, where, jax, cudnn, reference"):
        select("flash", backend="cpu", dtype=jnp.float32)
    assert "cudnn" not in attention.runnable_implementations("cpu")
    assert "cudnn" in attention.runnable_implementations("gpu")
    # The model resolves "auto" for the backend it is built on.
    assert _abstract(_cfg()).blocks[0].attention_impl == "blocked"


def _grouped_reference(q, k, v, mask):
    """numpy float64: query head h reads key/value head h // (H / G); causal plus `mask`."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, length, heads, dim = q.shape
    group = heads // k.shape[2]
    out = np.zeros_like(q)
    causal = np.tril(np.ones((length, length), bool))
    for h in range(heads):
        s = np.einsum("bld,bsd->bls", q[:, :, h], k[:, :, h // group]) / np.sqrt(dim)
        s = np.where(causal & mask[:, 0], s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, :, h] = np.einsum("bls,bsd->bld", p / p.sum(-1, keepdims=True), v[:, :, h // group])
    return out


def _inputs(length: int):
    """q [2, L, 4, 8] over k, v [2, L, 2, 8] (GQA), and a packed-segment mask: row 0 holds two
    documents, row 1 one document and 3 positions of padding (segment 0)."""
    kq, kk, kv = jax.random.split(jax.random.key(length), 3)
    q = jax.random.normal(kq, (2, length, 4, 8))
    k, v = jax.random.normal(kk, (2, length, 2, 8)), jax.random.normal(kv, (2, length, 2, 8))
    segments = np.zeros((2, length), np.int32)
    segments[0, : length // 3], segments[0, length // 3 :] = 1, 2
    segments[1, : length - 3] = 1
    return q, k, v, attention.segment_mask(jnp.asarray(segments))


def test_every_cpu_path_matches_the_reference_with_gqa_and_segments():
    """The kernels that auto and the aliases pick on CPU (test_select_implementation) give the
    reference's output and q/k/v gradients, and the reference matches numpy. ("bias" shares the
    reference's GQA path: the kv heads are repeated before any kernel but jax/cudnn runs.)"""
    q, k, v, mask = _inputs(16)
    cot = jax.random.normal(jax.random.key(5), q.shape)
    select = functools.partial(attention.select_implementation, backend="cpu", dtype=q.dtype)
    kernels = {select(n) for n in attention.NAMES if n != "cudnn"}
    assert kernels == {"bias", "blocked", "where", "jax"}  # "where" is "reference"
    names = ["reference", "blocked", "jax"]

    def run(name):
        def f(q, k, v):
            out = attention.dot_product_attention(q, k, v, mask, causal=True, impl=name)
            return jnp.sum(out * cot), out

        (_, out), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, grads

    results = jax.jit(lambda: {name: run(name) for name in names})()
    np.testing.assert_allclose(
        results["reference"][0], _grouped_reference(q, k, v, np.asarray(mask)), atol=1e-5
    )
    for name in names:
        chex.assert_trees_all_close(results[name], results["reference"], atol=2e-5, rtol=2e-5)


@pytest.mark.slow  # only packed rows longer than BLOCK_Q = 128 reach this path
def test_blocked_kernel_past_one_query_block_with_segments():
    """130 queries: the blocked kernel's ragged second block slices the per-query mask."""
    q, k, v, mask = _inputs(attention.BLOCK_Q + 2)
    out = jax.jit(
        lambda q, k, v: attention.dot_product_attention(q, k, v, mask, causal=True, impl="blocked")
    )(q, k, v)
    np.testing.assert_allclose(out, _grouped_reference(q, k, v, np.asarray(mask)), atol=1e-5)


# --- the model ------------------------------------------------------------------------------


def test_forward_shapes_train_and_eval(random_split):
    graphdef, params = random_split(Llama, _cfg(dropout=0.1))
    tokens = _tokens((3, 16))
    logits = _logits(graphdef, params, tokens)
    chex.assert_shape(logits, (3, 16, VOCAB))
    chex.assert_type(logits, jnp.float32)
    trained = _logits(graphdef, params, tokens, train=True)
    chex.assert_shape(trained, (3, 16, VOCAB))
    assert bool(jnp.all(jnp.isfinite(trained))) and not np.allclose(trained, logits)


@pytest.mark.slow  # two gradient compiles; gpt's fast remat test covers the shared wrapper
def test_remat_same_logits_and_grads(random_split):
    tokens = _tokens((2, 16))
    results = []
    for remat in ("none", "full"):
        graphdef, params = random_split(Llama, _cfg(remat=remat, dropout=0.1, num_layers=1))

        def loss(p, graphdef=graphdef):
            logits = _logits(graphdef, p, tokens, train=True, key=7)
            return jnp.mean(logits**2), logits

        results.append(jax.jit(jax.value_and_grad(loss, has_aux=True))(params))
    chex.assert_trees_all_close(results[0], results[1], atol=1e-6, rtol=1e-5)


def _dot_operand_dtypes(fn, *args) -> set[str]:
    text = jax.jit(fn).lower(*args).as_text()
    operand = r"tensor<[^>]*x(\w+)>"
    pairs = re.findall(rf"stablehlo\.dot_general[^\n]*: \({operand}, {operand}\)", text)
    assert pairs, "no dot_general found"
    return {t for pair in pairs for t in pair}


def test_bfloat16_compute_with_float32_params(random_split):
    tokens = _tokens((3, 16))
    abstract16 = nnx.state(_abstract(_cfg(compute_dtype="bfloat16")), nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(abstract16)} == {jnp.dtype(jnp.float32)}
    graphdef32, params32 = random_split(Llama, _cfg(dropout=0.1))
    graphdef16, params16 = random_split(Llama, _cfg(dropout=0.1, compute_dtype="bfloat16"))
    logits16 = _logits(graphdef16, params16, tokens)
    assert logits16.dtype == jnp.float32
    logits32 = _logits(graphdef32, params32, tokens)
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 0.05 * float(jnp.std(logits32))
    assert _dot_operand_dtypes(lambda p: _logits(graphdef16, p, tokens), params16) == {"bf16"}


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": True}, {"num_kv_heads": 4}])
def test_count_params_and_tied_embeddings(kw):
    cfg = _cfg(**kw)
    params = nnx.state(_abstract(cfg), nnx.Param)
    assert count_params(cfg) == sum(x.size for x in jax.tree.leaves(params))
    assert ("head" in params) == (not cfg.tie_embeddings)
    assert params["blocks"][0]["wk"].get_value().shape == (32, cfg.num_kv_heads, 8)


def test_logical_axis_metadata():
    params = nnx.state(_abstract(_cfg()), nnx.Param)
    specs = nnx.get_partition_spec(params)
    flat = {"/".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(specs)}
    want = {
        "embed": P("vocab", "embed"),
        "head": P("embed", "vocab"),
        "blocks/0/wq": P("embed", "heads", "kv"),
        "blocks/0/wk": P("embed", "kv_heads", "kv"),
        "blocks/1/wv": P("embed", "kv_heads", "kv"),
        "blocks/0/wo": P("heads", "kv", "embed"),
        "blocks/0/gate": P("embed", "mlp"),
        "blocks/1/down": P("mlp", "embed"),
        "blocks/0/attn_norm/scale": P("norm"),
        "norm/scale": P("norm"),
    }
    for name, spec in want.items():
        assert flat[name] == spec, name
    rules = {logical for logical, _ in get_config().mesh.rules}
    for name, spec in flat.items():
        assert set(spec) - {None} <= rules, (name, spec)


def test_sequence_longer_than_max_len(random_split):
    graphdef, params = random_split(Llama, _cfg(dropout=0.1))
    with pytest.raises(ValueError, match="exceeds llama.max_len 16"):
        _logits(graphdef, params, _tokens((1, 17)))


# --- decoding with the KV cache (grouped heads: the cache holds 2 of the 4 heads) -----------


def test_greedy_with_cache_equals_full_recompute(random_split):
    # N(0, 1) weights: logits far from uniform, so greedy decoding visits many tokens and a
    # wrong position or cache entry shows up in the argmax. Dropout on: must be off here.
    graphdef, params = random_split(Llama, _cfg(dropout=0.1), scale=1.0)
    prompt = [3, 1, 4, 1, 5]
    cached = generate(graphdef, params, prompt, max_new_tokens=11, temperature=0.0, top_k=0, seed=0)
    # Reference: argmax of the plain forward over the whole sequence, one token at a time.
    seq = np.zeros((1, 16), np.int32)
    seq[0, :5] = prompt
    for i in range(5, 16):
        seq[0, i] = int(jnp.argmax(_logits(graphdef, params, jnp.asarray(seq))[0, i - 1]))
    assert cached == seq[0, 5:].tolist()
    assert len(set(cached)) >= 3, cached
    model = nnx.merge(graphdef, params)
    assert model.init_cache(1, 16).k.shape == (2, 1, 16, 2, 8)  # [N, B, S, G, K]
