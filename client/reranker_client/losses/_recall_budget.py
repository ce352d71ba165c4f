"""The optimized loss's default selection: one global allocation by expected yield, on the
guide's scale, that holds a recall.

Which in-batch candidates are false negatives is known only to the reranker; on real text they
are concentrated (a few anchors whose own positive scores low let nearly every candidate through,
in every block), so a budget split per block or per anchor cannot follow them. A step instead
ranks the candidates of all blocks and anchors together, by how likely each is to be masked:

1. The first call scores a small random *calibration* sample of every block (and the B
   anchor-positive pairs, which give every anchor's *cutoff*: its own positive's score less the
   margin). Candidates whose two texts are identical are masked without being scored.
2. Each block maps the student's cosine onto the guide's scale with a linear fit
   (:mod:`._guide_calibration`); a candidate's ``Phi(z)``, ``z = (fit(s) - cutoff_i) / sigma``,
   is its expected yield. The second call sends the prefix of the global ranking by ``z`` whose
   expected yield reaches ``target_recall`` of the expected false negatives (at least
   ``budget_ratio`` of ``blocks x B**2``), with a stratified *audit* sample of the rest
   (:mod:`._recall_audit`), from which the step estimates its recall.
3. While the estimate is below ``target_recall``, each further call (a *round*) refits the
   calibration on every verdict back so far and sends either the next candidates of the refitted
   global ranking (as many as the estimated misses call for, at least a quarter of what the step
   sent so far) or the candidates the verdicts imply (the guide-verified expansion of
   :mod:`._verdict_expansion`: a false negative between two rows' texts makes the other blocks'
   pairs between them, and pairs two verified links apart, likely false negatives too), whichever
   pays more: the expansion while its rounds yielded at least half what the ranking's last round
   did (whose next round yields less). The first expansion round is a small trial of its best
   proposals: on text where the verdicts imply little (near-duplicates that are not transitive), an
   untried expansion's first round had spent most of the budget at a third of the ranking's yield.
   All stops at ``max_budget_ratio``, counted in distinct text pairs (what the judge scores).

Everything here is pure (no I/O): :meth:`CandidateBudget.run` gets a ``judge`` that scores
candidates, says which are masked, and gives back their scores and the anchors' cutoffs.
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

from ._candidates import Block, Candidates
from ._guide_calibration import GuideCalibration, LinearFit, probability
from ._judge import Selection
from ._recall_audit import (
    BANDS,
    MIN_AUDIT_PER_STRATUM,
    REST_AUDIT,
    RecallAudit,
    Stratum,
    band_bounds,
)
from ._sorted_keys import first_occurrences, in_sorted, merge_sorted
from ._texts import StepTexts, identical
from ._verdict_expansion import VerdictExpansion

logger = logging.getLogger(__name__)

#: Least size of a further round, as a share of the pairs the step sent so far.
_MIN_ROUND_SHARE = 0.25
#: A further round of the ranking asks for this many times the estimated misses in expected yield.
_OVERSHOOT = 1.5
#: Most of the room (below the cap) the first allocation may take, with a target.
_FIRST_SHARE = 0.5
#: The expansion goes (on) while its rounds yielded at least this share of the ranking's last
#: round's masked candidates per pair: the ranking's next round yields less than its last.
_EXPANSION_PAYS = 0.5
#: The yield assumed of an expansion not tried yet: it goes first after a first allocation that
#: yielded at most twice this.
_UNTRIED_EXPANSION = 0.25
#: The first expansion round of a step is a trial: at most this share of a round's size, so that
#: an expansion that does not pay on this data costs little before the ranking takes over.
_EXPANSION_TRIAL = 0.1
#: Candidates scored per gather of the student's similarities.
_GATHER_CHUNK = 65536


class Judge(Protocol):
    """Scores candidates (one ``score_pairs`` call) and says which are masked."""

    @property
    def scored_pairs(self) -> int:
        """Distinct pairs scored so far in the step: what the budget counts."""
        ...

    @property
    def cutoffs(self) -> np.ndarray | None:
        """Each anchor's cutoff (masked above it), known after the first call."""
        ...

    def scores(self, candidates: Candidates) -> np.ndarray:
        """The guide's scores of candidates already scored (NaN otherwise), without a call."""
        ...

    def __call__(self, candidates: Candidates) -> np.ndarray: ...


