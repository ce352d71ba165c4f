"""The per-anchor selection (the presets): each anchor's candidates the student ranks highest.

For every anchor the candidates of all blocks are pooled; two thresholds on the student's own
cosine drop the clear negatives and the most similar survivors are kept, up to a per-anchor
budget. It does not estimate what it misses (``estimated_recall`` is NaN).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import torch
import tqdm
from torch import Tensor

from ._candidates import Block, Candidates, candidates_per_row
from ._judge import GuideJudge, Selection, judge_all
from ._texts import StepTexts

PresetName = Literal["conservative", "balanced", "aggressive"]


@dataclasses.dataclass(frozen=True)
class PerAnchorTopK:
    """Selection strategy: each anchor's candidates that its student similarity ranks highest.

    For every anchor the candidates of all blocks are pooled and filtered:

    1. ``similarity_threshold``: a student cosine below it marks a clear negative, never sent;
    2. ``hybrid_threshold``: a candidate is sent only when its student similarity exceeds
       ``hybrid_threshold`` times the anchor's student similarity to its own positive;
    3. of the survivors, the ``max(min_top_k, ceil(top_k_ratio x C))`` most similar are kept,
       ``C`` being the candidates in the anchor's row, and at most ``max_candidates`` (which
       binds for B above about 1000).

    The defaults are the "balanced" preset; :meth:`preset` gives the others. With
    ``PerAnchorTopK(-1, 1, 0, None, 0)`` every candidate is sent, as by ``AllCandidates()``.

    Attributes:
        similarity_threshold: A candidate whose student cosine is below this is a clear negative
            and never sent (``-1`` sends all).
        top_k_ratio: Keep at most this share of an anchor's row (all blocks together) ...
        min_top_k: ... but at least this many (when that many pass the thresholds) ...
        max_candidates: ... and never more than this many per anchor (``None``: no cap).
        hybrid_threshold: Send a candidate only when its student similarity exceeds this times the
            anchor's student similarity to its own positive (``0`` turns this filter off).
    """

    similarity_threshold: float = 0.3
    top_k_ratio: float = 0.1
    min_top_k: int = 10
    max_candidates: int | None = 100
    hybrid_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.top_k_ratio <= 1.0:
            raise ValueError(f"top_k_ratio must be in (0, 1], got {self.top_k_ratio}")
        if self.min_top_k < 0:
            raise ValueError(f"min_top_k must be >= 0, got {self.min_top_k}")
        if self.max_candidates is not None and self.max_candidates < 0:
            raise ValueError(f"max_candidates must be >= 0 or None, got {self.max_candidates}")
        if self.max_candidates is not None and self.min_top_k > self.max_candidates:
            raise ValueError(
                f"min_top_k ({self.min_top_k}) exceeds max_candidates ({self.max_candidates}); "
                "lower min_top_k or raise max_candidates"
            )
        if self.hybrid_threshold < 0:
            raise ValueError(
                f"hybrid_threshold must be >= 0 (0 turns it off), got {self.hybrid_threshold}"
            )

    def row_budget(self, row_candidates: int) -> int:
        """Most candidates one anchor may send, out of ``row_candidates``."""
        k = max(self.min_top_k, math.ceil(self.top_k_ratio * row_candidates))
        if self.max_candidates is not None:
            k = min(k, self.max_candidates)
        return min(k, row_candidates)

    @classmethod
    def preset(cls, name: PresetName, **overrides: Any) -> PerAnchorTopK:
        """A preset of :data:`PRESETS` ("conservative" sends the most, "aggressive" the fewest),
        with single values overridden: ``PerAnchorTopK.preset("aggressive", max_candidates=6)``.
        """
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}.")
        return dataclasses.replace(PRESETS[name], **overrides)

    def start(self, *, chunk_size: int, show_progress_bar: bool = False) -> _PerAnchorSelector:
        """The selector a loss runs every step (stateless: the same filter each step)."""
        return _PerAnchorSelector(self, chunk_size, show_progress_bar)


#: (similarity_threshold, top_k_ratio, min_top_k, max_candidates, hybrid_threshold)
PRESETS: dict[str, PerAnchorTopK] = {
    "conservative": PerAnchorTopK(0.2, 0.2, 20, 200, 0.4),
    "balanced": PerAnchorTopK(0.3, 0.1, 10, 100, 0.5),
    "aggressive": PerAnchorTopK(0.4, 0.05, 5, 50, 0.6),
}


@torch.no_grad()
def prefilter_candidates(
    columns: Sequence[Tensor],
    blocks: Sequence[Block],
    config: PerAnchorTopK,
    *,
    chunk_size: int = 256,
    progress: Any = None,
) -> Candidates:
    """Pick each anchor's likely false negatives from the student's own embeddings.

    ``columns`` are the student's embeddings of each input column (``B x dim``). For every anchor
    the candidates of all blocks are pooled, the similarity and hybrid thresholds drop the clear
    negatives, and the :meth:`PerAnchorTopK.row_budget` most similar survivors are kept.
    ``progress`` wraps the chunk iterator (e.g. a ``tqdm`` partial); ``None`` for none.
    """
    normalized = [torch.nn.functional.normalize(c.detach().float(), dim=-1) for c in columns]
    batch_size = normalized[0].shape[0]
    budget = config.row_budget(candidates_per_row(blocks, batch_size))
    if budget == 0:
        return Candidates.concat([])
    starts = range(0, batch_size, chunk_size)
    parts = []
    for begin in progress(starts) if progress is not None else starts:
        end = min(begin + chunk_size, batch_size)
        rows = torch.arange(begin, end, device=normalized[0].device)
        sims, valid = [], []
        for block in blocks:
            sim = normalized[block.query_column][begin:end] @ normalized[block.document_column].T
            ok = torch.ones_like(sim, dtype=torch.bool)
            if block.has_diagonal_pair:
                ok[rows - begin, rows] = False
            sims.append(sim)
            valid.append(ok)
        sim = torch.cat(sims, dim=1)
        ok = torch.cat(valid, dim=1)
        if config.similarity_threshold > -1.0:
            ok &= sim >= config.similarity_threshold
        if config.hybrid_threshold > 0.0:
            own = (normalized[0][begin:end] * normalized[1][begin:end]).sum(-1, keepdim=True)
            ok &= sim > config.hybrid_threshold * own
        ranked = sim.masked_fill(~ok, -math.inf)
        values, flat = torch.topk(ranked, budget, dim=1)
        keep = values > -math.inf
        local_row = torch.arange(end - begin, device=flat.device).unsqueeze(1).expand_as(flat)
        picked = flat[keep].cpu().numpy()
        picked_rows = local_row[keep].cpu().numpy() + begin
        parts.append(Candidates(picked // batch_size, picked_rows, picked % batch_size))
    return Candidates.concat(parts)


class _PerAnchorSelector:
    """Runs :class:`PerAnchorTopK` on a step: one judge call for the pre-filtered candidates."""

    def __init__(self, config: PerAnchorTopK, chunk_size: int, show_progress_bar: bool) -> None:
        self.config = config
        self.chunk_size = chunk_size
        self.progress = partial(
            tqdm.tqdm, desc="Pre-filtering candidates", disable=not show_progress_bar
        )

    def __call__(
        self,
        columns: Sequence[Tensor],
        blocks: Sequence[Block],
        step: StepTexts,
        judge: GuideJudge,
    ) -> Selection:
        candidates = prefilter_candidates(
            columns, blocks, self.config, chunk_size=self.chunk_size, progress=self.progress
        )
        return judge_all(candidates, judge, estimated_recall=math.nan)
