"""The optimized loss's default selection (``RecallBudget``), without a server or a model.

The "service" is :class:`FakeCosineService`: the guide's cosine similarity of made-up text
embeddings (clustered by topic, so that a batch holds many false negatives), scored through the
real :class:`GuideJudge` and the selector ``RecallBudget.start()`` gives the loss, so the
budget is checked on exactly what the loss runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from reranker_client.losses import RecallBudget, _recall_budget
from reranker_client.losses._candidates import Candidates, all_candidates, loss_blocks
from reranker_client.losses._judge import GuideJudge, judge_all
from reranker_client.losses._texts import StepTexts

B = 192
MARGIN = 0.05


class FakeCosineService:
    """Scores pairs with the cosine of fixed text embeddings; records every pair sent."""

    def __init__(self, embeddings: dict[str, np.ndarray]) -> None:
        self.embeddings = embeddings
        self.sent: list[tuple[str, str]] = []

    def score_pairs(self, queries, documents, pairs, **_: object) -> list[float]:
        out = []
        for q, d in np.asarray(pairs).tolist():
            self.sent.append((queries[q], documents[d]))
            out.append(float(self.embeddings[queries[q]] @ self.embeddings[documents[d]]))
        return out


def _batch(seed: int = 0, size: int = B):
    """(texts per column, guide embeddings by text): 24 topics, texts repeat across rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(24, 32))
    embeddings: dict[str, np.ndarray] = {}

    def text(kind: str, topic: int, variant: int) -> str:
        name = f"{kind} {topic} {variant}"
        if name not in embeddings:
            vector = centres[topic] + 0.6 * rng.normal(size=32)
            embeddings[name] = vector / np.linalg.norm(vector)
        return name

    topics = rng.integers(0, 24, size)
    anchors = [text("q", t, int(rng.integers(0, 6))) for t in topics]
    positives = [text("p", t, int(rng.integers(0, 4))) for t in topics]
    negatives = [text("p", int(rng.integers(0, 24)), int(rng.integers(0, 4))) for _ in topics]
    return [anchors, positives, negatives], embeddings


def _run(select, texts, embeddings):
    service: Any = FakeCosineService(embeddings)
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    step = StepTexts.of(texts)
    judge = GuideJudge(service, step, blocks, margin_strategy="absolute", margin=MARGIN)
    selection = select(step, judge, blocks)
    c = selection.candidates
    masked = set(
        zip(
            c.block[selection.masked].tolist(),
            c.row[selection.masked].tolist(),
            c.col[selection.masked].tolist(),
        )
    )
    return masked, selection, judge, service


def _everything(texts, embeddings):
    return _run(
        lambda step, judge, blocks: judge_all(all_candidates(blocks, B), judge), texts, embeddings
    )


def _student(texts, embeddings, noise: float = 0.0, seed: int = 1):
    rng = np.random.default_rng(seed)
    columns = []
    for column in texts:
        vectors = np.stack([embeddings[t] for t in column])
        columns.append(torch.from_numpy(vectors + noise * rng.normal(size=vectors.shape)))
    return columns


def test_student_equal_to_the_guide_reaches_the_target_within_the_cap() -> None:
    texts, embeddings = _batch()
    everything, *_ = _everything(texts, embeddings)
    budget = RecallBudget(budget_ratio=0.01, max_budget_ratio=0.2, target_recall=0.99).start()
    columns = _student(texts, embeddings)
    masked, selection, judge, service = _run(
        lambda step, judge, blocks: budget(columns, blocks, step, judge), texts, embeddings
    )
    assert len(everything) > 4 * B, "the batch should hold many false negatives"
    assert masked <= everything  # a sent candidate is masked exactly as when all are sent
    assert len(masked) >= 0.99 * len(everything)
    assert selection.estimated_recall >= 0.99
    assert judge.calls >= 2  # the calibration sample first, then the allocation
    assert judge.scored_pairs <= 0.2 * 4 * B * B
    assert len(service.sent) == len(set(service.sent))  # each distinct pair once per step


def test_equal_texts_are_masked_without_a_call() -> None:
    texts, embeddings = _batch()
    budget = RecallBudget(target_recall=None).start()
    masked, _, judge, service = _run(
        lambda step, judge, blocks: budget(_student(texts, embeddings), blocks, step, judge),
        texts,
        embeddings,
    )
    assert not [pair for pair in service.sent if pair[0] == pair[1]]
    duplicates = {
        (1, i, j) for i in range(B) for j in range(B) if i != j and texts[0][i] == texts[0][j]
    }
    assert duplicates and duplicates <= masked
    assert judge.identity_masked >= len(duplicates)
    assert judge.calls == 2  # no target: the calibration sample, then one allocation