@dataclass(frozen=True)
class RecallBudget:
    """Selection strategy (the optimized loss's default): a global allocation by expected yield.

    Each step scores a random calibration sample, maps the student's similarities onto the
    guide's scale per block, and sends the candidates of all blocks and anchors in one ranking by
    their chance to be above their anchor's cutoff, as many as ``target_recall`` of the expected
    false negatives need; a stratified audit sample of the rest estimates the recall, and while
    it is below ``target_recall`` further rounds refit on the verdicts and send the next of the
    ranking or what the verdicts imply, up to ``max_budget_ratio`` (see
    :mod:`reranker_client.losses._recall_budget`).

    Attributes:
        budget_ratio: Least first allocation, as a share of the naive pairs (``blocks x B**2``).
        max_budget_ratio: Most pairs a step may send, as a share of the naive pairs, the B
            threshold pairs, calibration and audit included (0.03: 4% of 3B**2 for triplets).
            When it leaves no room for the audit (small batches), the step's recall is NaN.
        target_recall: Estimated recall a step sends more to reach (``None``: one allocation).
        audit_ratio: Audit sample per band beyond the first allocation, as five times a share
            of the naive pairs (each of the 4 bands gets ``audit_ratio / 5``, the rest 4 times
            that: about 1.6 x ``audit_ratio`` in all), and at least 32 per stratum.
        calibration_ratio: Random calibration sample per block, as a share of its ``B**2`` (at
            least 32 per block).
        seed: Seed of the calibration and audit sampling.
        expand: Whether further rounds may ask about the candidates the false negatives imply
            (the guide-verified expansion of :mod:`._verdict_expansion`).
    """

    budget_ratio: float = 0.002
    max_budget_ratio: float = 0.03
    target_recall: float | None = 0.99
    audit_ratio: float = 0.0005
    calibration_ratio: float = 0.0005
    seed: int = 0
    expand: bool = True

    def __post_init__(self) -> None:
        for name in ("budget_ratio", "max_budget_ratio", "audit_ratio", "calibration_ratio"):
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
        """The selector a loss runs every step (its sampling continues from step to step)."""
        return CandidateBudget(self)


