"""GPT decoder and attention kernels: causality, remat, mixed precision, sharding metadata."""

import dataclasses
import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.errors import ConfigError
from jaxtrain.models import attention
from jaxtrain.models.gpt import GPT, GPTConfig, count_params, flops_per_token, matmul_params
from jaxtrain.models.layers import REMAT_NAMES, REMAT_POLICIES, remat
from jaxtrain.models.registry import family_config_of

LOGICAL_AXES = {"vocab", "embed", "mlp", "heads", "kv", "norm", None}


def _cfg(**kw) -> GPTConfig:
    base = dict(
        vocab_size=37,
        max_len=24,
        num_layers=2,
        d_model=16,
        num_heads=2,
        d_ff=32,
        dropout=0.0,
        positions="learned",
        tie_embeddings=True,
        compute_dtype="float32",
        remat="none",
        pad_id=0,
    )
    return GPTConfig(**{**base, **kw})


@functools.lru_cache
def _split(cfg: GPTConfig, seed: int = 0):
    """(graphdef, params), cached: the arrays are immutable, so tests can share them."""
    return nnx.split(GPT(cfg, rngs=nnx.Rngs(params=seed)), nnx.Param)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("train",))
def _logits(graphdef, params, tokens, *, train=False, key=0):
    model = nnx.merge(graphdef, params, copy=True)
    return model(tokens, train=train, dropout_key=jax.random.key(key))


def _tokens(shape, vocab=37, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


# --- attention kernels ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "length,keys,causal,mask_shape",
    [
        (200, 200, True, None),  # two query blocks, the second ragged
        (150, 190, True, (2, 1, 1, 190)),  # bottom-right causal + key padding mask
        (6, 9, False, (2, 1, 6, 9)),  # per-query mask, no causality
        (1, 9, False, (9,)),  # a decode step: one query against a cache
    ],
)
def test_attention_matches_reference(length, keys, causal, mask_shape):
    """Every implementation: outputs and q/k/v gradients equal the textbook "where" form."""
    kq, kk, kv, kc, km = jax.random.split(jax.random.key(length + keys), 5)
    q = jax.random.normal(kq, (2, length, 2, 8))
    k, v = jax.random.normal(kk, (2, keys, 2, 8)), jax.random.normal(kv, (2, keys, 2, 8))
    cot = jax.random.normal(kc, q.shape)
    mask = None
    if mask_shape is not None:
        mask = jax.random.bernoulli(km, 0.7, mask_shape).at[..., 0].set(True)

    def run(name):
        def f(q, k, v):
            out = attention.dot_product_attention(q, k, v, mask, causal=causal, impl=name)
            return jnp.sum(out * cot), out

        (_, out), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, grads

    names = attention.runnable_implementations("cpu")
    results = jax.jit(lambda: {name: run(name) for name in names})()
    for name in ("bias", "blocked", "jax"):
        chex.assert_trees_all_close(results[name], results["where"], atol=2e-5, rtol=2e-5)


def test_attention_bf16_and_fully_masked_rows():
    q = jnp.ones((1, 3, 1, 4), jnp.bfloat16)
    mask = jnp.array([[True, False], [False, False], [True, True]])
    for impl in attention.runnable_implementations("cpu"):
        out = attention.dot_product_attention(q, q[:, :2], q[:, :2], mask, impl=impl)
        assert out.dtype == jnp.bfloat16
        assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32)))), impl


def test_attention_unknown_impl():
    x = jnp.zeros((1, 2, 1, 4))
    with pytest.raises(ValueError, match="valid: bias, blocked"):
        attention.dot_product_attention(x, x, x, impl="flash")


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_causality_by_gradients(positions):
    """d logits[:, t] / d (input embedding rows of later tokens) is exactly zero, nonzero
    for earlier ones. Untied, so the table is only used at the input; distinct tokens, so each
    row belongs to one position."""
    cfg = _cfg(positions=positions, tie_embeddings=False, max_len=12, vocab_size=12)
    graphdef, params = _split(cfg)
    tokens = jax.random.permutation(jax.random.key(3), 12)[None, :]
    t = 5

    def logit_sum(p):
        return jnp.sum(_logits(graphdef, p, tokens)[:, t])

    grads = jax.jit(jax.grad(logit_sum))(params)
    row_norm = np.asarray(jnp.abs(grads["embed"][...][tokens[0]]).sum(-1))  # by position
    assert np.all(row_norm[t + 1 :] == 0.0), row_norm
    assert np.all(row_norm[: t + 1] > 0.0), row_norm
    if positions == "learned":
        pos_norm = np.asarray(jnp.abs(grads["pos_embed"][...]).sum(-1))
        assert np.all(pos_norm[t + 1 :] == 0.0) and np.all(pos_norm[: t + 1] > 0.0)