def test_a_useless_student_stops_at_the_cap_and_says_so(caplog) -> None:
    texts, embeddings = _batch()
    everything, *_ = _everything(texts, embeddings)
    # Without the expansion, which would recover most of this batch's false negatives (below).
    budget = RecallBudget(budget_ratio=0.005, max_budget_ratio=0.02, expand=False).start()
    noisy = _student(texts, embeddings, noise=50.0)  # ranks at random
    masked, selection, judge, _ = _run(
        lambda step, judge, blocks: budget(noisy, blocks, step, judge), texts, embeddings
    )
    recall = len(masked) / len(everything)
    assert judge.scored_pairs <= 0.02 * 4 * B * B  # the cap, thresholds included
    assert recall < 0.5
    # The audit sees the misses: the estimate is far below the target, near the truth.
    assert selection.estimated_recall < 0.6
    assert abs(selection.estimated_recall - recall) < 0.25
    assert "below target_recall" in caplog.text


def test_expansion_recovers_what_a_useless_student_ranks_at_random_within_the_cap() -> None:
    texts, embeddings = _batch()
    everything, *_ = _everything(texts, embeddings)
    noisy = _student(texts, embeddings, noise=50.0)  # ranks at random
    recall = {}
    for expand in (False, True):
        budget = RecallBudget(budget_ratio=0.005, max_budget_ratio=0.02, expand=expand).start()
        masked, selection, judge, service = _run(
            lambda step, judge, blocks, budget=budget: budget(noisy, blocks, step, judge),
            texts,
            embeddings,
        )
        assert masked <= everything
        assert judge.scored_pairs <= 0.02 * 4 * B * B  # the cap, thresholds included
        assert len(service.sent) == len(set(service.sent))  # each distinct pair once per step
        c = selection.candidates
        keys = list(zip(c.block.tolist(), c.row.tolist(), c.col.tolist()))
        assert len(keys) == len(set(keys))  # each candidate listed once
        recall[expand] = len(masked) / len(everything)
    # The topics are transitive here (cosine clusters), so verified links reach most of them.
    assert recall[False] < 0.5
    assert recall[True] > 0.8


def test_expansion_finds_the_cross_block_false_negatives_of_rows_the_student_garbles() -> None:
    """The student embeds the anchors of topic 0 well (aa finds their links) but their
    positives and negatives as random vectors: the ap, pp and an false negatives between those
    rows are scattered through its ranking. The aa verdicts imply all of them."""
    texts, embeddings = _batch()
    everything, *_ = _everything(texts, embeddings)
    lost = np.array([t.split()[1] == "0" for t in texts[0]])
    columns = _student(texts, embeddings)
    rng = np.random.default_rng(5)
    for column in (1, 2):
        columns[column][torch.from_numpy(lost)] = torch.from_numpy(
            rng.normal(size=(int(lost.sum()), 32))
        )
    planted = {
        (block, i, j)
        for (block, i, j) in everything
        if block in (0, 2, 3) and lost[i] and lost[j] and (block == 3 or i != j)
    }
    assert len(planted) > 100
    found = {}
    for expand in (False, True):
        budget = RecallBudget(budget_ratio=0.005, max_budget_ratio=0.02, expand=expand).start()
        masked, *_ = _run(
            lambda step, judge, blocks, budget=budget: budget(columns, blocks, step, judge),
            texts,
            embeddings,
        )
        found[expand] = len(planted & masked)
    assert found[False] < 0.9 * len(planted)  # the bands alone miss some
    assert found[True] == len(planted)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget_ratio": 0.0}, "budget_ratio"),
        ({"budget_ratio": 0.5, "max_budget_ratio": 0.1}, "exceeds max_budget_ratio"),
        ({"target_recall": 1.2}, "target_recall"),
        ({"audit_ratio": 2.0}, "audit_ratio"),
    ],
)
def test_recall_budget_refuses_inconsistent_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RecallBudget(**kwargs)


def test_one_global_allocation_follows_false_negatives_concentrated_on_a_few_anchors() -> None:
    """A few anchors whose own positive the guide scores low let nearly every candidate through,
    in every block: the global ranking against the guide's cutoffs sends those rows whole in
    the first allocation, instead of splitting the budget per block."""
    texts, embeddings = _batch()
    rng = np.random.default_rng(3)
    for row in range(6):  # rows 0-5 get a positive unrelated to their anchor
        name = f"far positive {row}"
        vector = rng.normal(size=32)
        embeddings[name] = -vector / np.linalg.norm(vector)
        texts[1][row] = name
    everything, *_ = _everything(texts, embeddings)
    concentrated = {key for key in everything if key[1] < 6}
    assert len(concentrated) > 0.3 * len(everything)
    budget = RecallBudget(budget_ratio=0.002, max_budget_ratio=0.1).start()
    columns = _student(texts, embeddings)
    masked, selection, judge, _ = _run(
        lambda step, judge, blocks: budget(columns, blocks, step, judge), texts, embeddings
    )
    assert len(concentrated & masked) >= 0.97 * len(concentrated)
    assert len(masked) >= 0.97 * len(everything)
    assert judge.calls == 2  # calibration, then one allocation sized by its expected yield
    # The allocation is about the false negatives' size: calibration and audit on top.
    assert judge.scored_pairs <= 1.3 * len(everything) + selection.audit_pairs + B
    assert abs(selection.estimated_recall - len(masked) / len(everything)) < 0.03


