"""Text splits as pipeline sources: language-modeling windows and classification examples.

Letters: B = rows of a batch, L = seq_len. Sources read:
- language_modeling:   inputs int32 [B, L], labels int32 [B, L] (inputs shifted left by one
                       token), mask bool [B, L] (False past the end of the split); with
                       packing=documents also segment_ids and positions int32 [B, L]
- text_classification: inputs int32 [B, L] (right-padded with the pad id), labels int32 [B]

A split is tokenized once (see jaxtrain/data/tokenize.py: packing, truncation, what is counted)
and kept in memory. Language modeling: window w covers tokens [w*L, w*L + L] of the packed
stream (L + 1 tokens): inputs are its first L, labels its last L. Windows step by L, so inputs
and labels of consecutive windows do not overlap and every token after the first is a label
exactly once. Train uses only full windows; eval adds the final partial one, right-padded. With
packing=documents the rows are whole documents instead (jaxtrain/data/packing.py).
Example/document indices in errors count from the start of the named split.
"""

import collections
import hashlib
import os

import numpy as np
import tokenizers

from jaxtrain.data import packing, registry, tokenize
from jaxtrain.data import tokenizer as tokenizer_lib
from jaxtrain.errors import DataError

SPLITS = ("train", "validation", "test")


def text_split_sizes(name: str, data_dir: str) -> dict[str, int]:
    """Records (documents for language modeling, else examples) in each split."""
    info = registry.load_builder(name, data_dir).info
    return {split: info.splits[split].num_examples for split in SPLITS}


def read_texts(name: str, split: str, data_dir: str) -> list[str]:
    """All texts of a split (a TFDS split string such as "train" or "train[:10]"), in order."""
    return _read_records(name, split, data_dir)[0]


def read_labels(name: str, split: str, data_dir: str) -> np.ndarray:
    """Labels int64 [N] of a classification split, in order (e.g. for class weights)."""
    if registry.get_task(name, data_dir) == registry.LANGUAGE_MODELING:
        raise DataError(f"{name} is a language modeling dataset: it has no labels")
    return _read_records(name, split, data_dir)[1]


def read_corpus(corpus: str, data_dir: str) -> list[str]:
    """Documents to train a tokenizer on: a text dataset's prepared train split, or the
    contents of a UTF-8 text file (one document)."""
    text_names = [
        n for n, s in registry.DATASETS.items() if s.task != registry.IMAGE_CLASSIFICATION
    ]
    if corpus in text_names or registry.is_user_dataset(corpus):
        return read_texts(corpus, "train", data_dir)
    if not os.path.isfile(corpus):
        raise DataError(
            f"corpus {corpus!r} is neither a text dataset ({', '.join(text_names)}, user:NAME) "
            "nor a text file"
        )
    try:
        with open(corpus, encoding="utf-8") as f:
            return [f.read()]
    except UnicodeDecodeError as err:
        raise DataError(f"corpus file {corpus} is not UTF-8 text ({err})") from err


def get_text_split_stats(
    name: str,
    *,
    split: str,
    data_dir: str,
    tokenizer: tokenizers.Tokenizer,
    seq_len: int,
    train: bool = False,
    packing: str = "none",
) -> tokenize.TextSplitStats:
    """Tokenizes the split (cached) and reports its counts; train=True counts full windows."""
    return _load_split(name, split, data_dir, tokenizer, seq_len, None, None, train, packing).stats


def open_text_source(
    name: str,
    split: str,
    *,
    data_dir: str,
    tokenizer: tokenizers.Tokenizer,
    seq_len: int,
    train: bool,
    vocab_size: int | None = None,
    num_classes: int | None = None,
    packing: str = "none",
) -> "LMWindows | TextExamples":
    """A split, tokenized (cached), as windows (train=True: full ones only), packed documents
    (packing="documents", language modeling only) or examples.

    `split` may be a TFDS slice such as "train[:10%]". vocab_size/num_classes (the model's)
    default to the tokenizer's and the dataset's; ids or labels outside them are errors.
    """
    data = _load_split(
        name, split, data_dir, tokenizer, seq_len, vocab_size, num_classes, train, packing
    )
    if data.task == registry.TEXT_CLASSIFICATION:
        return TextExamples(data)
    if data.packed is not None:
        return PackedDocuments(data)
    if train and data.stats.num_examples == 0:
        raise DataError(f"{data.where}: no full window of seq_len + 1 = {seq_len + 1} tokens")
    return LMWindows(data)


