"""The reranker losses against the real service serving all-MiniLM-L6-v2 (bi-encoder cosine scores).

With the service scoring pairs by the cosine of MiniLM embeddings and sentence-transformers'
``CachedGISTEmbedLoss`` guided by the same MiniLM, the two losses must agree: same masks, same loss,
same gradients. The service embeds with vLLM and the guide with torch, so scores differ by ~1e-6;
the batch is checked to have no score within 1e-3 of a masking bound, where such noise could flip
a decision.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from loss_helpers import COLUMNS, guide_embedder, relative_error, run_step, twin_students
from reranker_client import RerankerClient
from reranker_client.losses import (
    OptimizedRerankerCachedGISTEmbedLoss,
    PerAnchorTopK,
    RecallBudget,
    RerankerCachedGISTEmbedLoss,
)
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss

pytestmark = pytest.mark.engine

#: Largest relative difference allowed between the two losses' parameter gradients
#: (max |g1 - g2| / max |g1|), and between their loss values.
GRAD_RTOL = 1e-4
LOSS_RTOL = 1e-5
MARGIN = 0.05
#: Smallest distance of any guide score to its masking bound, so that vLLM-vs-torch noise (~1e-6)
#: cannot decide a mask.
TIE_GAP = 1e-3


@pytest.fixture(scope="module")
def student(minilm_dir) -> SentenceTransformer:
    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="module")
def guide(minilm_dir) -> SentenceTransformer:
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    model.eval()
    return model


@pytest.fixture(scope="module")
def client(minilm_server):
    with RerankerClient(minilm_server.url, timeout=120) as client:
        yield client


def _guide_masks(guide, strategy: str, contrast_anchors: bool, contrast_positives: bool):
    """The candidates CachedGISTEmbedLoss masks, from the torch guide, and the closest call."""
    embed = guide_embedder(guide)
    e = [torch.from_numpy(embed(list(column))) for column in COLUMNS]
    t = (e[0] * e[1]).sum(-1)
    bound = t - MARGIN if strategy == "absolute" else t - t.abs() * MARGIN
    blocks = [("ap", 0, 1)]
    blocks += [("aa", 0, 0)] if contrast_anchors else []
    blocks += [("pp", 1, 1)] if contrast_positives else []
    blocks += [("an", 0, 2)]
    masked, gap = set(), float("inf")
    for (name, q, d), i, j in itertools.product(blocks, range(16), range(16)):
        if name != "an" and i == j:
            continue  # own positive (never masked) and self pairs (always masked)
        score = float(e[q][i] @ e[d][j])
        gap = min(gap, abs(score - float(bound[i])))
        if score > bound[i]:
            masked.add((name, i, j))
    return masked, gap


CASES = [
    ("absolute", True, True),
    ("absolute", False, False),
    ("absolute", True, False),
    ("relative", True, True),
    ("relative", False, False),
]


@pytest.mark.parametrize(("strategy", "contrast_anchors", "contrast_positives"), CASES)
def test_equivalent_to_cached_gist_embed_loss(
    student, guide, client, strategy, contrast_anchors, contrast_positives
) -> None:
    expected_masks, gap = _guide_masks(guide, strategy, contrast_anchors, contrast_positives)
    assert gap > TIE_GAP, "a score sits on a masking bound; change the batch or the margin"
    assert len(expected_masks) >= 10, "the batch should contain real false negatives"

    original_student, student_copy = twin_students(student)
    options = dict(
        mini_batch_size=6,
        margin_strategy=strategy,
        margin=MARGIN,
        contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives,
    )
    original = CachedGISTEmbedLoss(original_student, guide, **options)
    mine = RerankerCachedGISTEmbedLoss(student_copy, client=client, **options)

    expected_loss, expected_grads = run_step(original, original_student, COLUMNS, seed=7)
    loss, grads = run_step(mine, student_copy, COLUMNS, seed=7)

    assert mine.last_guide_masks.masked_set() == expected_masks
    assert mine.last_step_stats.masked == len(expected_masks)
    assert loss == pytest.approx(expected_loss, rel=LOSS_RTOL)
    assert relative_error(expected_grads, grads) < GRAD_RTOL


@pytest.mark.parametrize("strategy", ["absolute", "relative"])
def test_optimized_loss_opened_up_masks_what_the_plain_loss_masks(
    student, client, strategy
) -> None:
    plain_student, optimized_student = twin_students(student)
    plain = RerankerCachedGISTEmbedLoss(
        plain_student, client=client, margin_strategy=strategy, margin=MARGIN
    )
    optimized = OptimizedRerankerCachedGISTEmbedLoss(
        optimized_student,
        client=client,
        margin_strategy=strategy,
        margin=MARGIN,
        selection=PerAnchorTopK(
            similarity_threshold=-1,
            top_k_ratio=1,
            min_top_k=0,
            max_candidates=None,
            hybrid_threshold=0,
        ),
    )
    plain_loss, plain_grads = run_step(plain, plain_student, COLUMNS, seed=11)
    loss, grads = run_step(optimized, optimized_student, COLUMNS, seed=11)

    masks = optimized.last_guide_masks.masked_set(include_self_pairs=True)
    assert masks == plain.last_guide_masks.masked_set(include_self_pairs=True)
    assert optimized.last_step_stats.masked > 0
    assert optimized.last_step_stats.sent_pairs == plain.last_step_stats.sent_pairs
    assert loss == pytest.approx(plain_loss, rel=LOSS_RTOL)
    assert relative_error(plain_grads, grads) < GRAD_RTOL


def test_balanced_preset_keeps_most_false_negatives_on_this_batch(student, client) -> None:
    plain_student, optimized_student = twin_students(student)
    plain = RerankerCachedGISTEmbedLoss(plain_student, client=client, margin=MARGIN)
    optimized = OptimizedRerankerCachedGISTEmbedLoss(
        optimized_student, client=client, margin=MARGIN, selection=PerAnchorTopK.preset("balanced")
    )
    run_step(plain, plain_student, COLUMNS, seed=5)
    run_step(optimized, optimized_student, COLUMNS, seed=5)
    kept = optimized.last_guide_masks.masked_set()
    everything = plain.last_guide_masks.masked_set()
    # A masked candidate is one the reranker rates above the threshold, which the student (the
    # same MiniLM here) rates high too: the pre-filter sends it, and the mask is the same.
    assert kept <= everything
    assert len(kept) >= 0.9 * len(everything)
    assert optimized.last_step_stats.sent_pairs < plain.last_step_stats.sent_pairs


def test_default_budget_keeps_the_false_negatives_and_estimates_its_recall(student, client) -> None:
    plain_student, optimized_student = twin_students(student)
    plain = RerankerCachedGISTEmbedLoss(plain_student, client=client, margin=MARGIN)
    optimized = OptimizedRerankerCachedGISTEmbedLoss(
        optimized_student,
        client=client,
        margin=MARGIN,
        # A batch this small has 4B^2 = a few hundred candidates, so the default cap (3% of
        # them) allows a handful of pairs, which the calibration sample alone would use up: the
        # whole batch is the budget's room here.
        selection=RecallBudget(target_recall=0.99, max_budget_ratio=1.0),
    )
    run_step(plain, plain_student, COLUMNS, seed=5)
    run_step(optimized, optimized_student, COLUMNS, seed=5)
    kept = optimized.last_guide_masks.masked_set()
    everything = plain.last_guide_masks.masked_set()
    stats = optimized.last_step_stats
    assert kept <= everything
    # The student is the guide here: the budget grows until the estimate reaches the target,
    # and the estimate (from the audit sample) must not claim more than was found.
    assert len(kept) >= 0.99 * len(everything)
    assert stats.estimated_recall >= 0.99
    assert stats.audit_pairs > 0 and stats.rounds >= 1
    assert stats.sent_pairs < plain.last_step_stats.sent_pairs
    assert optimized.reranker_info["family"] == "bi-encoder"
