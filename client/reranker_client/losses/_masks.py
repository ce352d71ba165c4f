"""The logits a step masks, in the form the loss loop applies them mini-batch by mini-batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._candidates import Block, Candidates


@dataclass
class GuideMasks:
    """The logits of one step that are masked, per block, as row-sorted ``(rows, cols)`` tensors."""

    blocks: list[Block]
    rows: list[Tensor]
    cols: list[Tensor]
    thresholds: Tensor
    #: Masked candidates (the self pairs of aa and pp, always masked, not included).
    masked_candidates: int

    @classmethod
    def of(
        cls,
        blocks: Sequence[Block],
        candidates: Candidates,
        masked: np.ndarray,
        thresholds: np.ndarray,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
    ) -> GuideMasks:
        """The masks of the ``masked`` candidates, plus the self pairs of aa and pp."""
        diagonal = np.arange(batch_size, dtype=np.int64)
        all_rows, all_cols = [], []
        for index, block in enumerate(blocks):
            pick = masked & (candidates.block == index)
            rows, cols = candidates.row[pick], candidates.col[pick]
            if block.masks_diagonal:
                rows, cols = np.concatenate([rows, diagonal]), np.concatenate([cols, diagonal])
            order = np.argsort(rows, kind="stable")
            all_rows.append(torch.as_tensor(rows[order], device=device))
            all_cols.append(torch.as_tensor(cols[order], device=device))
        return cls(
            blocks=list(blocks),
            rows=all_rows,
            cols=all_cols,
            thresholds=torch.as_tensor(thresholds, device=device),
            masked_candidates=int(masked.sum()),
        )

    def apply(self, block_index: int, sim: Tensor, begin: int) -> Tensor:
        """Set the masked logits of rows ``begin : begin + len(sim)`` of a block to ``-inf``."""
        rows, cols = self.rows[block_index], self.cols[block_index]
        lo = int(torch.searchsorted(rows, begin))
        hi = int(torch.searchsorted(rows, begin + sim.shape[0]))
        if hi > lo:
            sim[rows[lo:hi] - begin, cols[lo:hi]] = -torch.inf
        return sim

    def masked_set(self, *, include_self_pairs: bool = False) -> set[tuple[str, int, int]]:
        """The masked logits as ``(block name, row, col)`` (for tests and reports)."""
        out = set()
        for block, rows, cols in zip(self.blocks, self.rows, self.cols):
            for r, c in zip(rows.tolist(), cols.tolist()):
                if include_self_pairs or not (block.masks_diagonal and r == c):
                    out.add((block.name, r, c))
        return out
