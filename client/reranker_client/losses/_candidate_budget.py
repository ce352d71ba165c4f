"""The optimized loss's default selection: a batch-scaled candidate budget that holds a recall.

Which in-batch candidates are false negatives is known only to the reranker. The student ranks
every block's candidates by ``cos(query_i, document_j) - cos(anchor_i, positive_i)`` (how much
closer the candidate is than the anchor's own positive, the quantity GIST compares) and the
loss sends a prefix of that ranking. How long a prefix is needed depends on the batch, the data
and how well the student ranks, so the loss measures it instead of guessing:

- Budgets are shares of each block's ``B**2`` candidates (so they scale with the batch) and are
  kept per block, so that one block (typically anchor-anchor) cannot crowd the others out.
- Each step also scores a small random *audit* sample of the candidates it did not send, drawn
  from strata of the ranking (the next bands, doubling in size, then the rest), and estimates
  from it how many false negatives were missed: the estimated recall of the step.
- With ``target_recall``, while the estimate is below the target the step sends the next band of
  the block with the most estimated misses (another ``score_pairs`` call), up to
  ``max_budget_ratio``; the next step starts from the budget this one needed, shrinking slowly
  when the target was met without growing.

Everything here is pure (no I/O): :meth:`CandidateBudget.run` gets a ``judge`` that scores
candidates and says which are masked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ._reranker_guide import Block, Candidates, Selection

logger = logging.getLogger(__name__)

#: Fraction by which a block's starting budget shrinks after a step that met the target unaided.
_SHRINK = 0.8
#: Fewest audit samples per stratum: below this the estimate is mostly noise.
_MIN_AUDIT_PER_STRATUM = 32
#: Strata of the ranking beyond the sent prefix: bands of 1, 2, 4, 8 x the prefix, then the rest.
_BANDS = 4


class Judge(Protocol):
    """Scores candidates (one ``score_pairs`` call) and says which are masked."""

    @property
    def scored_pairs(self) -> int:
        """Distinct pairs scored so far in the step: what the budget counts."""
        ...

    def __call__(self, candidates: Candidates) -> np.ndarray: ...


@dataclass(frozen=True)
class BudgetConfig:
    """The optimized loss's default candidate budget (see the module docstring).

    Attributes:
        budget_ratio: Starting share of each block's ``B**2`` candidates sent in a step's first
            call.
        max_budget_ratio: Most pairs a step may send, as a share of the naive pairs
            (``blocks x B**2``), audit included.
        target_recall: Estimated recall a step grows its budget to reach (``None``: never grow).
        audit_ratio: Audit sample per block, as a share of its ``B**2`` candidates.
        seed: Seed of the audit sampling.
    """

    budget_ratio: float = 0.004
    max_budget_ratio: float = 0.015
    target_recall: float | None = 0.99
    audit_ratio: float = 0.0005
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("budget_ratio", "max_budget_ratio", "audit_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.budget_ratio > self.max_budget_ratio:
            raise ValueError(
                f"budget_ratio ({self.budget_ratio}) exceeds max_budget_ratio "
                f"({self.max_budget_ratio}); lower budget_ratio or raise max_budget_ratio"
            )
        if self.target_recall is not None and not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1] or None, got {self.target_recall}")


@dataclass
class _Stratum:
    """A band of a block's ranking beyond the sent prefix, and its audit sample."""

    begin: int
    end: int
    size: int
    sampled: np.ndarray
    hits: int = 0

    def estimated_misses(self) -> float:
        if not len(self.sampled):
            return 0.0
        return self.hits * (self.size / len(self.sampled)) - self.hits


@dataclass
class _BlockRanking:
    """One block's candidates, best first (flat ``row * B + col`` indices), and its strata."""

    order: np.ndarray
    rest: _Stratum
    sent: int
    strata: list[_Stratum]
    identical: np.ndarray


