"""Whole documents packed into rows for language modeling (config.data.packing=documents).

Letters: D documents, N rows, L = seq_len, R = L + 1 tokens per row.

A document is its tokens plus the end-of-document token, as in the windows stream
(tokenize.py). It is cut into pieces of at most R tokens that overlap by one token (piece p
covers tokens [p L, p L + R)), so every token after a document's first is a target exactly
once, as with windows. The pieces, in document order, fill rows next-fit: a piece that does not
fit in the current row's free space starts a new row, and the rest of the row is padding.
`segment_ids` number the pieces of a row 1, 2, ... (0 = padding) and `positions` count from 0
within each piece, so the model (gpt, llama) attends only within a piece and restarts positions.

A row becomes inputs = tokens[:-1], labels = tokens[1:], the inputs' segment ids and positions,
and mask = 1 where input and label belong to the same piece: the target that would cross into
the next document (or into padding) is not counted.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

PACKINGS = ("none", "documents")


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Rows of R tokens: int32 tokens (pad id at padding), segment ids and positions."""

    tokens_NxR: np.ndarray
    segments_NxR: np.ndarray
    positions_NxR: np.ndarray


def document_pieces(docs_D: list[np.ndarray], seq_len: int) -> Iterator[np.ndarray]:
    """Each document cut into pieces of <= seq_len + 1 tokens overlapping by one; a document
    of one token predicts nothing and gives no piece."""
    for ids in docs_D:
        for start in range(0, len(ids) - 1, seq_len):
            yield ids[start : start + seq_len + 1]


def pack_documents(docs_D: list[np.ndarray], *, seq_len: int, pad_id: int) -> PackedRows:
    """The documents' pieces placed next-fit into rows of seq_len + 1 tokens."""
    width = seq_len + 1
    pieces = list(document_pieces(docs_D, seq_len))
    places, row, col = [], 0, 0
    for piece in pieces:
        if col + len(piece) > width:
            row, col = row + 1, 0
        places.append((row, col))
        col += len(piece)
    shape = (row + 1 if pieces else 0, width)
    tokens = np.full(shape, pad_id, np.int32)
    segments = np.zeros(shape, np.int32)
    positions = np.zeros(shape, np.int32)
    segment, last_row = 0, -1
    for piece, (row, col) in zip(pieces, places, strict=True):
        segment = segment + 1 if row == last_row else 1
        last_row = row
        tokens[row, col : col + len(piece)] = piece
        segments[row, col : col + len(piece)] = segment
        positions[row, col : col + len(piece)] = np.arange(len(piece))
    return PackedRows(tokens, segments, positions)


def read_rows(rows: PackedRows, indices_B: np.ndarray) -> dict[str, np.ndarray]:
    """Rows `indices_B` as a language-modeling batch with segment_ids and positions [B, L]."""
    tokens = rows.tokens_NxR[indices_B]
    segments = rows.segments_NxR[indices_B]
    return {
        "inputs": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "mask": (segments[:, 1:] == segments[:, :-1]) & (segments[:, :-1] > 0),
        "segment_ids": segments[:, :-1],
        "positions": rows.positions_NxR[indices_B][:, :-1],
    }