class _StepCandidates:
    """The student's view of one step: every block's similarities, valid candidates, cutoffs."""

    def __init__(
        self,
        normalized: Sequence[Tensor],
        text_ids: Sequence[np.ndarray],
        blocks: Sequence[Block],
        cutoffs: np.ndarray,
    ) -> None:
        self.normalized = normalized
        self.blocks = list(blocks)
        self.batch_size = normalized[0].shape[0]
        self.area = self.batch_size * self.batch_size
        # A row whose cutoff is NaN (an empty text) never masks: no candidate of it is valid.
        device = normalized[0].device
        cut = torch.as_tensor(cutoffs, dtype=normalized[0].dtype, device=device)
        self.cutoffs = torch.where(torch.isnan(cut), torch.full_like(cut, math.inf), cut)
        self.valid_map = np.concatenate(
            [_valid(text_ids, block, cutoffs).ravel() for block in blocks]
        )

    def similarity(self, index: int) -> Tensor:
        block = self.blocks[index]
        return self.normalized[block.query_column] @ self.normalized[block.document_column].T

    def gather(self, candidates: Candidates) -> np.ndarray:
        """The student's cosine of each candidate."""
        out = np.empty(len(candidates), dtype=np.float64)
        for index in np.unique(candidates.block).tolist():
            pick = np.flatnonzero(candidates.block == index)
            block = self.blocks[index]
            query = self.normalized[block.query_column]
            document = self.normalized[block.document_column]
            for begin in range(0, len(pick), _GATHER_CHUNK):
                part = pick[begin : begin + _GATHER_CHUNK]
                r = torch.as_tensor(candidates.row[part], device=query.device)
                c = torch.as_tensor(candidates.col[part], device=query.device)
                out[part] = (query[r] * document[c]).sum(-1).cpu().numpy()
        return out

    @torch.no_grad()
    def ranking(
        self, fits: Sequence[LinearFit], exclude: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """The ``k`` valid candidates not in ``exclude`` with the highest ``z`` over all blocks
        (keys and ``z``, best first), and the expected false negatives among all of them."""
        keys, values, expected = [], [], 0.0
        for index, fit in enumerate(fits):
            z = fit.z(self.similarity(index), self.cutoffs[:, None]).flatten()
            span = slice(index * self.area, (index + 1) * self.area)
            out = torch.from_numpy(~self.valid_map[span] | exclude[span]).to(z.device)
            z = z.masked_fill(out, -math.inf)
            expected += float(probability(z).sum())
            top, at = torch.topk(z, min(k, self.area))
            keys.append(at.cpu().numpy() + index * self.area)
            values.append(top.cpu().numpy())
        all_keys, all_values = np.concatenate(keys), np.concatenate(values)
        order = np.argsort(-all_values, kind="stable")[:k]
        all_keys, all_values = all_keys[order], all_values[order]
        finite = all_values > -math.inf
        return all_keys[finite], all_values[finite], expected

    def candidates(self, keys: np.ndarray) -> Candidates:
        return Candidates.from_flat_keys(keys, self.batch_size)


def _valid(text_ids: Sequence[np.ndarray], block: Block, cutoffs: np.ndarray | None) -> np.ndarray:
    """Candidates of a block the ranking may send: not a diagonal pair, not identical texts, a
    row that masks at all."""
    query = np.asarray(text_ids[block.query_column])
    document = np.asarray(text_ids[block.document_column])
    valid = ~identical(query[:, None], document[None, :])
    if block.has_diagonal_pair:
        np.fill_diagonal(valid, False)
    if cutoffs is not None:
        valid &= ~np.isnan(cutoffs)[:, None]
    return valid


class CandidateBudget:
    """The optimized loss's selector: one global allocation per step (see the module docstring)."""

    def __init__(self, config: RecallBudget) -> None:
        self.config = config
        self._rng = np.random.default_rng(config.seed)
        self._warned_short = False

    def __call__(
        self,
        columns: Sequence[Tensor],
        blocks: Sequence[Block],
        step: StepTexts,
        judge: Judge,
    ) -> Selection:
        """The selector's call (see :meth:`run`)."""
        return self.run(columns, step.ids, blocks, judge)

    @torch.no_grad()
    def run(
        self,
        columns: Sequence[Tensor],
        text_ids: Sequence[np.ndarray],
        blocks: Sequence[Block],
        judge: Judge,
    ) -> Selection:
        """Calibrate, send the first allocation with its audit, then refit and send more while
        the estimated recall is below target."""
        config = self.config
        batch_size = columns[0].shape[0]
        area = batch_size * batch_size
        naive = len(blocks) * area
        cap = max(1, int(config.max_budget_ratio * naive))
        normalized = [torch.nn.functional.normalize(c.detach().float(), dim=-1) for c in columns]
        ledger = _Ledger(text_ids, blocks, batch_size)

        # Round 1: the identical texts (masked without a call), a calibration sample per block,
        # and with them the anchors' threshold pairs.
        per_block = max(MIN_AUDIT_PER_STRATUM, math.ceil(config.calibration_ratio * area))
        identical_keys = np.concatenate(
            [
                np.flatnonzero(_identical_candidates(text_ids, block)) + index * area
                for index, block in enumerate(blocks)
            ]
        )
        sample = _interleave(
            [
                self._calibration_sample(_valid(text_ids, block, None).ravel(), per_block)
                + index * area
                for index, block in enumerate(blocks)
            ]
        )
        first = Candidates.from_flat_keys(np.concatenate([identical_keys, sample]), batch_size)
        # The B threshold pairs go with the first call and count against the cap; the blocks'
        # samples are interleaved, so that a cut keeps some of every block.
        ledger.send(judge, ledger.within(ledger.fresh(first), max(0, cap - batch_size)))
        calibration_sent = int(ledger.scored_map[sample].sum())
        cutoffs = judge.cutoffs
        assert cutoffs is not None
        view = _StepCandidates(normalized, text_ids, blocks, cutoffs)
        calibration = GuideCalibration(len(blocks))
        self._calibrate(calibration, view, judge, ledger.candidates())
        ledger.newly_found()  # found before the audit's strata exist: in none of them

        # Round 2: the first allocation by expected yield, with the audit of the rest.
        per_stratum = max(
            MIN_AUDIT_PER_STRATUM, math.ceil(config.audit_ratio * naive / (BANDS + 1))
        )
        audit_size = per_stratum * (BANDS + REST_AUDIT)
        room = max(0, cap - judge.scored_pairs - audit_size)
        fits = calibration.fits()
        keys, z, expected = view.ranking(fits, ledger.scored_map, max(room, 1))
        target = config.target_recall
        aim = (target if target is not None else 0.99) * (ledger.found + expected) - ledger.found
        cumulative = np.cumsum(probability(torch.from_numpy(z)).numpy())
        prefix = int(np.searchsorted(cumulative, aim)) + 1
        # At most half the room: the refitted ranking and the expansion get the rest.
        most = max(1, int(_FIRST_SHARE * room)) if target is not None else room
        prefix = min(len(keys), most, max(prefix, math.ceil(config.budget_ratio * naive)))
        chosen = ledger.within(ledger.fresh(view.candidates(keys[:prefix])), room)
        prefix = len(chosen)
        unscored = int((view.valid_map & ~ledger.scored_map).sum())
        depth = min(unscored, max(prefix, 1) * 2**BANDS)
        if depth > len(keys):
            # The chosen prefix stays the order's head: with ties in z a deeper ranking could
            # order it differently, and the strata must be the candidates beyond what was sent.
            deeper, _, _ = view.ranking(fits, ledger.scored_map, depth)
            keys = np.concatenate([keys[:prefix], deeper[~np.isin(deeper, keys[:prefix])]])
        audit = self._audit(keys[:depth], prefix, unscored, per_stratum, view, ledger)
        audited = ledger.fresh(view.candidates(audit.sampled()))
        sent = ledger.within(Candidates.concat([audited, chosen]), cap - judge.scored_pairs)
        scored_before = len(ledger.candidates())
        verdicts = ledger.send(judge, sent)
        first_yield = float(verdicts[len(audited) :].mean()) if len(sent) > len(audited) else 0.0
        # An audit sample the cap cut off was not scored: it estimates nothing.
        audit.keep_scored(ledger.scored_map)
        self._calibrate(calibration, view, judge, ledger.candidates(), since=scored_before)
        scored_before = len(ledger.candidates())
        self._record(audit, ledger, view)

        expansion = VerdictExpansion(normalized, text_ids, blocks) if config.expand else None
        if expansion is not None:
            expansion.add(ledger.candidates(), ledger.masked())
        queue = Candidates.concat([])
        # The first allocation's yield is the ranking's until a later round of it.
        yields: dict[str, float] = {"ranking": first_yield}
        expansion_sent = expansion_masked = 0
        # An unknown recall (NaN: no audit sample fitted) gives the rounds nothing to aim at.
        while target is not None and audit.recall(ledger.found) < target:
            room = cap - judge.scored_pairs
            if room <= 0:
                break
            size = max(1, math.ceil(_MIN_ROUND_SHARE * judge.scored_pairs))
            if expansion is not None and not len(queue) and expansion.pending:
                queue = expansion.propose(ledger.scored_map)
            if len(queue):
                queue = ledger.fresh(queue)
            tried = "expansion" in yields
            expected = yields["expansion"] if tried else _UNTRIED_EXPANSION
            if len(queue) and expected >= _EXPANSION_PAYS * yields["ranking"]:
                if tried:
                    head, queue = queue, Candidates.concat([])
                else:
                    head, queue = queue.split(max(1, math.ceil(_EXPANSION_TRIAL * size)))
                more = ledger.within(head, room)
                kind = "expansion"
            else:
                missed = audit.estimated_misses()
                aim = _OVERSHOOT * (target * (ledger.found + missed) - ledger.found)
                fits = calibration.fits()
                keys, z, _ = view.ranking(fits, ledger.scored_map, room)
                cumulative = np.cumsum(probability(torch.from_numpy(z)).numpy())
                take = max(size, int(np.searchsorted(cumulative, aim)) + 1)
                more = ledger.within(view.candidates(keys[:take]), room)
                kind = "ranking"
            if not len(more):
                if kind == "ranking":
                    break
                continue
            masked = ledger.send(judge, more)
            if kind == "expansion":
                # Over all its rounds: one small round of leftovers says little of what the
                # links found later imply.
                expansion_sent += len(more)
                expansion_masked += int(masked.sum())
                yields[kind] = expansion_masked / expansion_sent
            else:
                yields[kind] = float(masked.mean())
            if expansion is not None:
                expansion.add(more, masked)
            self._calibrate(calibration, view, judge, ledger.candidates(), since=scored_before)
            scored_before = len(ledger.candidates())
            self._record(audit, ledger, view)
            logger.debug(
                "%s round: %d candidates, %d masked; %d pairs scored; estimated recall %.3f",
                kind,
                len(more),
                int(masked.sum()),
                judge.scored_pairs,
                audit.recall(ledger.found),
            )
        recall = audit.recall(ledger.found)
        if target is not None and not self._warned_short:
            if math.isnan(recall):
                self._warned_short = True
                logger.warning(
                    "The recall of this step cannot be estimated: max_budget_ratio=%s of the "
                    "naive pairs (%s pairs) leaves no room for the audit sample at batch size "
                    "%d. Raise max_budget_ratio or the batch size; stats.estimated_recall is NaN "
                    "for such steps.",
                    config.max_budget_ratio,
                    f"{cap:,}",
                    batch_size,
                )
            elif recall < target:
                self._warned_short = True
                logger.warning(
                    "Estimated recall %.1f%% is below target_recall=%.1f%% after sending %s "
                    "pairs (ceiling: max_budget_ratio=%s of the naive pairs): the student ranks "
                    "the false negatives poorly, or they lie beyond what the budget reaches. "
                    "Raise max_budget_ratio or use a stronger student; stats.estimated_recall "
                    "reports it every step.",
                    100 * recall,
                    100 * target,
                    f"{judge.scored_pairs:,}",
                    config.max_budget_ratio,
                )
        return Selection(
            candidates=ledger.candidates(),
            masked=ledger.masked(),
            audit_pairs=calibration_sent + sum(len(s.sampled) for s in audit.strata),
            estimated_recall=recall,
        )

    def _calibration_sample(self, valid: np.ndarray, size: int) -> np.ndarray:
        """A random sample of ``size`` valid candidates (flat keys) of one block."""
        draws = self._rng.integers(0, len(valid), size * 2 + 64)
        draws = np.unique(draws[valid[draws]])
        self._rng.shuffle(draws)
        if len(draws) < size:
            pool = np.flatnonzero(valid)
            draws = self._rng.choice(pool, min(size, len(pool)), replace=False)
        return draws[:size].astype(np.int64)

    def _audit(
        self,
        order: np.ndarray,
        prefix: int,
        unscored: int,
        per_stratum: int,
        view: _StepCandidates,
        ledger: _Ledger,
    ) -> RecallAudit:
        """The strata beyond the first allocation's prefix, each with its audit sample."""
        audit = RecallAudit(order, [])
        for begin, end in band_bounds(prefix, len(order)):
            band = order[begin:end]
            take = min(len(band), per_stratum)
            sampled = self._rng.choice(band, take, replace=False)
            audit.strata.append(Stratum(begin, end, len(band), sampled))
        rest_size = unscored - len(order)
        rest_sample = np.zeros(0, dtype=np.int64)
        if rest_size > 0:
            wanted = per_stratum * REST_AUDIT
            draws = self._rng.integers(0, len(view.valid_map), wanted * 4)
            ok = view.valid_map[draws] & ~ledger.scored_map[draws]
            draws = draws[ok]
            draws = draws[audit.positions(draws) == len(order)]
            rest_sample = np.unique(draws)[:wanted]
            if len(rest_sample) < min(wanted, rest_size):
                # Random draws rarely land in a rest that is a small share of the candidates:
                # draw from the rest itself (small exactly then).
                pool = view.valid_map & ~ledger.scored_map
                pool[order] = False
                pool_keys = np.flatnonzero(pool)
                rest_sample = self._rng.choice(
                    pool_keys, min(wanted, len(pool_keys)), replace=False
                ).astype(np.int64)
            self._rng.shuffle(rest_sample)
        audit.strata.append(Stratum(len(order), len(order), max(rest_size, 0), rest_sample))
        return audit

    @staticmethod
    def _calibrate(
        calibration: GuideCalibration,
        view: _StepCandidates,
        judge: Judge,
        candidates: Candidates,
        since: int = 0,
    ) -> None:
        """Add the guide's scores of the candidates scored since ``since`` to the fits."""
        new = Candidates(candidates.block[since:], candidates.row[since:], candidates.col[since:])
        if len(new):
            calibration.add(new.block, view.gather(new), judge.scores(new))

    @staticmethod
    def _record(audit: RecallAudit, ledger: _Ledger, view: _StepCandidates) -> None:
        new = ledger.newly_found()
        audit.record(new[view.valid_map[new]], ledger.found_map)


def _identical_candidates(text_ids: Sequence[np.ndarray], block: Block) -> np.ndarray:
    """Flat ``row * B + col`` map of a block's candidates whose two texts are identical."""
    query = np.asarray(text_ids[block.query_column])
    document = np.asarray(text_ids[block.document_column])
    same = identical(query[:, None], document[None, :])
    if block.has_diagonal_pair:
        np.fill_diagonal(same, False)
    return same.ravel()


def _interleave(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The parts' elements taken in turn (the first of each, then the second, ...)."""
    if not parts:
        return np.zeros(0, dtype=np.int64)
    length = max(len(p) for p in parts)
    grid = np.full((length, len(parts)), -1, dtype=np.int64)
    for j, part in enumerate(parts):
        grid[: len(part), j] = part
    flat = grid.ravel()
    return flat[flat >= 0]


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