class TextExamples:
    """Classification examples, truncated and right-padded to seq_len."""

    def __init__(self, data: tokenize.TokenizedSplit):
        self._data = data
        self.where = data.where

    def __len__(self) -> int:
        return self._data.stats.num_examples

    def labels(self) -> np.ndarray:
        return self._data.labels_N

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"inputs": self._data.inputs_NxL[indices], "labels": self._data.labels_N[indices]}


class LMWindows:
    """Language-modeling windows of seq_len + 1 tokens of the packed token stream."""

    def __init__(self, data: tokenize.TokenizedSplit):
        self._data = data
        self.where = data.where

    def __len__(self) -> int:
        return self._data.stats.num_examples

    def labels(self) -> np.ndarray:
        raise DataError(f"{self.where}: language modeling windows have no class labels")

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        data = self._data
        positions_BxL1 = indices[:, None] * data.seq_len + np.arange(data.seq_len + 1)
        real_BxL1 = positions_BxL1 < len(data.tokens_T)
        tokens_BxL1 = data.tokens_T[np.minimum(positions_BxL1, len(data.tokens_T) - 1)]
        window_BxL1 = np.where(real_BxL1, tokens_BxL1, data.pad_id).astype(np.int32)
        return {
            "inputs": window_BxL1[:, :-1],
            "labels": window_BxL1[:, 1:],
            "mask": real_BxL1[:, 1:],
        }


class PackedDocuments(LMWindows):
    """Language-modeling rows of whole documents, with segment_ids and positions."""

    def __len__(self) -> int:
        return len(self._data.packed.tokens_NxR)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return packing.read_rows(self._data.packed, indices)


# Tokenizing a split costs seconds (Shakespeare's train split: ~4.5M tokens), and the train loop
# makes a new eval iterator at every eval; so keep the last few tokenized splits, keyed by
# everything that determines them (including the tokenizer's full JSON).
_CACHE_SIZE = 4
_cache: collections.OrderedDict[tuple, tokenize.TokenizedSplit] = collections.OrderedDict()


def _load_split(
    name: str,
    split: str,
    data_dir: str,
    tokenizer: tokenizers.Tokenizer,
    seq_len: int,
    vocab_size: int | None,
    num_classes: int | None,
    train: bool,
    packing_name: str = "none",
) -> tokenize.TokenizedSplit:
    task = registry.get_task(name, data_dir)
    if seq_len <= 0:
        raise DataError(f"seq_len must be positive, got {seq_len}")
    if packing_name not in packing.PACKINGS:
        raise DataError(
            f"packing must be one of {', '.join(packing.PACKINGS)}, got {packing_name!r}"
        )
    if packing_name != "none" and task != registry.LANGUAGE_MODELING:
        raise DataError(
            f"{name} is a {task} dataset: packing={packing_name} packs language-modeling documents"
        )
    fingerprint = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
    key = (
        name,
        split,
        data_dir,
        fingerprint,
        seq_len,
        vocab_size,
        num_classes,
        train,
        packing_name,
    )
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    texts, labels = _read_records(name, split, data_dir)
    where = f"{name} split {split!r}"
    if not texts:
        raise DataError(f"{where}: the split is empty")
    vocab_size = vocab_size or tokenizer_lib.get_vocab_size(tokenizer)
    if task == registry.LANGUAGE_MODELING:
        data = tokenize.tokenize_documents(
            texts,
            tokenizer,
            where=where,
            seq_len=seq_len,
            vocab_size=vocab_size,
            train=train,
            packing=packing_name,
        )
    else:
        features = registry.load_builder(name, data_dir).info.features
        data = tokenize.tokenize_examples(
            texts,
            labels,
            tokenizer,
            where=where,
            seq_len=seq_len,
            vocab_size=vocab_size,
            num_classes=num_classes or features["label"].num_classes,
        )
    _cache[key] = data
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return data


def _read_records(name: str, split: str, data_dir: str) -> tuple[list[str], np.ndarray | None]:
    """(texts, labels or None) of a split, read with batched array_record calls."""
    if split.split("[")[0] not in SPLITS:
        raise DataError(
            f"split must be one of {SPLITS} (or a slice like 'train[:10]'), got {split!r}"
        )
    builder = registry.load_builder(name, data_dir)
    try:
        source = builder.as_data_source(split)
    except (ValueError, KeyError) as err:
        raise DataError(f"{name}: bad split {split!r} ({err})") from err
    texts, labels, chunk = [], [], 4096
    for start in range(0, len(source), chunk):
        records = source.__getitems__(list(range(start, min(start + chunk, len(source)))))
        texts.extend(record["text"].decode("utf-8") for record in records)
        labels.extend(int(record["label"]) for record in records if "label" in record)
    is_classification = "label" in builder.info.features
    return texts, (np.asarray(labels, dtype=np.int64) if is_classification else None)
