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
- With ``target_recall``, while the estimate is below the target, the step first asks about the
  candidates its false negatives so far imply (the guide-verified expansion of
  :mod:`._verdict_expansion`: a false negative between two rows' texts makes the other blocks'
  pairs between them, and pairs two verified links apart, likely false negatives too, whatever
  the student thinks of them), round after round while new links appear; when the expansion
  has nothing new, it sends the next band of the block with the most estimated misses. Each
  round is another ``score_pairs`` call; all stop at ``max_budget_ratio``, counted in distinct
  text pairs (what the judge scores). The next step starts from the band budget this one
  needed, shrinking slowly when the target was met without growing.
- A stratum's estimated misses are the false negatives its sample promises (``hits x size /
  sampled``) less those any round found in it (the sample's own, the expansion's), never below
  0: the expansion scores pairs inside audited strata, and what it found there is not missed.
  With few sample hits per stratum the estimate is noisy, in both directions.

Everything here is pure (no I/O): :meth:`CandidateBudget.run` gets a ``judge`` that scores
candidates and says which are masked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ._candidates import Block, Candidates
from ._judge import Selection
from ._sorted_keys import first_occurrences, in_sorted, merge_sorted
from ._texts import StepTexts, identical
from ._verdict_expansion import VerdictExpansion

logger = logging.getLogger(__name__)

#: Fraction by which a block's starting budget shrinks after a step that met the target unaided.
_SHRINK = 0.8
#: Fewest audit samples per stratum: below this the estimate is mostly noise.
_MIN_AUDIT_PER_STRATUM = 32
#: The rest of the ranking (most of a block) gets this many times a band's audit sample: its
#: false negatives are sparse, and the expansion finds many of them, so its estimate needs more.
_REST_AUDIT = 4
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
class RecallBudget:
    """Selection strategy (the optimized loss's default): a batch-scaled budget holding a recall.

    Each block sends the top ``budget_ratio`` of its ``B**2`` candidates, ranked by the student's
    ``cos(query_i, document_j) - cos(anchor_i, positive_i)``; an audit sample of the rest
    estimates the recall, and while it is below ``target_recall`` the step asks about what the
    verdicts imply and then the next band of the ranking, up to ``max_budget_ratio`` (see
    :mod:`reranker_client.losses._recall_budget`). The budgets carry over from step to step.

    Attributes:
        budget_ratio: Starting share of each block's ``B**2`` candidates sent in a step's first
            call.
        max_budget_ratio: Most pairs a step may send, as a share of the naive pairs
            (``blocks x B**2``), audit included.
        target_recall: Estimated recall a step grows its budget to reach (``None``: never grow).
        audit_ratio: Audit sample per block, as a share of its ``B**2`` candidates.
        seed: Seed of the audit sampling.
        expand: Whether the step asks about the candidates its false negatives imply (the
            guide-verified expansion of :mod:`._verdict_expansion`) before growing a band.
    """

    budget_ratio: float = 0.004
    max_budget_ratio: float = 0.015
    target_recall: float | None = 0.99
    audit_ratio: float = 0.0005
    seed: int = 0
    expand: bool = True

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

    def start(self, *, chunk_size: int = 0, show_progress_bar: bool = False) -> CandidateBudget:
        """The selector a loss runs every step: its budgets carry from one step to the next."""
        return CandidateBudget(self)


@dataclass
class _Stratum:
    """A band of a block's ranking beyond the sent prefix, and its audit sample.

    ``hits``: false negatives in the audit sample; ``found``: false negatives in the stratum
    found by any round (the sample's, the expansion's, ...).
    """

    begin: int
    end: int
    size: int
    sampled: np.ndarray
    hits: int = 0
    found: int = 0

    def estimated_misses(self) -> float:
        """False negatives of the stratum not found: the sample's estimate of all of them, less
        those found, and never below 0.

        Without expansion ``found`` is ``hits`` and this is the usual ``hits * (size / n - 1)``;
        when other rounds scored pairs inside the stratum, what they found is no longer missed.
        """
        if not len(self.sampled):
            return 0.0
        return max(0.0, self.hits * (self.size / len(self.sampled)) - self.found)


