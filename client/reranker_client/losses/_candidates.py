"""The logits a GIST loss may mask: its similarity blocks and their candidates.

A GIST loss concatenates similarity blocks (anchor-positive, anchor-anchor, positive-positive,
anchor-negative) into one logit row per anchor. A *candidate* is one logit ``(block, row, col)``
that the guide may mask; the diagonal pairs of ap (the own positive), aa and pp (a text against
itself) are never candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Block:
    """One similarity block of the loss: rows from ``query_column``, columns ``document_column``.

    Columns are the loss inputs: 0 anchors, 1 positives, 2+ negatives.
    """

    name: str
    query_column: int
    document_column: int

    @property
    def has_diagonal_pair(self) -> bool:
        """Whether entry ``(i, i)`` is the threshold pair (ap) or a text against itself (aa, pp)."""
        return self.document_column <= 1

    @property
    def masks_diagonal(self) -> bool:
        """Whether entry ``(i, i)`` is always masked: a text is never its own negative (aa, pp)."""
        return self.query_column == self.document_column


def loss_blocks(n_columns: int, *, contrast_anchors: bool, contrast_positives: bool) -> list[Block]:
    """The blocks of the loss's logit row, in the order it concatenates them."""
    if n_columns < 2:
        raise ValueError(
            f"the loss needs (anchor, positive[, negative...]) columns, got {n_columns} column(s)"
        )
    blocks = [Block("ap", 0, 1)]
    if contrast_anchors:
        blocks.append(Block("aa", 0, 0))
    if contrast_positives:
        blocks.append(Block("pp", 1, 1))
    for column in range(2, n_columns):
        blocks.append(Block("an" if n_columns == 3 else f"an{column - 1}", 0, column))
    return blocks


@dataclass
class Candidates:
    """Logits whose guide score the loss asks for, as parallel arrays ``(block, row, col)``."""

    block: np.ndarray
    row: np.ndarray
    col: np.ndarray

    def __len__(self) -> int:
        return int(self.block.shape[0])

    def flat_keys(self, batch_size: int) -> np.ndarray:
        """One integer per candidate: ``block * B**2 + row * B + col``."""
        return (self.block * batch_size + self.row) * batch_size + self.col

    def split(self, k: int) -> tuple[Candidates, Candidates]:
        """The first ``k`` candidates and the rest."""
        return (
            Candidates(self.block[:k], self.row[:k], self.col[:k]),
            Candidates(self.block[k:], self.row[k:], self.col[k:]),
        )

    @classmethod
    def from_flat_keys(cls, keys: np.ndarray, batch_size: int) -> Candidates:
        """The candidates of :meth:`flat_keys`' integers."""
        keys = np.asarray(keys, dtype=np.int64)
        flat = keys % (batch_size * batch_size)
        return cls(keys // (batch_size * batch_size), flat // batch_size, flat % batch_size)

    def text_ids(
        self, blocks: Sequence[Block], column_ids: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (query, document) text ids of each candidate (``column_ids``: per input column)."""
        query_ids = np.stack([np.asarray(column_ids[block.query_column]) for block in blocks])
        document_ids = np.stack([np.asarray(column_ids[block.document_column]) for block in blocks])
        return query_ids[self.block, self.row], document_ids[self.block, self.col]

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty.copy(), empty.copy())
        return cls(
            np.concatenate([p.block for p in parts]),
            np.concatenate([p.row for p in parts]),
            np.concatenate([p.col for p in parts]),
        )


def candidates_per_row(blocks: Sequence[Block], batch_size: int) -> int:
    """Candidates in one anchor's logit row: every logit but the diagonal pairs of ap, aa, pp."""
    return len(blocks) * batch_size - sum(block.has_diagonal_pair for block in blocks)


def naive_pairs(blocks: Sequence[Block], batch_size: int) -> int:
    """Pairs a guide that scores every logit would score: ``len(blocks) * B**2``."""
    return len(blocks) * batch_size * batch_size


def all_candidates(blocks: Sequence[Block], batch_size: int) -> Candidates:
    """Every candidate of every row (the plain loss asks about all of them)."""
    rows = np.repeat(np.arange(batch_size, dtype=np.int64), batch_size)
    cols = np.tile(np.arange(batch_size, dtype=np.int64), batch_size)
    parts = []
    for index, block in enumerate(blocks):
        keep = rows != cols if block.has_diagonal_pair else slice(None)
        r, c = rows[keep], cols[keep]
        parts.append(Candidates(np.full(r.shape, index, dtype=np.int64), r, c))
    return Candidates.concat(parts)
