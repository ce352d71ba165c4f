"""Guide-verified expansion (``_verdict_expansion``) and the budget's estimate after it: pure."""

from __future__ import annotations

import math

import numpy as np
import torch
from reranker_client.losses._candidates import Candidates, loss_blocks
from reranker_client.losses._recall_audit import RecallAudit, Stratum
from reranker_client.losses._recall_budget import _Ledger
from reranker_client.losses._verdict_expansion import VerdictExpansion

BLOCKS = loss_blocks(3, contrast_anchors=True, contrast_positives=True)  # ap, aa, pp, an
AP, AA, PP, AN = range(4)


def _distinct_texts(batch_size: int) -> list[np.ndarray]:
    """Text ids of (anchor, positive, negative) columns, every text distinct."""
    return [np.arange(batch_size) + column * batch_size for column in range(3)]


def _student(batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [
        torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(batch_size, 16))), dim=-1)
        for _ in range(3)
    ]


def _verdict(block: int, row: int, col: int) -> tuple[Candidates, np.ndarray]:
    one = np.array([block], dtype=np.int64)
    return Candidates(one, np.array([row]), np.array([col])), np.array([True])


def _as_set(candidates: Candidates) -> list[tuple[int, int, int]]:
    return list(zip(candidates.block.tolist(), candidates.row.tolist(), candidates.col.tolist()))


def test_a_verified_link_proposes_the_other_blocks_of_the_two_rows_then_two_hops() -> None:
    batch_size = 8
    expansion = VerdictExpansion(_student(batch_size), _distinct_texts(batch_size), BLOCKS)
    assert expansion.pending
    # Distinct texts: the entities' inner pairs are only the diagonals, which are never asked.
    assert not len(expansion.propose())
    assert not expansion.pending
    assert expansion.add(*_verdict(AA, 0, 2)) == 1
    assert expansion.add(*_verdict(AA, 2, 0)) == 0  # the same link
    proposed = _as_set(expansion.propose())
    assert set(proposed) == {
        (AP, 0, 2),
        (AP, 2, 0),
        (AA, 0, 2),
        (AA, 2, 0),
        (PP, 0, 2),
        (PP, 2, 0),
    }
    # The an block links anchors to negatives, another entity: a link 0 ~ negative 5.
    expansion.add(*_verdict(AN, 0, 5))
    proposed = _as_set(expansion.propose())
    direct = {(AN, 0, 5)}  # (an, 0, 5) itself; negative 5 is no query of any block
    two_hops = {(AN, 2, 5)}  # anchor 2 ~ anchor 0 ~ negative 5
    assert set(proposed) == direct | two_hops
    assert proposed.index((AN, 0, 5)) < proposed.index((AN, 2, 5))  # direct links first
    assert not len(expansion.propose())  # nothing proposed twice


def test_rows_sharing_a_text_form_one_entity_and_a_hub_does_not_bridge() -> None:
    batch_size = 8
    ids = _distinct_texts(batch_size)
    ids[1][3] = ids[1][1]  # rows 1 and 3 share their positive: one entity
    expansion = VerdictExpansion(_student(batch_size), ids, BLOCKS, max_hub=2)
    inner = set(_as_set(expansion.propose()))
    assert {(AA, 1, 3), (AA, 3, 1), (AP, 1, 3), (AP, 3, 1)} <= inner
    # Entity of row 0 links to rows 4, 5 and 6: a hub above max_hub=2 bridges nothing.
    for row in (4, 5, 6):
        expansion.add(*_verdict(AA, 0, row))
    proposed = set(_as_set(expansion.propose()))
    assert (AA, 0, 4) in proposed
    assert not {(AA, 4, 5), (AA, 5, 4), (AA, 4, 6), (AA, 5, 6)} & proposed


