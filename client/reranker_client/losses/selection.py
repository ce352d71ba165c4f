"""Selection strategies: which in-batch candidates a reranker-guided loss asks the reranker about.

Pass one to either loss as ``selection=...``:

- :class:`AllCandidates` (the plain loss's default): every candidate, about ``blocks x B**2``
  pairs per step; the masks equal ``CachedGISTEmbedLoss``'s for the same guide.
- :class:`RecallBudget` (the optimized loss's default): a batch-scaled share of the candidates the
  student ranks highest, grown within a ceiling until the estimated recall reaches a target.
- :class:`PerAnchorTopK` (the presets ``PerAnchorTopK.preset("balanced")``, ...): each anchor's
  candidates its student similarity ranks highest, up to a per-anchor budget.

A candidate that is not asked about keeps its logit (it is treated as a true negative); one that
is asked about is masked exactly as in the plain loss. A strategy is a frozen configuration: its
:meth:`~SelectionStrategy.start` gives each loss a selector of its own, which may carry state
from step to step (a :class:`RecallBudget`'s budgets do), so one strategy object can configure
several losses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from ._candidates import Block, all_candidates, naive_pairs
from ._judge import GuideJudge, Selection, judge_all
from ._prefilter import PRESETS, PerAnchorTopK
from ._recall_budget import RecallBudget
from ._texts import StepTexts

logger = logging.getLogger(__name__)

#: Pairs per step above which :class:`AllCandidates` warns (4 blocks x 500**2).
LARGE_STEP_PAIRS = 1_000_000

__all__ = [
    "PRESETS",
    "AllCandidates",
    "PerAnchorTopK",
    "RecallBudget",
    "Selection",
    "SelectionStrategy",
    "Selector",
]


class Selector(Protocol):
    """One loss's running selection: called once per step, it calls ``judge`` once per round."""

    def __call__(
        self,
        columns: Sequence[Tensor],
        blocks: Sequence[Block],
        step: StepTexts,
        judge: GuideJudge,
    ) -> Selection:
        """Pick candidates from the student's embeddings (``columns``) and have them judged."""
        ...


class SelectionStrategy(Protocol):
    """What ``selection=`` takes: a configuration that starts one selector per loss."""

    def start(self, *, chunk_size: int, show_progress_bar: bool = False) -> Selector:
        """A selector for one loss (``chunk_size``: rows per chunk of student similarities)."""
        ...


@dataclass(frozen=True)
class AllCandidates:
    """Selection strategy: ask the reranker about every in-batch candidate (one call per step).

    About ``blocks x B**2`` pairs per step (4.2M for a batch of 1024 triplets), minus repeated
    texts; above a few hundred anchors use :class:`RecallBudget`.
    """

    def start(self, *, chunk_size: int = 0, show_progress_bar: bool = False) -> _AllSelector:
        """The selector a loss runs every step (it warns once when a step is very large)."""
        return _AllSelector()


class _AllSelector:
    def __init__(self) -> None:
        self._warned_large_step = False

    def __call__(
        self,
        columns: Sequence[Tensor],
        blocks: Sequence[Block],
        step: StepTexts,
        judge: GuideJudge,
    ) -> Selection:
        batch_size = columns[0].shape[0]
        pairs = naive_pairs(blocks, batch_size)
        if pairs > LARGE_STEP_PAIRS and not self._warned_large_step:
            self._warned_large_step = True
            logger.warning(
                "selection=AllCandidates() asks the reranker about up to %s pairs per step at "
                "batch size %d (%d blocks x B^2), minus repeated texts; above a few hundred "
                "anchors selection=RecallBudget() (OptimizedRerankerCachedGISTEmbedLoss's "
                "default) sends about 1-2%% of them.",
                f"{pairs:,}",
                batch_size,
                len(blocks),
            )
        return judge_all(all_candidates(blocks, batch_size), judge)
