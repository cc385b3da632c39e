"""Grain pipelines for text datasets: language modeling and text classification.

Letters: B = rows of a per-process batch, L = seq_len. Per-process numpy batches:
- language_modeling:   inputs int32 [B, L], labels int32 [B, L] (inputs shifted left by one
                       token), mask float32 [B, L]
- text_classification: inputs int32 [B, L] (right-padded with the pad id), labels int32 [B],
                       mask float32 [B]

A split is tokenized once (see jaxtrain/data/tokenize.py: packing, truncation, what is counted)
and kept in memory. Language modeling: window w covers tokens [w*L, w*L + L] of the packed
stream (L + 1 tokens): inputs are its first L, labels its last L. Windows step by L, so inputs
and labels of consecutive windows do not overlap and every token after the first is a label
exactly once. Train uses only full windows; eval adds the final partial one, right-padded under
mask 0. Eval splits are padded to whole global batches with copies of example 0 under mask 0
(never all-padding rows, which would make attention or mean pooling divide by zero).
Example/document indices in errors count from the start of the named split.
"""

import collections
import dataclasses
import hashlib
from collections.abc import Callable, Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds
import tokenizers

from jaxtrain.data import tokenize
from jaxtrain.data import tokenizer as tokenizer_lib
from jaxtrain.data.builders import mr_polarity, shakespeare, user_data
from jaxtrain.data.pipeline import USER_PREFIX, DatasetNotPreparedError
from jaxtrain.errors import DataError

SPLITS = ("train", "validation", "test")
TASKS = ("language_modeling", "text_classification")


@dataclasses.dataclass(frozen=True)
class TextDatasetSpec:
    """What a text dataset is for and how to build it."""

    task: str  # one of TASKS
    builder_cls: type[tfds.core.GeneratorBasedBuilder]
    prepare: Callable[[str, str | None], None]
    config: str | None = None  # TFDS builder config name


TEXT_DATASETS: dict[str, TextDatasetSpec] = {
    "shakespeare": TextDatasetSpec(
        task="language_modeling",
        builder_cls=shakespeare.Shakespeare,
        prepare=shakespeare.prepare_shakespeare,
        config="contiguous",
    ),
    "shakespeare_by_work": TextDatasetSpec(
        task="language_modeling",
        builder_cls=shakespeare.Shakespeare,
        prepare=shakespeare.prepare_shakespeare,
        config="by_work",
    ),
    "mr_polarity": TextDatasetSpec(
        task="text_classification",
        builder_cls=mr_polarity.MrPolarity,
        prepare=mr_polarity.prepare_mr_polarity,
    ),
}


@dataclasses.dataclass(frozen=True)
class TextDatasetInfo:
    """Task, label space and split sizes in records (documents for LM, examples otherwise)."""

    task: str
    num_classes: int  # 0 for language modeling
    class_names: tuple[str, ...]
    num_train: int
    num_validation: int
    num_test: int


def get_text_dataset_info(name: str, data_dir: str) -> TextDatasetInfo:
    """Reads task, classes and split sizes from the prepared dataset's metadata."""
    spec = _get_spec(name)
    info = _load_builder(name, data_dir).info
    sizes = {split: info.splits[split].num_examples for split in SPLITS}
    class_names = ()
    if spec.task == "text_classification":
        class_names = tuple(info.features["label"].names)
    return TextDatasetInfo(
        task=spec.task,
        num_classes=len(class_names),
        class_names=class_names,
        num_train=sizes["train"],
        num_validation=sizes["validation"],
        num_test=sizes["test"],
    )


def read_texts(name: str, split: str, data_dir: str) -> list[str]:
    """All texts of a split (a TFDS split string such as "train" or "train[:10]"), in order."""
    return _read_records(name, split, data_dir)[0]


def read_labels(name: str, split: str, data_dir: str) -> np.ndarray:
    """Labels int64 [N] of a classification split, in order (e.g. for class weights)."""
    if _get_spec(name).task != "text_classification":
        raise DataError(f"{name} is a language modeling dataset: it has no labels")
    return _read_records(name, split, data_dir)[1]


def get_text_split_stats(
    name: str,
    *,
    split: str,
    data_dir: str,
    tokenizer: tokenizers.Tokenizer,
    seq_len: int,
    train: bool = False,
) -> tokenize.TextSplitStats:
    """Tokenizes the split (cached) and reports its counts; train=True counts full windows."""
    return _load_split(name, split, data_dir, tokenizer, seq_len, None, None, train).stats


def create_text_train_iterator(
    name: str,
    *,
    data_dir: str,
    tokenizer: tokenizers.Tokenizer,
    seq_len: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 2,
    split: str = "train",
    vocab_size: int | None = None,
    num_classes: int | None = None,
) -> grain.DatasetIterator:
    """Infinite shuffled batches of windows/examples; checkpoint with get_state()/set_state().

    Every process draws the same global batches of indices (a permutation per epoch from
    `seed`) and reads only its rows, so the global batch never depends on process_count.
    `split` may be a TFDS slice such as "train[:10%]". vocab_size/num_classes (the model's)
    default to the tokenizer's and the dataset's; ids or labels outside them are errors.
    """
    local_batch_size = _local_batch_size(global_batch_size, process_count, process_index)
    data = _load_split(name, split, data_dir, tokenizer, seq_len, vocab_size, num_classes, True)
    if data.stats.num_examples == 0:
        raise DataError(f"{data.where}: no full window of seq_len + 1 = {seq_len + 1} tokens")
    ds = grain.MapDataset.range(data.stats.num_examples).shuffle(seed=seed).repeat(None)
    ds = ds.batch(global_batch_size, drop_remainder=True)
    rows = slice(process_index * local_batch_size, (process_index + 1) * local_batch_size)
    ds = ds.map(lambda indices: indices[rows])
    ds = ds.map(_ReadTextBatch(data))
    return iter(ds.to_iter_dataset(_read_options(prefetch)))


