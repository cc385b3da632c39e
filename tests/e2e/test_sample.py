"""Generation with the KV cache: equals full recompute, seeded, top-k, bad inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrain.errors import CheckpointError, DataError
from jaxtrain.models.gpt import GPT, GPTConfig
from jaxtrain.tools.sample import generate, sample_from_run

VOCAB = 29


def _model(positions: str = "learned", compute_dtype: str = "float32"):
    """A tiny GPT whose weights are scaled up so its logits are far from uniform: greedy
    decoding then visits many tokens and a wrong position/cache shows up in the argmax."""
    cfg = GPTConfig(
        vocab_size=VOCAB,
        max_len=20,
        num_layers=2,
        d_model=16,
        num_heads=2,
        d_ff=32,
        dropout=0.1,  # must be off when sampling
        positions=positions,
        tie_embeddings=False,
        compute_dtype=compute_dtype,
        remat="none",
        pad_id=0,
    )
    graphdef, params = nnx.split(GPT(cfg, rngs=nnx.Rngs(params=0)), nnx.Param)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return graphdef, jax.tree.unflatten(tree, leaves)


def _greedy_by_full_forward(graphdef, params, prompt, n):
    """Independent reference: a Python loop taking the argmax of the model's full forward at
    the last filled position (one jitted forward over a zero-padded buffer; causality makes
    the padding irrelevant)."""
    forward = jax.jit(
        lambda p, t: nnx.merge(graphdef, p)(t, train=False, dropout_key=jax.random.key(0))
    )
    seq = np.zeros((1, len(prompt) + n), np.int32)
    seq[0, : len(prompt)] = prompt
    for i in range(len(prompt), len(prompt) + n):
        seq[0, i] = int(jnp.argmax(forward(params, seq)[0, i - 1]))
    return seq[0, len(prompt) :].tolist()


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_greedy_with_cache_equals_full_recompute(positions):
    graphdef, params = _model(positions)
    prompt = [3, 1, 4, 1, 5]
    kw = dict(max_new_tokens=15, temperature=0.0, top_k=0, seed=0)
    cached = generate(graphdef, params, prompt, **kw)
    recomputed = generate(graphdef, params, prompt, use_cache=False, **kw)
    assert cached == recomputed == _greedy_by_full_forward(graphdef, params, prompt, 15)
    assert len(set(cached)) >= 3, cached  # the model is not stuck on one token


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_decode_step_logits_match_full_forward(positions):
    graphdef, params = _model(positions)
    model = functools.partial(nnx.merge, graphdef)
    forward = jax.jit(lambda p, t: model(p)(t, train=False, dropout_key=jax.random.key(0)))
    prefill = jax.jit(lambda p, t: model(p).prefill(t, 20))
    decode = jax.jit(lambda p, t, cache, pos: model(p).decode_step(t, cache, pos))
    tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, VOCAB)
    full = forward(params, tokens)
    logits, cache = prefill(params, tokens[:, :4])
    np.testing.assert_allclose(logits, full[:, :4], atol=1e-4, rtol=1e-4)
    for pos in range(4, 12):  # one compile: the position is traced
        step_logits, cache = decode(params, tokens[:, pos], cache, pos)
        np.testing.assert_allclose(step_logits, full[:, pos], atol=1e-4, rtol=1e-4)
    assert cache.k.shape == (2, 2, 20, 2, 8)


def test_sampling_is_deterministic_by_seed_and_cache_agnostic():
    graphdef, params = _model()
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=0)
    a = generate(graphdef, params, [1, 2], seed=5, **kw)
    assert a == generate(graphdef, params, [1, 2], seed=5, **kw)
    assert a == generate(graphdef, params, [1, 2], seed=5, use_cache=False, **kw)
    assert a != generate(graphdef, params, [1, 2], seed=6, **kw)


def test_top_k_one_is_greedy():
    graphdef, params = _model()
    greedy = generate(graphdef, params, [7], max_new_tokens=12, temperature=0.0, top_k=0, seed=0)
    top1 = generate(graphdef, params, [7], max_new_tokens=12, temperature=2.0, top_k=1, seed=3)
    assert top1 == greedy


def test_top_k_draws_only_from_the_k_best():
    graphdef, params = _model()
    prompt = [2, 9]
    out = generate(graphdef, params, prompt, max_new_tokens=10, temperature=5.0, top_k=3, seed=1)
    model = nnx.merge(graphdef, params)
    seq = prompt + out
    logits = model(jnp.asarray([seq]), train=False, dropout_key=jax.random.key(0))[0]
    for i, token in enumerate(out):
        top3 = set(np.argsort(np.asarray(logits[len(prompt) + i - 1]))[-3:].tolist())
        assert token in top3, (i, token, top3)
    # At temperature 5 over 29 tokens, sampling without top-k leaves the top 3 at times.
    free = generate(graphdef, params, prompt, max_new_tokens=10, temperature=5.0, top_k=0, seed=1)
    assert free != out


def test_bfloat16_model_generates():
    graphdef, params = _model(compute_dtype="bfloat16")
    out = generate(graphdef, params, [1], max_new_tokens=5, temperature=0.0, top_k=0, seed=0)
    assert len(out) == 5 and all(0 <= t < VOCAB for t in out)
    assert generate(graphdef, params, [1], max_new_tokens=0, temperature=0, top_k=0, seed=0) == []


@pytest.mark.parametrize(
    "prompt,kw,error,match",
    [
        ([], {}, DataError, "prompt is empty"),
        ([1, VOCAB], {}, DataError, "token id 29 at index 1 is outside the vocabulary"),
        ([1] * 21, {}, DataError, "21 tokens but the model's max_len is 20"),
        ([1] * 15, {"max_new_tokens": 6}, DataError, "max_new_tokens <= 5"),
        ([1], {"temperature": -1.0}, ValueError, "temperature"),
        ([1], {"temperature": float("nan")}, ValueError, "temperature"),
        ([1], {"top_k": VOCAB + 1}, ValueError, "top_k must be in"),
        ([1], {"max_new_tokens": -1}, ValueError, "max_new_tokens must be >= 0"),
    ],
)
def test_bad_inputs(prompt, kw, error, match):
    graphdef, params = _model()
    args = {"max_new_tokens": 3, "temperature": 1.0, "top_k": 0, "seed": 0, **kw}
    with pytest.raises(error, match=match):
        generate(graphdef, params, prompt, **args)


@pytest.mark.slow
@pytest.mark.parametrize("model,packing", [("gpt", "none"), ("llama", "documents")])
def test_sample_from_a_trained_run(tmp_path, data_dir, model, packing):
    """End to end on real data: 2 steps of a tiny char-level GPT (or Llama trained on packed
    documents) on Shakespeare, then the `sample` command's library call on its checkpoint."""
    from jaxtrain.config import get_config
    from jaxtrain.data import load_tokenizer
    from jaxtrain.models import model_config
    from jaxtrain.train import train_and_evaluate

    c = get_config()
    c.data.name, c.data.tokenizer, c.data.seq_len = "shakespeare", "shakespeare_char", 32
    c.total_steps, c.batch_size, c.eval_batch_size = 2, 8, 64
    c.log_every, c.eval_every, c.checkpoint.every = 1, 2, 2
    c.optimizer.warmup_steps = 0
    c.data.packing = packing
    c.model = model_config(model, max_len=40, num_layers=1, d_model=32, num_heads=2, d_ff=64)
    train_and_evaluate(c, str(tmp_path), progress=False)
    kw = dict(which="latest", max_new_tokens=30, temperature=0.8, top_k=5, seed=0)
    text = sample_from_run(str(tmp_path), "ROMEO:", **kw)
    # One char per token, except special tokens ([PAD], [UNK]) that a 2-step model may draw.
    specials = [
        t.content
        for t in load_tokenizer("shakespeare_char", data_dir).get_added_tokens_decoder().values()
    ]
    new = text[len("ROMEO:") :]
    assert text.startswith("ROMEO:")
    assert len(new) - sum((len(t) - 1) * new.count(t) for t in specials) == 30
    assert text == sample_from_run(str(tmp_path), "ROMEO:", **kw)
    with pytest.raises(DataError, match="max_new_tokens <= 34"):
        sample_from_run(str(tmp_path), "ROMEO:", **{**kw, "max_new_tokens": 35})
    with pytest.raises(CheckpointError):
        sample_from_run(str(tmp_path), "ROMEO:", **{**kw, "which": "7"})