def test_right_padding_does_not_change_real_positions():
    cfg = _cfg()
    graphdef, params = _split(cfg)
    real = _tokens((2, 7))
    padded = jnp.concatenate([real, jnp.full((2, 5), cfg.pad_id)], axis=1)
    chex.assert_trees_all_close(
        _logits(graphdef, params, padded)[:, :7], _logits(graphdef, params, real), atol=1e-6
    )


def _remat_loss(policy: str):
    cfg = _cfg(remat=policy, positions="rope", tie_embeddings=False, dropout=0.1)
    graphdef, params = _split(cfg)
    tokens = _tokens((2, 24))

    def loss(p):
        model = nnx.merge(graphdef, p, copy=True)
        logits = model(tokens, train=True, dropout_key=jax.random.key(7))
        return jnp.mean(logits**2), logits

    return jax.value_and_grad(loss, has_aux=True), params


@functools.lru_cache
def _remat_result(policy: str):
    fn, params = _remat_loss(policy)
    (_, logits), grads = jax.jit(fn)(params)
    return logits, grads


# Each policy is one more compile (~10-30 s on 2 shared cores): the dots policies run in
# `make test-slow`; that every policy reaches the program is checked below without compiling.
@pytest.mark.parametrize(
    "policy", ["full", *(pytest.param(n, marks=pytest.mark.slow) for n in REMAT_NAMES[2:])]
)
def test_remat_policies_give_the_same_logits_and_grads(policy):
    chex.assert_trees_all_close(_remat_result(policy), _remat_result("none"), atol=1e-6, rtol=1e-5)


def test_remat_policy_reaches_the_program():
    """One rematerialised call per block, carrying the named policy (the primitive is remat2
    or checkpoint, depending on the jax version); none for "none"."""
    for policy in REMAT_NAMES:
        fn, params = _remat_loss(policy)
        eqns = jax.make_jaxpr(fn)(params).jaxpr.eqns
        policies = [e.params["policy"] for e in eqns if "prevent_cse" in e.params]
        want = [] if policy == "none" else [REMAT_POLICIES[policy]] * 2
        assert policies == want, policy


def test_unknown_remat_policy_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"config.model.remat: 'dots' is not one of none, full,"):
        _cfg(remat="dots")
    with pytest.raises(ConfigError, match="config.model.remat: True is not one of"):
        _cfg(remat=True)  # the old boolean field
    with pytest.raises(ValueError, match="valid: none, full, dots_saveable"):
        remat(lambda x: x, "everything")


def test_saved_boolean_remat_reads_as_a_policy():
    """Runs saved when remat was a boolean still resume, evaluate and export."""
    saved = {"name": "gpt", **dataclasses.asdict(_cfg()), "remat": True}
    assert family_config_of(saved)["remat"] == "full"
    assert family_config_of({**saved, "remat": False})["remat"] == "none"


def test_dropout_uses_the_explicit_key():
    graphdef, params = _split(_cfg(dropout=0.3))
    tokens = _tokens((2, 10))
    a, b = (_logits(graphdef, params, tokens, train=True, key=k) for k in (1, 1))
    c = _logits(graphdef, params, tokens, train=True, key=2)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a, c)
    chex.assert_trees_all_equal(
        _logits(graphdef, params, tokens, key=1), _logits(graphdef, params, tokens, key=2)
    )