def test_proposals_are_ordered_by_the_students_score_within_a_tier() -> None:
    batch_size = 6
    student = _student(batch_size)
    expansion = VerdictExpansion(student, _distinct_texts(batch_size), BLOCKS)
    expansion.propose()
    expansion.add(*_verdict(AA, 0, 1))
    proposed = expansion.propose()
    own = (student[0] * student[1]).sum(-1)
    scores = [
        float(
            (student[BLOCKS[b].query_column][r] * student[BLOCKS[b].document_column][c]).sum()
            - own[r]
        )
        for b, r, c in _as_set(proposed)
    ]
    assert scores == sorted(scores, reverse=True)


def test_stratum_misses_subtract_what_any_round_found_and_stop_at_zero() -> None:
    stratum = Stratum(begin=100, end=1100, size=1000, sampled=np.arange(100, 200))
    stratum.hits = 5  # 5% of the sample: an estimated 50 false negatives in the stratum
    stratum.found = 5  # only the sample's own
    assert stratum.estimated_misses() == 45.0  # the usual hits * (size / n - 1)
    stratum.found = 30  # expansion found 25 more inside the stratum
    assert stratum.estimated_misses() == 20.0
    stratum.found = 80  # more than the sample's estimate: nothing left to miss, not negative
    assert stratum.estimated_misses() == 0.0
    # No scored sample: nothing to estimate from, so unknown (NaN), unless it holds nothing.
    assert math.isnan(Stratum(0, 10, 10, np.zeros(0, dtype=np.int64), found=3).estimated_misses())
    assert Stratum(0, 0, 0, np.zeros(0, dtype=np.int64)).estimated_misses() == 0.0


def test_found_false_negatives_are_counted_in_the_stratum_they_fall_in() -> None:
    batch_size = 10
    ids = _distinct_texts(batch_size)
    blocks = BLOCKS[:2]  # ap and aa: one ranking over both
    area = batch_size * batch_size
    flat = np.array([r * batch_size + c for r in range(batch_size) for c in range(batch_size)])
    flat = flat[flat // batch_size != flat % batch_size]
    # The global ranking interleaves the blocks: ap, aa, ap, aa, ... (keys block * B**2 + flat).
    order = np.stack([flat, flat + area], axis=1).ravel()[:40]
    band = Stratum(10, 20, 10, order[10:12])
    deeper = Stratum(20, 40, 20, order[20:22])
    rest_sample = np.array([area + 9 * batch_size + 8])  # aa, beyond the ranking
    rest = Stratum(40, 40, 2 * (area - batch_size) - 40, rest_sample)
    audit = RecallAudit(order, [band, deeper, rest])
    ledger = _Ledger(ids, blocks, batch_size)
    # Found: one in the sent prefix, the band's first sampled (a hit), two more in the band
    # found by another round, one in the deeper band outside its sample, one in the rest.
    hits = [order[0], order[10], order[14], order[15], order[30], area + 9 * batch_size + 7]
    ledger.mark_found(np.array(hits))
    audit.record(ledger.newly_found(), ledger.found_map)
    assert (band.hits, band.found) == (1, 3)
    assert (deeper.hits, deeper.found) == (0, 1)
    assert (rest.hits, rest.found) == (0, 1)
    # The band: 1 of 2 sampled is a hit, so ~5 false negatives, 3 found: 2 missed. The deeper
    # band and the rest: no sample hit, nothing estimated missed.
    assert band.estimated_misses() == 2.0
    assert audit.recall(ledger.found) == 6 / 8


def test_proposals_leave_out_the_scored_candidates_and_keep_the_order_of_the_rest() -> None:
    batch_size = 6
    student = _student(batch_size)
    ids = _distinct_texts(batch_size)
    full, skipping = (VerdictExpansion(student, ids, BLOCKS) for _ in range(2))
    for expansion in (full, skipping):
        expansion.propose()
        expansion.add(*_verdict(AA, 0, 1))
        expansion.add(*_verdict(PP, 1, 2))
    every = full.propose()
    area = batch_size * batch_size
    scored = np.zeros(len(BLOCKS) * area, dtype=bool)
    keys = every.block * area + every.row * batch_size + every.col
    scored[keys[::2]] = True  # every other proposal was scored already
    rest = skipping.propose(scored)
    assert _as_set(rest) == _as_set(every)[1::2]
