"""The reranker's part of a step, without model or server: candidates, pairs, masks, bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from reranker_client.losses import PRESETS, PrefilterConfig
from reranker_client.losses._reranker_guide import (
    Candidates,
    RerankerStepStats,
    StatsAccumulator,
    all_candidates,
    candidates_per_row,
    decide_masks,
    in_sorted,
    loss_blocks,
    merge_sorted,
    merge_sorted_values,
    naive_pairs,
    plan_pairs,
    prefilter_candidates,
)


def _triples(batch_size: int, *, duplicates: bool = False) -> list[list[str]]:
    columns = [[f"{name} {i}" for i in range(batch_size)] for name in ("a", "p", "n")]
    if duplicates:
        columns[0][1] = columns[0][0]  # a duplicated anchor
        columns[1][2] = columns[1][0]  # a duplicated positive
        columns[2][0] = columns[1][3]  # a negative that is another row's positive
    return columns


def _candidate_set(candidates: Candidates) -> set[tuple[int, int, int]]:
    return set(zip(candidates.block.tolist(), candidates.row.tolist(), candidates.col.tolist()))


def test_blocks_follow_the_original_order() -> None:
    names = [b.name for b in loss_blocks(3, contrast_anchors=True, contrast_positives=True)]
    assert names == ["ap", "aa", "pp", "an"]
    names = [b.name for b in loss_blocks(4, contrast_anchors=False, contrast_positives=True)]
    assert names == ["ap", "pp", "an1", "an2"]
    assert [b.name for b in loss_blocks(2, contrast_anchors=False, contrast_positives=False)] == [
        "ap"
    ]
    with pytest.raises(ValueError, match="anchor, positive"):
        loss_blocks(1, contrast_anchors=True, contrast_positives=True)


def test_all_candidates_leave_out_only_the_diagonal_pairs() -> None:
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    candidates = all_candidates(blocks, 5)
    got = _candidate_set(candidates)
    assert len(got) == len(candidates) == 4 * 25 - 3 * 5 == 5 * candidates_per_row(blocks, 5)
    assert naive_pairs(blocks, 5) == 100
    for index, block in enumerate(blocks):
        diagonal = {(index, i, i) for i in range(5)}
        if block.name == "an":
            assert diagonal <= got  # a row's own hard negative is a candidate like any other
        else:
            assert not diagonal & got


def test_plan_sends_each_distinct_pair_once_and_keeps_both_directions() -> None:
    texts = _triples(6, duplicates=True)
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    candidates = all_candidates(blocks, 6)
    plan = plan_pairs(texts, blocks, candidates)

    assert len(plan.texts) == len(set(plan.texts)) == len({t for column in texts for t in column})
    pairs = [tuple(p) for p in plan.pairs.tolist()]
    assert len(pairs) == len(set(pairs))
    expected = {(texts[0][i], texts[1][i]) for i in range(6)}
    identical = set()
    for b, r, c in _candidate_set(candidates):
        pair = (texts[blocks[b].query_column][r], texts[blocks[b].document_column][c])
        # A text against an equal text is masked by identity, never sent.
        (identical if pair[0] == pair[1] else expected).add(pair)
    assert identical, "the duplicates should make some candidates identical"
    assert {(plan.texts[q], plan.texts[d]) for q, d in pairs} == expected
    # Not symmetric: anchor 0 vs anchor 2 and anchor 2 vs anchor 0 are two pairs.
    assert ("a 0", "a 2") in expected and ("a 2", "a 0") in expected
    # Every candidate and threshold points at the pair of its own texts.
    for k, (b, r, c) in enumerate(zip(candidates.block, candidates.row, candidates.col)):
        block = blocks[b]
        own = (texts[block.query_column][r], texts[block.document_column][c])
        assert plan.identical[k] == (own[0] == own[1])
        if plan.identical[k]:
            assert plan.candidate_pair[k] == -1
            continue
        q, d = plan.pairs[plan.candidate_pair[k]]
        assert (plan.texts[q], plan.texts[d]) == own
    for i in range(6):
        q, d = plan.pairs[plan.threshold_pair[i]]
        assert (plan.texts[q], plan.texts[d]) == (texts[0][i], texts[1][i])


def _masks_for(scores_by_text: dict[tuple[str, str], float], texts, blocks, strategy, margin):
    batch_size = len(texts[0])
    candidates = all_candidates(blocks, batch_size)
    plan = plan_pairs(texts, blocks, candidates)
    scores = np.array([scores_by_text[(plan.texts[q], plan.texts[d])] for q, d in plan.pairs])
    return decide_masks(
        plan, scores, blocks, candidates, batch_size, margin_strategy=strategy, margin=margin
    )


@pytest.mark.parametrize("strategy", ["absolute", "relative"])
def test_masks_follow_the_gist_rule(strategy: str) -> None:
    rng = np.random.default_rng(0)
    texts = _triples(7, duplicates=True)
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    vocabulary = sorted({t for column in texts for t in column})
    scores = {(q, d): float(rng.uniform(-1, 1)) for q in vocabulary for d in vocabulary}
    margin = 0.1
    masks = _masks_for(scores, texts, blocks, strategy, margin)

    expected = set()
    for block, i, j in itertools.product(blocks, range(7), range(7)):
        t = scores[(texts[0][i], texts[1][i])]
        query, document = texts[block.query_column][i], texts[block.document_column][j]
        s = scores[(query, document)]
        bound = t - margin if strategy == "absolute" else t - abs(t) * margin
        if block.name == "ap" and i == j:
            continue  # the own positive is never masked
        if block.name in ("aa", "pp") and i == j:
            continue  # self pairs: always masked, reported separately
        if s > bound or query == document:  # equal texts: masked by identity
            expected.add((block.name, i, j))
    assert expected, "the random scores should mask something"
    assert masks.masked_set() == expected
    assert masks.masked_candidates == len(expected)
    self_pairs = {(name, i, i) for name in ("aa", "pp") for i in range(7)}
    assert masks.masked_set(include_self_pairs=True) == expected | self_pairs


def test_own_positive_is_never_masked_even_when_a_duplicate_is() -> None:
    texts = [["q", "q"], ["p", "p"]]
    blocks = loss_blocks(2, contrast_anchors=False, contrast_positives=False)
    masks = _masks_for({("q", "p"): 0.5}, texts, blocks, "absolute", 0.1)
    # (0, 1) and (1, 0) score exactly the threshold, above t - margin: masked; diagonal: never.
    assert masks.masked_set() == {("ap", 0, 1), ("ap", 1, 0)}
    sim = torch.zeros(2, 2)
    masks.apply(0, sim, 0)
    assert torch.isinf(sim).tolist() == [[False, True], [True, False]]


def test_masks_apply_to_the_rows_of_a_mini_batch() -> None:
    texts = _triples(6)
    blocks = loss_blocks(2, contrast_anchors=True, contrast_positives=False)
    vocabulary = [t for column in texts for t in column]
    scores = {(q, d): 0.0 for q in vocabulary for d in vocabulary}
    scores.update({(texts[0][i], texts[1][i]): 0.5 for i in range(6)})
    scores[(texts[0][4], texts[1][1])] = 0.9  # a false negative in row 4
    masks = _masks_for(scores, texts, blocks, "absolute", 0.0)
    sim = torch.zeros(3, 6)  # rows 3..5
    masks.apply(0, sim, 3)
    assert torch.isinf(sim).nonzero().tolist() == [[1, 1]]
    aa = torch.zeros(3, 6)
    masks.apply(1, aa, 3)
    assert torch.isinf(aa).nonzero().tolist() == [[0, 3], [1, 4], [2, 5]]  # the self pairs


def test_empty_texts_are_not_sent_and_never_masked() -> None:
    texts = [["q0", "  ", "q2"], ["p0", "p1", "p2"], ["n0", "n1", ""]]
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    candidates = all_candidates(blocks, 3)
    plan = plan_pairs(texts, blocks, candidates)
    sent = {(plan.texts[q], plan.texts[d]) for q, d in plan.pairs}
    assert all(q.strip() and d.strip() for q, d in sent)
    assert plan.threshold_pair[1] == -1
    masks = decide_masks(
        plan,
        np.ones(len(plan.pairs)),  # every sent pair scores as high as its threshold
        blocks,
        candidates,
        3,
        margin_strategy="absolute",
        margin=0.5,
    )
    masked = masks.masked_set()
    assert masked and not any(row == 1 for _, row, _ in masked)  # no threshold for row 1
    assert ("an", 0, 2) not in masked and ("aa", 0, 1) not in masked


def test_presets_have_the_documented_values() -> None:
    def values(name: str) -> tuple:
        p = PRESETS[name]
        fields = (p.similarity_threshold, p.top_k_ratio, p.min_top_k, p.max_candidates)
        return (*fields, p.hybrid_threshold)

    assert values("conservative") == (0.2, 0.2, 20, 200, 0.4)
    assert values("balanced") == (0.3, 0.1, 10, 100, 0.5)
    assert values("aggressive") == (0.4, 0.05, 5, 50, 0.6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k_ratio": 0.0}, "top_k_ratio"),
        ({"min_top_k": 20, "max_candidates": 10}, "min_top_k"),
        ({"hybrid_threshold": -0.1}, "hybrid_threshold"),
        ({"max_candidates": -1}, "max_candidates"),
    ],
)
def test_prefilter_config_refuses_inconsistent_values(kwargs: dict, match: str) -> None:
    base = {
        "similarity_threshold": 0.3,
        "top_k_ratio": 0.1,
        "min_top_k": 5,
        "max_candidates": 100,
        "hybrid_threshold": 0.5,
    }
    with pytest.raises(ValueError, match=match):
        PrefilterConfig(**{**base, **kwargs})


def _random_columns(batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(batch_size, 32, generator=generator)
    # Correlated columns, so student similarities spread over [-1, 1] like a real model's.
    return [shared + 0.8 * torch.randn(batch_size, 32, generator=generator) for _ in range(3)]


OPEN = PrefilterConfig(
    similarity_threshold=-1.0, top_k_ratio=1.0, min_top_k=0, max_candidates=None, hybrid_threshold=0
)


def test_opened_up_prefilter_selects_every_candidate() -> None:
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    columns = _random_columns(20)
    picked = prefilter_candidates(columns, blocks, OPEN, chunk_size=7)
    assert _candidate_set(picked) == _candidate_set(all_candidates(blocks, 20))


@pytest.mark.parametrize("batch_size", [16, 64])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_max_candidates_bounds_the_pairs_sent(batch_size: int, preset: str) -> None:
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    columns = _random_columns(batch_size)
    texts = _triples(batch_size)  # all distinct: nothing collapses, so the bound is tight
    config = PRESETS[preset]
    picked = prefilter_candidates(columns, blocks, config, chunk_size=10)
    per_row = np.bincount(picked.row, minlength=batch_size)
    budget = config.row_budget(candidates_per_row(blocks, batch_size))
    assert budget <= config.max_candidates
    assert per_row.max() <= budget
    plan = plan_pairs(texts, blocks, picked)
    assert len(plan.pairs) == batch_size + len(picked) <= batch_size * (config.max_candidates + 1)


def test_only_the_cap_limits_an_otherwise_open_filter() -> None:
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    batch_size, cap = 48, 7
    config = PrefilterConfig(-1.0, 1.0, 3, cap, 0.0)
    columns = _random_columns(batch_size, seed=1)
    picked = prefilter_candidates(columns, blocks, config, chunk_size=16)
    assert np.bincount(picked.row, minlength=batch_size).tolist() == [cap] * batch_size
    plan = plan_pairs(_triples(batch_size), blocks, picked)
    assert len(plan.pairs) == batch_size * (cap + 1)
    # The kept ones are each row's most similar candidates.
    normalized = [torch.nn.functional.normalize(c, dim=-1) for c in columns]
    for row in (0, 17, 47):
        sims = []
        for b, block in enumerate(blocks):
            s = normalized[block.query_column][row] @ normalized[block.document_column].T
            sims += [
                (float(s[j]), b, j)
                for j in range(batch_size)
                if not (block.has_diagonal_pair and j == row)
            ]
        best = {(b, j) for _, b, j in sorted(sims, reverse=True)[:cap]}
        mine = {(b, c) for b, r, c in _candidate_set(picked) if r == row}
        assert mine == best


def test_thresholds_drop_clear_negatives() -> None:
    # One anchor (row 0) with its positive at cosine 0.8 and three other candidates.
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[0.8, 0.6], [-1.0, 0.0]])
    negatives = torch.tensor([[0.5, 0.866], [0.35, 0.937]])
    blocks = loss_blocks(3, contrast_anchors=False, contrast_positives=False)

    def row0(config: PrefilterConfig) -> set[tuple[int, int]]:
        picked = prefilter_candidates([anchors, positives, negatives], blocks, config)
        return {(b, c) for b, r, c in _candidate_set(picked) if r == 0}

    # Row 0 candidates: ap (0,1) cos -1; an (1,0) cos 0.5; an (1,1) cos 0.35.
    assert row0(OPEN) == {(0, 1), (1, 0), (1, 1)}
    assert row0(PrefilterConfig(0.3, 1.0, 0, None, 0.0)) == {(1, 0), (1, 1)}
    assert row0(PrefilterConfig(0.4, 1.0, 0, None, 0.0)) == {(1, 0)}
    # hybrid 0.5: keep when cos > 0.5 * 0.8 = 0.4.
    assert row0(PrefilterConfig(-1.0, 1.0, 0, None, 0.5)) == {(1, 0)}
    assert row0(PrefilterConfig(-1.0, 1.0, 0, 1, 0.0)) == {(1, 0)}


def test_stats_accumulator_reports_means_and_starts_again() -> None:
    acc = StatsAccumulator()
    assert acc.pop() == {}
    acc.add(RerankerStepStats(4, 64, 40, 30, 10, 1, 3))
    acc.add(RerankerStepStats(4, 64, 20, 10, 0, 1, 1))
    logs = acc.pop()
    assert logs["reranker_sent_pairs"] == 20 and logs["reranker_cache_hits"] == 5
    assert logs["reranker_reduction"] == pytest.approx(1 - 40 / 128)
    assert acc.pop() == {}
    assert RerankerStepStats(4, 64, 40, 16, 0, 1, 3).reduction == 0.75


def test_merge_sorted_keeps_keys_sorted_and_values_with_their_keys() -> None:
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 1000, 200))
    new = np.setdiff1d(np.unique(rng.integers(0, 1000, 100)), keys)
    merged, values = merge_sorted_values(keys, new, keys * 2.0, new * 2.0)
    assert np.array_equal(merge_sorted(keys, new), merged)
    assert np.array_equal(merged, np.sort(np.concatenate([keys, new])))
    assert values is not None and np.array_equal(values, merged * 2.0)
    assert np.array_equal(in_sorted(np.array([keys[0], new[0], 1001]), keys), [True, False, False])
    assert not in_sorted(np.array([3]), np.zeros(0, dtype=np.int64)).any()