@dataclass
class _BlockRanking:
    """One block's candidates, best first (flat ``row * B + col`` indices), and its strata.

    ``depth``: how far ``order`` goes; the ``rest`` stratum is every valid candidate beyond it.
    """

    order: np.ndarray
    rest: _Stratum
    sent: int
    strata: list[_Stratum]
    identical: np.ndarray
    depth: int
    #: Sorted positions (see :meth:`positions`) of the candidates found so far, identical texts
    #: left out: kept by :func:`_record_audit`.
    found_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _sorted: np.ndarray | None = None
    _where: np.ndarray | None = None

    def positions(self, flat: np.ndarray) -> np.ndarray:
        """Rank of each candidate (``row * B + col``) in ``order``; ``depth`` if beyond it."""
        if self._sorted is None:
            self._where = np.argsort(self.order, kind="stable")
            self._sorted = self.order[self._where]
        assert self._where is not None
        flat = np.asarray(flat, dtype=np.int64)
        out = np.full(flat.shape, self.depth, dtype=np.int64)
        if not len(self._sorted):
            return out
        at = np.minimum(np.searchsorted(self._sorted, flat), len(self._sorted) - 1)
        hit = self._sorted[at] == flat
        out[hit] = self._where[at[hit]]
        return out


class CandidateBudget:
    """The per-block budgets of the optimized loss, carried from one step to the next."""

    def __init__(self, config: RecallBudget) -> None:
        self.config = config
        self._ratio: dict[str, float] = {}
        self._rng = np.random.default_rng(config.seed)
        self._warned_short = False

    def ratios(self) -> dict[str, float]:
        """Each block's current starting budget, as a share of its ``B**2`` candidates."""
        return dict(self._ratio)

    def __call__(
        self,
        columns: Sequence[Tensor],
        blocks: Sequence[Block],
        step: StepTexts,
        judge: Judge,
    ) -> Selection:
        """The selector's call (see :meth:`run`)."""
        return self.run(columns, step.ids, blocks, judge)

    def run(
        self,
        columns: Sequence[Tensor],
        text_ids: Sequence[np.ndarray],
        blocks: Sequence[Block],
        judge: Judge,
    ) -> Selection:
        """Send each block's budget plus the audit, then expand and grow while below target."""
        batch_size = columns[0].shape[0]
        area = batch_size * batch_size
        cap = max(1, int(self.config.max_budget_ratio * len(blocks) * area))
        normalized = [torch.nn.functional.normalize(c.detach().float(), dim=-1) for c in columns]
        rankings = [
            self._rank(normalized, text_ids, block, cap, area, batch_size) for block in blocks
        ]
        ledger = _Ledger(text_ids, blocks, batch_size)
        first = []
        for index, ranking in enumerate(rankings):
            first.append(_flat_candidates(index, ranking.order[: ranking.sent], batch_size))
            # Masked by identity in the judge, without a call; listed so that the masks hold them.
            first.append(_flat_candidates(index, ranking.identical, batch_size))
            for stratum in [*ranking.strata, ranking.rest]:
                first.append(_flat_candidates(index, stratum.sampled, batch_size))
        ledger.send(judge, ledger.fresh(Candidates.concat(first)))
        _record_audit(rankings, ledger)
        audit = sum(len(s.sampled) for r in rankings for s in [*r.strata, r.rest])
        expansion = VerdictExpansion(normalized, text_ids, blocks) if self.config.expand else None
        if expansion is not None:
            expansion.add(ledger.candidates(), ledger.masked())
        grew = [False] * len(blocks)
        target = self.config.target_recall
        while target is not None and _recall(ledger.found, rankings) < target:
            room = cap - judge.scored_pairs
            if room <= 0:
                break
            if expansion is not None and expansion.pending:
                more = ledger.within(ledger.fresh(expansion.propose(ledger.scored_map)), room)
                if len(more):
                    masked = ledger.send(judge, more)
                    links = expansion.add(more, masked)
                    _record_audit(rankings, ledger)
                    logger.debug(
                        "expansion round: %d candidates, %d masked, %d new links; %d pairs scored",
                        len(more),
                        int(masked.sum()),
                        links,
                        judge.scored_pairs,
                    )
                continue
            grow = _most_missing(rankings)
            if grow is None:
                break
            index = grow
            ranking = rankings[index]
            stratum = ranking.strata.pop(0)
            band = _flat_candidates(index, ranking.order[stratum.begin : stratum.end], batch_size)
            fresh = ledger.fresh(band)
            more = ledger.within(fresh, room)
            if len(more) < len(fresh):
                # Cut short by the cap: the unsent rest of the band stays a stratum, with the
                # part of its audit sample that falls in it.
                end = stratum.begin
                if len(more):
                    last = more.row[-1:] * batch_size + more.col[-1:]
                    end = int(ranking.positions(last)[0]) + 1
                rest_of_band = stratum.sampled[ranking.positions(stratum.sampled) >= end]
                ranking.strata.insert(
                    0, _Stratum(end, stratum.end, stratum.end - end, rest_of_band)
                )
                stratum.end = end
            masked = ledger.send(judge, more)
            if expansion is not None:
                expansion.add(more, masked)
            logger.debug(
                "band round (%s): %d candidates, %d masked; %d pairs scored",
                blocks[index].name,
                len(more),
                int(masked.sum()),
                judge.scored_pairs,
            )
            ranking.sent = stratum.end
            grew[index] = True
            _record_audit(rankings, ledger)
        floor = self.config.budget_ratio * 0.1
        for block, ranking, grown in zip(blocks, rankings, grew):
            current = self._ratio.get(block.name, self.config.budget_ratio)
            # Start the next step where this one ended when it had to grow; else creep down, so
            # that a budget grown for one hard batch does not stay high for good.
            self._ratio[block.name] = (
                ranking.sent / area if grown else max(current * _SHRINK, floor)
            )
        recall = _recall(ledger.found, rankings)
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
            candidates=ledger.candidates(),
            masked=ledger.masked(),
            audit_pairs=audit,
            estimated_recall=recall,
        )

    @torch.no_grad()
    def _rank(
        self,
        normalized: Sequence[Tensor],
        text_ids: Sequence[np.ndarray],
        block: Block,
        cap: int,
        area: int,
        batch_size: int,
    ) -> _BlockRanking:
        own = (normalized[0] * normalized[1]).sum(-1, keepdim=True)
        score = normalized[block.query_column] @ normalized[block.document_column].T - own
        query_ids = torch.as_tensor(text_ids[block.query_column], device=score.device)
        document_ids = torch.as_tensor(text_ids[block.document_column], device=score.device)
        # Identical texts are masked by the judge without a call: listed, never ranked.
        invalid = identical(query_ids[:, None], document_ids[None, :])
        if block.has_diagonal_pair:
            invalid.fill_diagonal_(True)
        same_text = invalid.clone()
        if block.has_diagonal_pair:
            same_text.fill_diagonal_(False)
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
            draws = self._rng.integers(0, area, per_stratum * _REST_AUDIT * 4)
            floor = float(values[-1]) if depth else math.inf
            drawn = flat[torch.as_tensor(draws)]
            ok = ((drawn < floor) & (drawn > -math.inf)).cpu().numpy()
            rest_sample = np.unique(draws[ok])[: per_stratum * _REST_AUDIT]
        rest = _Stratum(depth, depth, rest_size, rest_sample)
        identical_flat = torch.nonzero(same_text.flatten()).flatten().cpu().numpy()
        return _BlockRanking(order_np, rest, start, strata, identical_flat, depth)