class CandidateBudget:
    """The per-block budgets of the optimized loss, carried from one step to the next."""

    def __init__(self, config: BudgetConfig) -> None:
        self.config = config
        self._ratio: dict[str, float] = {}
        self._rng = np.random.default_rng(config.seed)
        self._warned_short = False

    def ratios(self) -> dict[str, float]:
        """Each block's current starting budget, as a share of its ``B**2`` candidates."""
        return dict(self._ratio)

    def run(
        self,
        columns: Sequence[Tensor],
        text_ids: Sequence[np.ndarray],
        blocks: Sequence[Block],
        judge: Judge,
    ) -> Selection:
        """Send each block's budget plus the audit, then grow it while recall is below target."""
        batch_size = columns[0].shape[0]
        area = batch_size * batch_size
        cap = max(1, int(self.config.max_budget_ratio * len(blocks) * area))
        rankings = [self._rank(columns, text_ids, block, cap, area, batch_size) for block in blocks]
        first = []
        for index, ranking in enumerate(rankings):
            first.append(_flat_candidates(index, ranking.order[: ranking.sent], batch_size))
            # Masked by identity in the judge, without a call; listed so that the masks hold them.
            first.append(_flat_candidates(index, ranking.identical, batch_size))
            for stratum in [*ranking.strata, ranking.rest]:
                first.append(_flat_candidates(index, stratum.sampled, batch_size))
        sent = Candidates.concat(first)
        masked = judge(sent)
        scored = [sent]
        verdicts = [masked]
        self._record_audit(rankings, sent, masked, batch_size)
        found = int(masked.sum())
        audit = sum(len(s.sampled) for r in rankings for s in [*r.strata, r.rest])
        grew = [False] * len(blocks)
        target = self.config.target_recall
        while target is not None and _recall(found, rankings) < target:
            grow = _most_missing(rankings)
            if grow is None:
                break
            index = grow
            ranking = rankings[index]
            stratum = ranking.strata.pop(0)
            room = cap - judge.scored_pairs
            if room <= 0:
                break
            # The band, cut short where the cap ends it.
            end = min(stratum.end, stratum.begin + room)
            extra = np.setdiff1d(ranking.order[stratum.begin : end], stratum.sampled)
            stratum.end = end
            more = _flat_candidates(index, extra, batch_size)
            more_masked = judge(more)
            scored.append(more)
            verdicts.append(more_masked)
            found += int(more_masked.sum())
            ranking.sent = stratum.end
            grew[index] = True
        floor = self.config.budget_ratio * 0.1
        for block, ranking, grown in zip(blocks, rankings, grew):
            current = self._ratio.get(block.name, self.config.budget_ratio)
            # Start the next step where this one ended when it had to grow; else creep down, so
            # that a budget grown for one hard batch does not stay high for good.
            self._ratio[block.name] = (
                ranking.sent / area if grown else max(current * _SHRINK, floor)
            )
        recall = _recall(found, rankings)
        if target is not None and recall < target and not self._warned_short:
            self._warned_short = True
            logger.warning(
                "Estimated recall %.1f%% is below target_recall=%.1f%% after growing the "
                "budget to %s pairs (ceiling: max_budget_ratio=%s of the naive pairs): the "
                "student ranks the false negatives poorly, or they lie beyond what the budget "
                "reaches. Raise max_budget_ratio or use a stronger student; "
                "stats.estimated_recall reports it every step.",
                100 * recall,
                100 * target,
                f"{judge.scored_pairs:,}",
                self.config.max_budget_ratio,
            )
        return Selection(
            candidates=Candidates.concat(scored),
            masked=np.concatenate(verdicts),
            audit_pairs=audit,
            estimated_recall=recall,
        )

    @torch.no_grad()
    def _rank(
        self,
        columns: Sequence[Tensor],
        text_ids: Sequence[np.ndarray],
        block: Block,
        cap: int,
        area: int,
        batch_size: int,
    ) -> _BlockRanking:
        normalized = [torch.nn.functional.normalize(c.detach().float(), dim=-1) for c in columns]
        own = (normalized[0] * normalized[1]).sum(-1, keepdim=True)
        score = normalized[block.query_column] @ normalized[block.document_column].T - own
        query_ids = torch.as_tensor(text_ids[block.query_column], device=score.device)
        document_ids = torch.as_tensor(text_ids[block.document_column], device=score.device)
        # Identical texts are decided by identity (see decide_masks), never sent.
        invalid = query_ids[:, None] == document_ids[None, :]
        if block.has_diagonal_pair:
            invalid.fill_diagonal_(True)
        identical = invalid.clone()
        if block.has_diagonal_pair:
            identical.fill_diagonal_(False)
        flat = score.masked_fill(invalid, -math.inf).flatten()
        valid = int((~invalid).sum())
        start = min(
            valid, max(1, math.ceil(self._ratio.get(block.name, self.config.budget_ratio) * area))
        )
        depth = min(valid, max(start, min(cap, start * 2**_BANDS)))
        values, order = torch.topk(flat, depth)
        order_np = order.cpu().numpy()
        per_stratum = max(
            _MIN_AUDIT_PER_STRATUM, math.ceil(self.config.audit_ratio * area / (_BANDS + 1))
        )
        strata = []
        begin = start
        while begin < depth:
            end = min(depth, begin * 2)
            band = order_np[begin:end]
            take = min(len(band), per_stratum)
            strata.append(
                _Stratum(begin, end, len(band), self._rng.choice(band, take, replace=False))
            )
            begin = end
        rest_size = valid - depth
        rest_sample = np.zeros(0, dtype=np.int64)
        if rest_size > 0:
            draws = self._rng.integers(0, area, per_stratum * 4)
            floor = float(values[-1]) if depth else math.inf
            drawn = flat[torch.as_tensor(draws)]
            ok = ((drawn < floor) & (drawn > -math.inf)).cpu().numpy()
            rest_sample = np.unique(draws[ok])[:per_stratum]
        rest = _Stratum(depth, depth, rest_size, rest_sample)
        identical_flat = torch.nonzero(identical.flatten()).flatten().cpu().numpy()
        return _BlockRanking(order_np, rest, start, strata, identical_flat)

    @staticmethod
    def _record_audit(
        rankings: Sequence[_BlockRanking],
        sent: Candidates,
        masked: np.ndarray,
        batch_size: int,
    ) -> None:
        key = sent.block * batch_size * batch_size + sent.row * batch_size + sent.col
        hit_keys = set(key[masked].tolist())
        area = batch_size * batch_size
        for index, ranking in enumerate(rankings):
            for stratum in [*ranking.strata, ranking.rest]:
                stratum.hits = sum(
                    1 for flat in (stratum.sampled + index * area).tolist() if flat in hit_keys
                )


def _flat_candidates(block_index: int, flat: np.ndarray, batch_size: int) -> Candidates:
    flat = np.asarray(flat, dtype=np.int64)
    return Candidates(
        np.full(flat.shape, block_index, dtype=np.int64), flat // batch_size, flat % batch_size
    )


def _recall(found: int, rankings: Sequence[_BlockRanking]) -> float:
    missed = sum(s.estimated_misses() for r in rankings for s in [*r.strata, r.rest])
    return found / (found + missed) if found + missed > 0 else 1.0


def _most_missing(rankings: Sequence[_BlockRanking]) -> int | None:
    """The block whose unsent bands hold the most estimated misses (``None``: none left).

    Its next band is sent even if that band's own sample found nothing: with a weak student the
    false negatives are spread thinly down the ranking, and the later bands are only reached
    through the earlier ones.
    """
    best, best_misses = None, 0.0
    for index, ranking in enumerate(rankings):
        misses = sum(stratum.estimated_misses() for stratum in ranking.strata)
        if misses > best_misses:
            best, best_misses = index, misses
    return best
