"""bench/ranking_ceiling.py: the reach of a ranking, on made-up scores (no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import ranking_ceiling  # noqa: E402
from reranker_client.losses._candidates import loss_blocks  # noqa: E402


def _batch(size: int = 40):
    rng = np.random.default_rng(0)
    # Texts of 10 topics: a row's positive is its anchor's topic, so are some other rows'.
    centres = rng.normal(size=(10, 16))
    embeddings = centres[rng.integers(0, 10, 3 * size)] + 0.6 * rng.normal(size=(3 * size, 16))
    embeddings[size : 2 * size] = embeddings[:size] + 0.6 * rng.normal(size=(size, 16))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    id_columns = [np.arange(size), np.arange(size, 2 * size), np.arange(2 * size, 3 * size)]
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    guide = ranking_ceiling.block_scores(embeddings, id_columns, blocks)
    cutoffs = np.einsum("ij,ij->i", embeddings[id_columns[0]], embeddings[id_columns[1]]) - 0.05
    valid = ranking_ceiling.valid_candidates(id_columns, blocks)
    return embeddings, guide, cutoffs, valid


def test_reach_counts_the_false_negatives_within_each_budget() -> None:
    _, guide, cutoffs, valid = _batch()
    false_negatives = (guide > cutoffs[None, :, None]) & valid
    total = int(false_negatives.sum())
    assert 0 < total < valid.sum() / 2
    oracle = ranking_ceiling.reach(
        guide - cutoffs[None, :, None], false_negatives, valid, [total // 2, total, 2 * total]
    )
    assert oracle == [(total // 2) / total, 1.0, 1.0]
    # Ranking worst first finds none of them until the budget reaches past the true negatives.
    reverse = ranking_ceiling.reach(
        cutoffs[None, :, None] - guide, false_negatives, valid, [total, int(valid.sum())]
    )
    assert reverse == [0.0, 1.0]
    # The diagonal pairs are never ranked, however high they score.
    assert not valid[0].diagonal().any() and valid[3].diagonal().all()


def test_a_calibrated_copy_of_the_guide_ranks_as_the_oracle() -> None:
    _, guide, cutoffs, valid = _batch()
    false_negatives = (guide > cutoffs[None, :, None]) & valid
    budgets = [10, 50, 200]
    student = 0.5 * guide + 0.1  # the guide's ranking on another scale
    z = ranking_ceiling.calibrated_z(student, guide, cutoffs, valid, seed=0)
    assert ranking_ceiling.reach(z, false_negatives, valid, budgets) == ranking_ceiling.reach(
        guide - cutoffs[None, :, None], false_negatives, valid, budgets
    )
