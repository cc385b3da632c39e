"""Texts -> token arrays for the text pipelines: packed LM streams and padded examples.

Letters: N = examples, L = seq_len, T = tokens of a packed split.

Language modeling: documents are tokenized without special tokens and concatenated, each
followed by the tokenizer's end-of-document token if it has one (<|endoftext|>, </s> or [SEP];
the char tokenizer has none). With packing=documents the documents are also packed into rows
(jaxtrain/data/packing.py). Classification: the tokenizer's post-processor adds its special
tokens ([CLS] ... [SEP] for WordPiece/BERT); longer examples are truncated by the tokenizer
(special tokens kept) and right-padded with the pad id. Records with no content tokens (empty
text) are skipped; they, truncated examples and unknown tokens are counted and logged once.
"""

import dataclasses
import logging

import numpy as np
import tokenizers

from jaxtrain.data import packing as packing_lib
from jaxtrain.data import tokenizer as tokenizer_lib
from jaxtrain.errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TextSplitStats:
    """What tokenizing one split produced; num_examples is what an epoch iterates over."""

    num_examples: int  # full windows (LM train), all windows (LM eval), packed rows or examples
    num_records: int  # documents or examples stored in the split
    num_tokens: int  # tokens of kept records after truncation, special tokens included
    num_unknown: int  # tokens that are the tokenizer's unknown token
    num_empty: int  # records with no content tokens, skipped
    num_truncated: int  # classification examples cut to seq_len


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
    """A split as arrays: tokens_T for language modeling, inputs_NxL/labels_N otherwise."""

    where: str  # "<name> split '<split>'", for messages
    task: str  # "language_modeling" or "text_classification"
    pad_id: int
    seq_len: int
    stats: TextSplitStats
    tokens_T: np.ndarray | None = None
    inputs_NxL: np.ndarray | None = None
    labels_N: np.ndarray | None = None
    packed: packing_lib.PackedRows | None = None  # language modeling with packing=documents


def tokenize_documents(
    texts: list[str],
    tokenizer: tokenizers.Tokenizer,
    *,
    where: str,
    seq_len: int,
    vocab_size: int,
    train: bool,
    packing: str = "none",
) -> TokenizedSplit:
    """Packs documents into one int32 token stream; counts L-token windows (full ones if train),
    or with packing="documents" the rows of whole documents (all of them, train or not)."""
    pad_id = tokenizer_lib.get_pad_id(tokenizer)
    docs, num_empty = _encode_documents(texts, tokenizer, where, vocab_size)
    tokens_T = np.concatenate(docs).astype(np.int32)
    packed = None
    if packing == "documents":
        packed = packing_lib.pack_documents(docs, seq_len=seq_len, pad_id=pad_id)
        num_examples = len(packed.tokens_NxR)
    else:
        num_targets = len(tokens_T) - 1  # every token but the first is predicted once
        num_examples = num_targets // seq_len if train else -(-num_targets // seq_len)
    stats = TextSplitStats(
        num_examples=num_examples,
        num_records=len(texts),
        num_tokens=len(tokens_T),
        num_unknown=tokenizer_lib.count_unknown(tokenizer, tokens_T),
        num_empty=num_empty,
        num_truncated=0,
    )
    split = TokenizedSplit(
        where, "language_modeling", pad_id, seq_len, stats, tokens_T=tokens_T, packed=packed
    )
    _log_stats(split)
    return split