class _Ledger:
    """What a step has scored so far: each candidate once, its verdict, and the text pairs paid.

    The cap counts distinct text pairs (what the judge scores), so :meth:`within` cuts a
    proposal where its new text pairs would exceed the room left, not where its candidates
    would: repeated texts make many candidates free. Candidates are kept as bitmaps over
    ``blocks x B**2`` (1 byte each: 64 MB at B=4096 with four blocks), so that the many rounds
    of a step stay cheap.
    """

    def __init__(
        self, text_ids: Sequence[np.ndarray], blocks: Sequence[Block], batch_size: int
    ) -> None:
        self.batch_size = batch_size
        self.area = batch_size * batch_size
        self._query_ids = np.stack([np.asarray(text_ids[b.query_column]) for b in blocks])
        self._document_ids = np.stack([np.asarray(text_ids[b.document_column]) for b in blocks])
        self._n_texts = int(max(self._query_ids.max(), self._document_ids.max())) + 1
        self._parts: list[Candidates] = []
        self._verdicts: list[np.ndarray] = []
        self.scored_map = np.zeros(len(blocks) * self.area, dtype=bool)
        self.found_map = np.zeros(len(blocks) * self.area, dtype=bool)
        self._paid = np.zeros(0, dtype=np.int64)  # sorted text-pair keys
        self.found = 0  # distinct candidates masked so far (identical texts included)
        self._unrecorded: list[np.ndarray] = []  # keys found since the last newly_found()

    def fresh(self, candidates: Candidates) -> Candidates:
        """``candidates`` not scored before, each once, in their order."""
        keys = candidates.flat_keys(self.batch_size)
        keep = first_occurrences(keys, ~self.scored_map[keys])
        return Candidates(candidates.block[keep], candidates.row[keep], candidates.col[keep])

    def _text_pairs(self, candidates: Candidates) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's (query text, document text) as one key, and whether the two differ
        (identical texts are masked without being scored)."""
        q = self._query_ids[candidates.block, candidates.row]
        d = self._document_ids[candidates.block, candidates.col]
        return q * self._n_texts + d, ~identical(q, d)

    def within(self, candidates: Candidates, room: int) -> Candidates:
        """The longest prefix of ``candidates`` whose new distinct text pairs fit in ``room``."""
        pairs, differ = self._text_pairs(candidates)
        new = first_occurrences(pairs, differ & ~in_sorted(pairs, self._paid))
        fits = int(np.searchsorted(np.cumsum(new), room, side="right"))
        return Candidates(candidates.block[:fits], candidates.row[:fits], candidates.col[:fits])

    def send(self, judge: Judge, candidates: Candidates) -> np.ndarray:
        """One judge call (skipped when there is nothing to ask); returns the verdicts."""
        if not len(candidates):
            return np.zeros(0, dtype=bool)
        masked = np.asarray(judge(candidates), dtype=bool)
        pairs, differ = self._text_pairs(candidates)
        pairs = pairs[differ]
        self._paid = merge_sorted(self._paid, np.unique(pairs[~in_sorted(pairs, self._paid)]))
        self._parts.append(candidates)
        self._verdicts.append(masked)
        keys = candidates.flat_keys(self.batch_size)
        self.scored_map[keys] = True
        self.mark_found(keys[masked])
        return masked

    def mark_found(self, keys: np.ndarray) -> None:
        """Record masked candidates (by :meth:`Candidates.flat_keys`); :meth:`newly_found` hands
        on the new ones."""
        new = keys[~self.found_map[keys]]
        self.found += len(new)
        self.found_map[keys] = True
        self._unrecorded.append(new)

    def newly_found(self) -> np.ndarray:
        """Candidate keys first masked since the last call (each once)."""
        if not self._unrecorded:
            return np.zeros(0, dtype=np.int64)
        new = np.unique(np.concatenate(self._unrecorded))
        self._unrecorded = []
        return new

    def candidates(self) -> Candidates:
        return Candidates.concat(self._parts)

    def masked(self) -> np.ndarray:
        return np.concatenate(self._verdicts) if self._verdicts else np.zeros(0, dtype=bool)


def _record_audit(rankings: Sequence[_BlockRanking], ledger: _Ledger) -> None:
    """Each stratum's audit hits, and the false negatives found in it by any round.

    Incremental: only the candidates found since the last call are ranked, and merged into each
    block's sorted positions of those found before.
    """
    area = ledger.area
    new = ledger.newly_found()
    blocks = new // area
    for index, ranking in enumerate(rankings):
        found_map = ledger.found_map[index * area : (index + 1) * area]
        found = new[blocks == index] - index * area
        found = found[~in_sorted(found, ranking.identical)]
        if len(found):
            ranking.found_positions = merge_sorted(
                ranking.found_positions, np.sort(ranking.positions(found))
            )
        positions = ranking.found_positions
        for stratum in ranking.strata:
            stratum.hits = int(found_map[stratum.sampled].sum())
            stratum.found = int(
                np.searchsorted(positions, stratum.end) - np.searchsorted(positions, stratum.begin)
            )
        ranking.rest.hits = int(found_map[ranking.rest.sampled].sum())
        ranking.rest.found = int(len(positions) - np.searchsorted(positions, ranking.depth))


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
    if best is None:
        # Once the expansion has found what the bands' samples promised, the estimated misses
        # lie beyond the ranking's bands: the block with the most of them still grows its band.
        for index, ranking in enumerate(rankings):
            misses = ranking.rest.estimated_misses()
            if ranking.strata and misses > best_misses:
                best, best_misses = index, misses
    return best