def create_text_eval_iterator(
    name: str,
    *,
    split: str,
    data_dir: str,
    tokenizer: tokenizers.Tokenizer,
    seq_len: int,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    vocab_size: int | None = None,
    num_classes: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over `split`, padded to whole global batches and marked by "mask".

    Every process yields the same number of batches, so collectives in the eval step line up.
    """
    local_batch_size = _local_batch_size(global_batch_size, process_count, process_index)
    data = _load_split(name, split, data_dir, tokenizer, seq_len, vocab_size, num_classes, False)
    num_batches = -(-data.stats.num_examples // global_batch_size)
    # Strided sharding: process p reads padded rows p, p + P, ...; each row is read exactly once.
    rows = grain.MapDataset.range(num_batches * global_batch_size)[process_index::process_count]
    ds = rows.batch(local_batch_size, drop_remainder=True).map(_ReadTextBatch(data))
    return iter(ds.to_iter_dataset(_read_options(2)))


class _ReadTextBatch(grain.transforms.Map):
    """Index batch -> batch dict. Indices at or past num_examples are padding rows (mask 0)."""

    def __init__(self, data: tokenize.TokenizedSplit):
        self._data = data

    def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        data = self._data
        valid_B = indices < data.stats.num_examples
        indices = np.where(valid_B, indices, 0)
        if data.task == "text_classification":
            return {
                "inputs": data.inputs_NxL[indices],
                "labels": data.labels_N[indices],
                "mask": valid_B.astype(np.float32),
            }
        positions_BxL1 = indices[:, None] * data.seq_len + np.arange(data.seq_len + 1)
        real_BxL1 = positions_BxL1 < len(data.tokens_T)
        tokens_BxL1 = data.tokens_T[np.minimum(positions_BxL1, len(data.tokens_T) - 1)]
        window_BxL1 = np.where(real_BxL1, tokens_BxL1, data.pad_id).astype(np.int32)
        return {
            "inputs": window_BxL1[:, :-1],
            "labels": window_BxL1[:, 1:],
            "mask": (real_BxL1[:, 1:] & valid_B[:, None]).astype(np.float32),
        }


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
) -> tokenize.TokenizedSplit:
    spec = _get_spec(name)
    if seq_len <= 0:
        raise DataError(f"seq_len must be positive, got {seq_len}")
    fingerprint = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
    key = (name, split, data_dir, fingerprint, seq_len, vocab_size, num_classes, train)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    texts, labels = _read_records(name, split, data_dir)
    where = f"{name} split {split!r}"
    if not texts:
        raise DataError(f"{where}: the split is empty")
    vocab_size = vocab_size or tokenizer_lib.get_vocab_size(tokenizer)
    if spec.task == "language_modeling":
        data = tokenize.tokenize_documents(
            texts, tokenizer, where=where, seq_len=seq_len, vocab_size=vocab_size, train=train
        )
    else:
        data = tokenize.tokenize_examples(
            texts,
            labels,
            tokenizer,
            where=where,
            seq_len=seq_len,
            vocab_size=vocab_size,
            num_classes=num_classes or get_text_dataset_info(name, data_dir).num_classes,
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
    builder = _load_builder(name, data_dir)
    try:
        source = builder.as_data_source(split)
    except (ValueError, KeyError) as err:
        raise DataError(f"{name}: bad split {split!r} ({err})") from err
    texts, labels, chunk = [], [], 4096
    for start in range(0, len(source), chunk):
        records = source.__getitems__(list(range(start, min(start + chunk, len(source)))))
        texts.extend(record["text"].decode("utf-8") for record in records)
        labels.extend(int(record["label"]) for record in records if "label" in record)
    is_classification = _get_spec(name).task == "text_classification"
    return texts, (np.asarray(labels, dtype=np.int64) if is_classification else None)


def _get_spec(name: str) -> TextDatasetSpec:
    if name.startswith(USER_PREFIX):
        # Own CSV/JSONL data: text classification, read from its prepared directory.
        return TextDatasetSpec(task="text_classification", builder_cls=None, prepare=None)
    if name not in TEXT_DATASETS:
        raise DataError(f"Unknown text dataset {name!r}; valid names: {sorted(TEXT_DATASETS)}")
    return TEXT_DATASETS[name]


def _load_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    if name.startswith(USER_PREFIX):
        return user_data.open_user_builder(name[len(USER_PREFIX) :], data_dir)
    spec = _get_spec(name)
    builder = spec.builder_cls(config=spec.config, data_dir=data_dir)
    if not builder.is_prepared():
        raise DatasetNotPreparedError(
            f"Dataset {name!r} is not prepared in data_dir={data_dir!r} (looked for "
            f"{builder.data_dir}). Prepare it with: "
            f"python -m jaxtrain prepare {name} --data_dir {data_dir}"
        )
    return builder


def _local_batch_size(global_batch_size: int, process_count: int, process_index: int) -> int:
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index {process_index} not in [0, process_count={process_count})")
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise DataError(
            f"global batch_size {global_batch_size} must be positive and divisible by "
            f"process_count {process_count}"
        )
    return global_batch_size // process_count


def _read_options(prefetch: int) -> grain.ReadOptions:
    # One background thread reading whole batches (see pipeline.py: more threads only fight
    # over the GIL on small machines).
    return grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)