@pytest.mark.parametrize("size", [16, 32])
def test_at_a_batch_too_small_for_the_audit_the_cap_holds_and_the_recall_is_unknown(
    size: int, caplog
) -> None:
    """Defaults at B=16 and 32: the cap (3% of 4B**2: 30 and 122 pairs) leaves room for the B
    threshold pairs and part of the calibration sample, none for the audit. The cap holds on
    the first call, the sample still reaches every block, and the step says its recall is
    unknown instead of claiming 100% from audit samples that were never scored."""
    texts, embeddings = _batch(size=size)
    budget = RecallBudget().start()
    columns = _student(texts, embeddings)
    _, selection, judge, _ = _run(
        lambda step, judge, blocks: budget(columns, blocks, step, judge), texts, embeddings
    )
    assert judge.scored_pairs <= int(0.03 * 4 * size * size)
    c = selection.candidates
    columns_of = [(0, 1), (0, 0), (1, 1), (0, 2)]  # ap, aa, pp, an (loss_blocks' order)
    scored_blocks = {
        block
        for block, row, col in zip(c.block.tolist(), c.row.tolist(), c.col.tolist())
        if texts[columns_of[block][0]][row] != texts[columns_of[block][1]][col]
    }
    assert scored_blocks == {0, 1, 2, 3}
    assert np.isnan(selection.estimated_recall)
    assert selection.audit_pairs <= len(c) - judge.identity_masked  # what was sent, no more
    assert "cannot be estimated" in caplog.text


def test_each_scored_candidate_joins_the_calibration_once(monkeypatch) -> None:
    from reranker_client.losses import _guide_calibration

    added: list[int] = []
    add = _guide_calibration.GuideCalibration.add

    def counting_add(self, block, student, guide):
        added.append(len(block))
        return add(self, block, student, guide)

    monkeypatch.setattr(_guide_calibration.GuideCalibration, "add", counting_add)
    texts, embeddings = _batch()
    budget = RecallBudget(budget_ratio=0.005, max_budget_ratio=0.05).start()
    columns = _student(texts, embeddings, noise=0.5)
    _, selection, judge, _ = _run(
        lambda step, judge, blocks: budget(columns, blocks, step, judge), texts, embeddings
    )
    assert judge.calls >= 3  # calibration, the allocation and at least one refit round
    assert sum(added) == len(selection.candidates)


def test_an_expansion_that_does_not_pay_costs_only_its_trial(monkeypatch) -> None:
    """On text whose verdicts imply little, the expansion's first round is a small trial, and
    the ranking takes over when it yields more: the useless expansion here (a fake that
    proposes the half of the candidates the guide finds least similar, which no ranking
    reaches) costs about nothing against no expansion at all. One unbounded expansion round
    had spent the room at its own yield."""
    texts, embeddings = _batch()
    everything, *_ = _everything(texts, embeddings)
    columns = _student(texts, embeddings, noise=0.2)  # its first allocation yields < 0.5
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    every = all_candidates(blocks, B)
    guide = np.array(
        [
            embeddings[texts[blocks[b].query_column][i]]
            @ embeddings[texts[blocks[b].document_column][j]]
            for b, i, j in zip(every.block.tolist(), every.row.tolist(), every.col.tolist())
        ]
    )
    worst_first = np.argsort(guide, kind="stable")[: len(every) // 2]
    proposed = set(every.flat_keys(B)[worst_first].tolist())

    class UselessExpansion:
        """Fake of VerdictExpansion: proposes what the verdicts do not imply."""

        pending = True

        def __init__(self, *_: object) -> None:
            pass

        def add(self, *_: object) -> None:
            pass

        def propose(self, scored: np.ndarray):
            order = worst_first[~scored[every.flat_keys(B)[worst_first]]]
            return Candidates(every.block[order], every.row[order], every.col[order])

    recall, expansion_sent = {}, {}
    for expand in (False, True):
        if expand:
            monkeypatch.setattr(_recall_budget, "VerdictExpansion", UselessExpansion)
        budget = RecallBudget(budget_ratio=0.002, max_budget_ratio=0.05, expand=expand).start()
        masked, selection, judge, _ = _run(
            lambda step, judge, blocks, budget=budget: budget(columns, blocks, step, judge),
            texts,
            embeddings,
        )
        recall[expand] = len(masked) / len(everything)
        sent = selection.candidates.flat_keys(B)
        expansion_sent[expand] = len(set(sent.tolist()) & proposed)
    assert recall[False] > 0.6, "the student's ranking alone finds most of them"
    assert recall[True] >= recall[False] - 0.01  # was 0.39 against 0.76
    # What the fake's half cost beyond what the ranking itself sent of it (was 25,501).
    assert 0 < expansion_sent[True] - expansion_sent[False] <= 0.01 * len(every)
