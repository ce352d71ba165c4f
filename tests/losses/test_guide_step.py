"""The reranker's part of a step as the loss runs it (``consult_reranker``), on a table of scores:
candidates, pairs sent, masks, pre-filter bounds. No model, no server."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from loss_helpers import TableService
from reranker_client.losses import (
    PRESETS,
    AllCandidates,
    PerAnchorTopK,
    PrefilterConfig,
    RecallBudget,
    RerankerStepStats,
)
from reranker_client.losses._accounting import StatsAccumulator
from reranker_client.losses._candidates import (
    Candidates,
    all_candidates,
    candidates_per_row,
    loss_blocks,
    naive_pairs,
)
from reranker_client.losses._guide_step import consult_reranker
from reranker_client.losses._prefilter import prefilter_candidates
from reranker_client.losses._sorted_keys import in_sorted, merge_sorted, merge_sorted_values
from reranker_client.losses._texts import StepTexts


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


def _consult(
    texts: list[list[str]],
    score,
    *,
    blocks=None,
    selection=None,
    columns=None,
    strategy: str = "absolute",
    margin: float = 0.0,
):
    """One step's reranker part, as the loss runs it, against a table of scores."""
    service = TableService(score)
    blocks = blocks or loss_blocks(len(texts), contrast_anchors=True, contrast_positives=True)
    if columns is None:
        columns = [torch.zeros(len(texts[0]), 4) for _ in texts]
    selector = (selection or AllCandidates()).start(chunk_size=7)
    masks, stats = consult_reranker(
        service.client(),
        texts,
        columns,
        blocks,
        selector,
        margin_strategy=strategy,
        margin=margin,
        instruction=None,
        max_length=None,
    )
    return masks, stats, service


def test_a_step_sends_each_distinct_pair_once_and_keeps_both_directions() -> None:
    texts = _triples(6, duplicates=True)
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    _, stats, service = _consult(texts, lambda q, d: 0.0, blocks=blocks)

    assert len(service.bodies) == 1  # the thresholds go with the candidates: one call
    body = service.bodies[0]
    assert len(body["queries"]) == len(set(body["queries"]))  # each text once
    assert len(body["documents"]) == len(set(body["documents"]))
    assert set(body["queries"]) | set(body["documents"]) == {t for col in texts for t in col}
    sent = service.sent_pairs()
    assert len(sent) == len(set(sent))
    expected = {(texts[0][i], texts[1][i]) for i in range(6)}
    identical = set()
    for b, r, c in _candidate_set(all_candidates(blocks, 6)):
        pair = (texts[blocks[b].query_column][r], texts[blocks[b].document_column][c])
        # A text against an equal text is masked by identity, never sent.
        (identical if pair[0] == pair[1] else expected).add(pair)
    assert identical, "the duplicates should make some candidates identical"
    assert set(sent) == expected
    # Not symmetric: anchor 0 vs anchor 2 and anchor 2 vs anchor 0 are two pairs.
    assert ("a 0", "a 2") in expected and ("a 2", "a 0") in expected
    assert stats.sent_pairs == len(expected)
    assert stats.considered_pairs == 6 + len(all_candidates(blocks, 6))
    assert stats.identity_masked > 0 and stats.rounds == 1


def _table(texts, seed: int = 0):
    rng = np.random.default_rng(seed)
    vocabulary = sorted({t for column in texts for t in column})
    return {(q, d): float(rng.uniform(-1, 1)) for q in vocabulary for d in vocabulary}


@pytest.mark.parametrize("strategy", ["absolute", "relative"])
def test_masks_follow_the_gist_rule(strategy: str) -> None:
    texts = _triples(7, duplicates=True)
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    scores = _table(texts)
    margin = 0.1
    masks, stats, _ = _consult(
        texts, lambda q, d: scores[(q, d)], blocks=blocks, strategy=strategy, margin=margin
    )

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
    assert masks.masked_candidates == stats.masked == len(expected)
    self_pairs = {(name, i, i) for name in ("aa", "pp") for i in range(7)}
    assert masks.masked_set(include_self_pairs=True) == expected | self_pairs


def test_own_positive_is_never_masked_even_when_a_duplicate_is() -> None:
    texts = [["q", "q"], ["p", "p"]]
    blocks = loss_blocks(2, contrast_anchors=False, contrast_positives=False)
    masks, _, service = _consult(
        texts, lambda q, d: {("q", "p"): 0.5}[(q, d)], blocks=blocks, margin=0.1
    )
    assert service.sent_pairs() == [("q", "p")]
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
    masks, _, _ = _consult(texts[:2], lambda q, d: scores[(q, d)], blocks=blocks)
    sim = torch.zeros(3, 6)  # rows 3..5
    masks.apply(0, sim, 3)
    assert torch.isinf(sim).nonzero().tolist() == [[1, 1]]
    aa = torch.zeros(3, 6)
    masks.apply(1, aa, 3)
    assert torch.isinf(aa).nonzero().tolist() == [[0, 3], [1, 4], [2, 5]]  # the self pairs


