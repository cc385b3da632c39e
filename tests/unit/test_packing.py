"""Packed documents (data.packing=documents): the row layout, every target counted once, no
token of one document depending on another (by gradients), per-document losses equal to the
documents run alone, and the config errors."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrain.config import get_config
from jaxtrain.data import packing
from jaxtrain.errors import ConfigError
from jaxtrain.models import model_config
from jaxtrain.models.gpt import GPT, GPTConfig
from jaxtrain.models.llama import Llama, LlamaConfig
from jaxtrain.validation import validate_against_dataset, validate_config

VOCAB = 40
SEQ_LEN = 16


def _docs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, n) for n in lengths]


def test_row_layout_by_hand():
    a, b, c, d = np.arange(10, 13), np.arange(20, 27), np.asarray([30]), np.asarray([40, 41])
    rows = packing.pack_documents([a, b, c, d], seq_len=4, pad_id=0)
    # a fills row 0 (then padding); b's first piece [20..24] is a whole row; its second piece
    # [24..26] overlaps it by one token and shares row 2 with d; c (one token) predicts nothing.
    np.testing.assert_array_equal(
        rows.tokens_NxR, [[10, 11, 12, 0, 0], [20, 21, 22, 23, 24], [24, 25, 26, 40, 41]]
    )
    np.testing.assert_array_equal(rows.segments_NxR, [[1, 1, 1, 0, 0], [1] * 5, [1, 1, 1, 2, 2]])
    np.testing.assert_array_equal(
        rows.positions_NxR, [[0, 1, 2, 0, 0], [0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    )
    batch = packing.read_rows(rows, np.asarray([2, 0]))
    np.testing.assert_array_equal(batch["inputs"], [[24, 25, 26, 40], [10, 11, 12, 0]])
    np.testing.assert_array_equal(batch["labels"], [[25, 26, 40, 41], [11, 12, 0, 0]])
    np.testing.assert_array_equal(batch["mask"], [[1, 1, 0, 1], [1, 1, 0, 0]])
    np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 2], [1, 1, 1, 0]])
    np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 0], [0, 1, 2, 0]])


def test_every_target_of_every_document_is_counted_once():
    docs = _docs([1, 5, 17, 16, 40, 2, 33, 9, 18])
    rows = packing.pack_documents(docs, seq_len=SEQ_LEN, pad_id=0)
    batch = packing.read_rows(rows, np.arange(len(rows.tokens_NxR)))
    real = batch["mask"]
    counted = collections.Counter(
        zip(batch["inputs"][real], batch["labels"][real], batch["positions"][real], strict=True)
    )
    # Each (token, next token) pair of a document, with the input's position in its piece.
    expected = collections.Counter(
        (int(d[i]), int(d[i + 1]), i % SEQ_LEN) for d in docs for i in range(len(d) - 1)
    )
    assert counted == expected
    assert real.sum() == sum(len(d) - 1 for d in docs)
    assert (batch["segment_ids"][~real] >= 0).all() and rows.tokens_NxR.shape[1] == SEQ_LEN + 1


# --- models on packed rows ------------------------------------------------------------------

_SIZES = dict(vocab_size=VOCAB, max_len=SEQ_LEN, num_layers=2, d_model=32, pad_id=0)
MODELS = {  # untied: the embedding table is used only at the input
    "gpt-learned": (GPT, GPTConfig(**_SIZES, num_heads=2, d_ff=64, tie_embeddings=False)),
    "gpt-rope": (
        GPT,
        GPTConfig(**_SIZES, num_heads=2, d_ff=64, tie_embeddings=False, positions="rope"),
    ),
    "llama": (Llama, LlamaConfig(**_SIZES, num_heads=4, num_kv_heads=2, d_ff=48)),
}


@functools.partial(jax.jit, static_argnums=(0,))
def _logits(graphdef, params, batch):
    model = nnx.merge(graphdef, params, copy=True)
    extra = {k: batch[k] for k in ("segment_ids", "positions") if k in batch}
    return model(batch["inputs"], train=False, dropout_key=jax.random.key(0), **extra)


@pytest.mark.parametrize("name", ["gpt-learned", "llama"])  # the mask is gpt-rope's too
def test_no_token_depends_on_another_document(name, random_split):
    """A row holding three documents of distinct tokens: d logits[t] / d (embedding row of
    the token at s) is zero unless s is an earlier (or the same) position of t's own
    document, and nonzero then; every t at once, one vmapped gradient per query position."""
    graphdef, params = random_split(*MODELS[name])
    tokens = np.random.default_rng(1).permutation(np.arange(1, SEQ_LEN + 2))
    docs = [tokens[:5], tokens[5:12], tokens[12:]]  # 5 + 7 + 5 = 17 tokens: one row
    batch = packing.read_rows(packing.pack_documents(docs, seq_len=SEQ_LEN, pad_id=0), [0])
    segment = batch["segment_ids"][0]
    assert segment.tolist() == [1] * 5 + [2] * 7 + [3] * 4

    def selected_logits(embed, select_L):
        p = nnx.merge_state(params, nnx.State({"embed": nnx.Param(embed)}))
        return jnp.sum(_logits(graphdef, p, batch)[0] * select_L[:, None])

    # d/d embed only: XLA then drops the other weights' gradients.
    embed_grads = jax.jit(jax.vmap(jax.grad(selected_logits), in_axes=(None, 0)))(
        params["embed"][...], jnp.eye(SEQ_LEN)
    )
    rows_TxLxD = embed_grads[:, batch["inputs"][0]]  # query t, input position s
    norm_TxL = np.asarray(jnp.abs(rows_TxLxD).sum(-1))
    position = np.arange(SEQ_LEN)
    own_past_TxL = (segment[:, None] == segment[None, :]) & (position[None, :] <= position[:, None])
    assert np.all(norm_TxL[~own_past_TxL] == 0.0)
    assert np.all(norm_TxL[own_past_TxL] > 0.0)


# gpt-rope's rotation is llama's apply_rope; slow keeps the fast suite to one model of each kind.
@pytest.mark.parametrize(
    "name", ["gpt-learned", pytest.param("gpt-rope", marks=pytest.mark.slow), "llama"]
)
def test_packed_losses_equal_each_document_run_alone(name, random_split):
    """Per-document summed cross-entropy from packed rows (several documents per row)
    equals each document's own forward, to 1e-5 in float32."""
    graphdef, params = random_split(*MODELS[name])
    docs = _docs([6, 9, 3, 12, 17, 4, 2], seed=3)  # rows: 6+9 | 3+12 | 17 | 4+2
    rows = packing.pack_documents(docs, seq_len=SEQ_LEN, pad_id=0)
    batch = packing.read_rows(rows, np.arange(len(rows.tokens_NxR)))
    assert batch["segment_ids"].max(axis=1).tolist() == [2, 2, 1, 2]
    losses_NxL = optax.softmax_cross_entropy_with_integer_labels(
        _logits(graphdef, params, batch), batch["labels"]
    )
    losses_NxL = np.asarray(losses_NxL) * batch["mask"]
    segments_NxL = batch["segment_ids"]
    got = [
        float(losses_NxL[r][segments_NxL[r] == s].sum())
        for r in range(len(segments_NxL))
        for s in range(1, SEQ_LEN + 1)
        if (segments_NxL[r] == s).any()
    ]
    # Each document alone: its own row from position 0, no segment ids, right-padded
    # (causality keeps the padding out of the real positions).
    alone = np.zeros((len(docs), SEQ_LEN + 1), np.int32)
    for i, d in enumerate(docs):
        alone[i, : len(d)] = d
    alone_losses = optax.softmax_cross_entropy_with_integer_labels(
        _logits(graphdef, params, {"inputs": alone[:, :-1]}), alone[:, 1:]
    )
    expected = [float(jnp.sum(alone_losses[i, : len(d) - 1])) for i, d in enumerate(docs)]
    assert len(got) == len(docs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# --- config errors --------------------------------------------------------------------------


def test_unknown_packing_is_refused():
    c = get_config()
    c.data.packing = "sequences"
    with pytest.raises(ConfigError, match="config.data.packing: 'sequences' is not one of none"):
        validate_config(c, num_devices=1)


def test_packing_a_classification_dataset_is_refused():
    c = get_config()
    c.data.name, c.data.packing = "mr_polarity", "documents"
    c.model = model_config("bert")
    validate_config(c, num_devices=1)  # the task is known once the dataset is read
    with pytest.raises(ConfigError, match="config.data.packing: 'documents' packs language"):
        validate_against_dataset(c, task="text_classification", num_classes=2, vocab_size=100)
    c.data.packing = "none"
    validate_against_dataset(c, task="text_classification", num_classes=2, vocab_size=100)