def _encode_documents(
    texts: list[str], tokenizer: tokenizers.Tokenizer, where: str, vocab_size: int
) -> tuple[list[np.ndarray], int]:
    """(each non-empty document's ids + the end-of-document token if any, empty documents)."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    separator = tokenizer_lib.get_separator_id(tokenizer)
    tail = np.asarray([] if separator is None else [separator], dtype=np.int64)
    docs, num_empty = [], 0
    for index, encoding in enumerate(encodings):
        ids = np.asarray(encoding.ids, dtype=np.int64)
        if ids.size == 0:
            num_empty += 1
            continue
        _check_ids(ids, where, f"document {index}", vocab_size)
        docs.append(np.concatenate([ids, tail]))
    if not docs:
        raise DataError(f"{where}: all {len(texts)} documents are empty")
    return docs, num_empty


def tokenize_examples(
    texts: list[str],
    labels: np.ndarray,
    tokenizer: tokenizers.Tokenizer,
    *,
    where: str,
    seq_len: int,
    vocab_size: int,
    num_classes: int,
) -> TokenizedSplit:
    """Tokenizes, truncates and right-pads examples to [N, seq_len]; checks ids and labels."""
    pad_id = tokenizer_lib.get_pad_id(tokenizer)
    num_special = tokenizer.num_special_tokens_to_add(is_pair=False)
    if seq_len <= num_special:
        raise DataError(f"seq_len {seq_len} leaves no room beside {num_special} special tokens")
    _check_labels(labels, where, num_classes)
    # Truncate with a copy of the tokenizer: it keeps special tokens such as the final [SEP]
    # and reports what it cut (`overflowing`), and the caller's tokenizer stays untouched.
    truncating = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    truncating.enable_truncation(max_length=seq_len)
    encodings = truncating.encode_batch(texts)
    kept, num_truncated = [], 0
    for index, encoding in enumerate(encodings):
        if all(encoding.special_tokens_mask):
            continue  # no content tokens: skipped, and counted in num_empty
        ids = np.asarray(encoding.ids, dtype=np.int64)
        _check_ids(ids, where, f"example {index}", vocab_size)
        num_truncated += bool(encoding.overflowing)
        kept.append((index, ids))
    if not kept:
        raise DataError(f"{where}: all {len(texts)} examples are empty")
    lengths_N = np.asarray([len(ids) for _, ids in kept])
    real_NxL = np.arange(seq_len) < lengths_N[:, None]
    inputs_NxL = np.full((len(kept), seq_len), pad_id, dtype=np.int32)
    inputs_NxL[real_NxL] = np.concatenate([ids for _, ids in kept])
    stats = TextSplitStats(
        num_examples=len(kept),
        num_records=len(texts),
        num_tokens=int(lengths_N.sum()),
        num_unknown=tokenizer_lib.count_unknown(tokenizer, inputs_NxL[real_NxL]),
        num_empty=len(texts) - len(kept),
        num_truncated=num_truncated,
    )
    labels_N = labels[[index for index, _ in kept]].astype(np.int32)
    split = TokenizedSplit(
        where,
        "text_classification",
        pad_id,
        seq_len,
        stats,
        inputs_NxL=inputs_NxL,
        labels_N=labels_N,
    )
    _log_stats(split)
    return split


def _check_ids(ids: np.ndarray, where: str, what: str, vocab_size: int) -> None:
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        raise DataError(
            f"{where}: {what} has token id {int(ids[bad[0]])} outside the vocabulary "
            f"[0, {vocab_size}); the tokenizer and the model's vocab_size do not match"
        )


def _check_labels(labels: np.ndarray, where: str, num_classes: int) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where}: example {i} has label {int(labels[i])} outside [0, {num_classes})"
        )


def _log_stats(split: TokenizedSplit) -> None:
    stats = split.stats
    if stats.num_truncated:
        log.warning(
            "%s: %d of %d examples (%.2f%%) truncated to %d tokens",
            split.where,
            stats.num_truncated,
            stats.num_examples,
            100 * stats.num_truncated / stats.num_examples,
            split.seq_len,
        )
    if stats.num_unknown:
        log.warning(
            "%s: %d of %d tokens (%.3f%%) are the unknown token (text the tokenizer never saw)",
            split.where,
            stats.num_unknown,
            stats.num_tokens,
            100 * stats.num_unknown / stats.num_tokens,
        )
    if stats.num_empty:
        log.warning("%s: skipped %d empty records", split.where, stats.num_empty)