def test_empty_texts_are_not_sent_and_never_masked() -> None:
    texts = [["q0", "  ", "q2"], ["p0", "p1", "p2"], ["n0", "n1", ""]]
    # Every sent pair scores as high as its threshold.
    masks, _, service = _consult(texts, lambda q, d: 1.0, margin=0.5)
    assert all(q.strip() and d.strip() for q, d in service.sent_pairs())
    assert ("  ", "p1") not in service.sent_pairs()  # row 1 has no threshold
    masked = masks.masked_set()
    assert masked and not any(row == 1 for _, row, _ in masked)  # no threshold for row 1
    assert ("an", 0, 2) not in masked and ("aa", 0, 1) not in masked


def test_identical_is_one_definition_for_the_judge_and_the_budget() -> None:
    """The judge masks identical texts by identity; the budget lists the same candidates."""
    texts = _triples(6, duplicates=True)
    step = StepTexts.of(texts)
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    candidates = all_candidates(blocks, 6)
    q, d = candidates.text_ids(blocks, step.ids)
    by_identity = step.masked_by_identity(q, d)
    names = [
        (texts[blocks[b].query_column][r], texts[blocks[b].document_column][c])
        for b, r, c in zip(candidates.block, candidates.row, candidates.col)
    ]
    assert by_identity.tolist() == [query == document for query, document in names]
    masks, stats, _ = _consult(texts, lambda q, d: -1.0, blocks=blocks)
    assert stats.identity_masked == int(by_identity.sum()) == stats.masked
    budget_masks, budget_stats, service = _consult(
        texts,
        lambda q, d: -1.0,
        blocks=blocks,
        selection=RecallBudget(target_recall=None),
        columns=_random_columns(6),
    )
    assert not [pair for pair in service.sent_pairs() if pair[0] == pair[1]]
    assert budget_masks.masked_set() == masks.masked_set()  # the identical ones, only
    assert budget_stats.identity_masked == stats.identity_masked


def test_presets_have_the_documented_values_and_balanced_is_the_default() -> None:
    def values(name: str) -> tuple:
        p = PRESETS[name]
        fields = (p.similarity_threshold, p.top_k_ratio, p.min_top_k, p.max_candidates)
        return (*fields, p.hybrid_threshold)

    assert values("conservative") == (0.2, 0.2, 20, 200, 0.4)
    assert values("balanced") == (0.3, 0.1, 10, 100, 0.5)
    assert values("aggressive") == (0.4, 0.05, 5, 50, 0.6)
    assert PerAnchorTopK() == PRESETS["balanced"] == PerAnchorTopK.preset("balanced")
    assert PerAnchorTopK.preset("aggressive", max_candidates=6).max_candidates == 6
    assert PrefilterConfig is PerAnchorTopK  # the earlier name
    with pytest.raises(ValueError, match="preset must be one of"):
        PerAnchorTopK.preset("fast")  # type: ignore[arg-type]


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
        PerAnchorTopK(**{**base, **kwargs})


def _random_columns(batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(batch_size, 32, generator=generator)
    # Correlated columns, so student similarities spread over [-1, 1] like a real model's.
    return [shared + 0.8 * torch.randn(batch_size, 32, generator=generator) for _ in range(3)]


OPEN = PerAnchorTopK(
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
    # The loss's step with this preset sends the thresholds and exactly these candidates.
    masks, stats, service = _consult(
        texts, lambda q, d: 0.0, blocks=blocks, selection=config, columns=columns
    )
    sent = len(service.sent_pairs())
    assert sent == stats.sent_pairs == batch_size + len(picked)
    assert sent <= batch_size * (config.max_candidates + 1)


def test_only_the_cap_limits_an_otherwise_open_filter() -> None:
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    batch_size, cap = 48, 7
    config = PerAnchorTopK(-1.0, 1.0, 3, cap, 0.0)
    columns = _random_columns(batch_size, seed=1)
    picked = prefilter_candidates(columns, blocks, config, chunk_size=16)
    assert np.bincount(picked.row, minlength=batch_size).tolist() == [cap] * batch_size
    _, _, service = _consult(
        _triples(batch_size), lambda q, d: 0.0, blocks=blocks, selection=config, columns=columns
    )
    assert len(service.sent_pairs()) == batch_size * (cap + 1)
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

    def row0(config: PerAnchorTopK) -> set[tuple[int, int]]:
        picked = prefilter_candidates([anchors, positives, negatives], blocks, config)
        return {(b, c) for b, r, c in _candidate_set(picked) if r == 0}

    # Row 0 candidates: ap (0,1) cos -1; an (1,0) cos 0.5; an (1,1) cos 0.35.
    assert row0(OPEN) == {(0, 1), (1, 0), (1, 1)}
    assert row0(PerAnchorTopK(0.3, 1.0, 0, None, 0.0)) == {(1, 0), (1, 1)}
    assert row0(PerAnchorTopK(0.4, 1.0, 0, None, 0.0)) == {(1, 0)}
    # hybrid 0.5: keep when cos > 0.5 * 0.8 = 0.4.
    assert row0(PerAnchorTopK(-1.0, 1.0, 0, None, 0.5)) == {(1, 0)}
    assert row0(PerAnchorTopK(-1.0, 1.0, 0, 1, 0.0)) == {(1, 0)}


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