def _dot_operand_dtypes(fn, *args) -> set[str]:
    """MLIR element types (bf16, f32) of every dot_general operand in the lowered program."""
    text = jax.jit(fn).lower(*args).as_text()
    operand = r"tensor<[^>]*x(\w+)>"
    pairs = re.findall(rf"stablehlo\.dot_general[^\n]*: \({operand}, {operand}\)", text)
    assert pairs, "no dot_general found"
    return {t for pair in pairs for t in pair}


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_bfloat16_compute(positions):
    tokens = _tokens((2, 24))
    graphdef32, params32 = _split(_cfg(positions=positions))
    graphdef16, params16 = _split(_cfg(positions=positions, compute_dtype="bfloat16"))
    chex.assert_trees_all_equal(params16, params32)  # same init, stored float32
    assert {x.dtype for x in jax.tree.leaves(params16)} == {jnp.dtype(jnp.float32)}
    logits32 = _logits(graphdef32, params32, tokens)
    logits16 = _logits(graphdef16, params16, tokens)
    assert logits16.dtype == jnp.float32
    scale = float(jnp.std(logits32))
    assert float(jnp.max(jnp.abs(logits16 - logits32))) < 0.05 * scale
    # Every matmul reads bfloat16 operands in the bf16 model, none in the float32 one.
    assert _dot_operand_dtypes(lambda p: _logits(graphdef16, p, tokens), params16) == {"bf16"}
    assert _dot_operand_dtypes(lambda p: _logits(graphdef32, p, tokens), params32) == {"f32"}


def test_tied_embeddings_have_no_output_kernel():
    _, tied = _split(_cfg(tie_embeddings=True))
    _, untied = _split(_cfg(tie_embeddings=False))
    assert "head" not in tied and untied["head"][...].shape == (16, 37)


@pytest.mark.parametrize(
    "kw", [{}, {"tie_embeddings": False}, {"positions": "rope"}, {"num_layers": 3, "d_ff": 40}]
)
def test_count_params_matches_the_model(kw):
    cfg = _cfg(**kw)
    _, params = _split(cfg)
    assert count_params(cfg) == sum(x.size for x in jax.tree.leaves(params))


def test_flops_per_token_formula():
    # GPT-2 small shapes, by hand: N = 12 (4 d^2 + 2 d f) + d V; 6 N + 12 n_layer d T.
    cfg = _cfg(vocab_size=50257, max_len=1024, num_layers=12, d_model=768, num_heads=12, d_ff=3072)
    n = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 50257
    assert matmul_params(cfg) == n == 123_532_032
    assert flops_per_token(cfg, 1024) == 6 * n + 12 * 12 * 768 * 1024
    assert flops_per_token(dataclasses.replace(cfg, tie_embeddings=False), 1024) == 6 * n + (
        12 * 12 * 768 * 1024
    )


def test_logical_axis_metadata():
    _, params = _split(_cfg(tie_embeddings=False))
    specs = nnx.get_partition_spec(params)
    flat = {"/".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(specs)}
    want = {
        "embed": P("vocab", "embed"),
        "pos_embed": P(None, "embed"),
        "head": P("embed", "vocab"),
        "blocks/0/qkv": P("embed", None, "heads", "kv"),
        "blocks/0/out": P("heads", "kv", "embed"),
        "blocks/0/up": P("embed", "mlp"),
        "blocks/1/down": P("mlp", "embed"),
        "blocks/1/up_bias": P("mlp"),
        "ln_f/scale": P("norm"),
    }
    for name, spec in want.items():
        assert flat[name] == spec, name
    for name, leaf in nnx.to_flat_state(params):
        spec = flat["/".join(map(str, name))]
        assert len(spec) == leaf[...].ndim and set(spec) <= LOGICAL_AXES, (name, spec)


@pytest.mark.multidevice
def test_jits_on_eight_devices_replicated():
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",), axis_types=(AxisType.Auto,))
    graphdef, params = _split(_cfg())
    tokens = _tokens((8, 12))
    replicated = NamedSharding(mesh, P())
    sharded_params = jax.device_put(params, replicated)
    sharded_tokens = jax.device_put(tokens, NamedSharding(mesh, P("data")))
    fn = jax.jit(lambda p, t: _logits(graphdef, p, t), out_shardings=replicated)
    out = fn(sharded_params, sharded_tokens)
    assert out.sharding.is_fully_replicated
    chex.assert_trees_all_close(out, _logits(graphdef, params, tokens), atol=1e-6)


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"d_model": 15}, "num_heads"),
        ({"positions": "alibi"}, "positions"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
        ({"d_model": 6, "num_heads": 2, "positions": "rope"}, "rope"),
        ({"attention_impl": "flash"}, "attention_impl"),
        ({"pad_id": 37}, "pad_id"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_layers": 0}, "num_layers"),
    ],
)
def test_bad_config(kw, field):
    with pytest.raises(ConfigError, match=field):
        _cfg(**kw)


def test_sequence_longer_than_max_len():
    graphdef, params = _split(_cfg())
    with pytest.raises(ValueError, match="exceeds gpt.max_len 24"):
        _logits(graphdef, params, _tokens((1, 25)))
