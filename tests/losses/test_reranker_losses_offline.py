"""The reranker losses end to end against a fake service (no engine): calls, texts, logs, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from loss_helpers import (
    ANCHORS,
    COLUMNS,
    NEGATIVES,
    POSITIVES,
    FakeService,
    features,
    guide_embedder,
    relative_error,
    run_step,
    twin_students,
)
from reranker_client import RerankerClient
from reranker_client.losses import (
    AllCandidates,
    OptimizedRerankerCachedGISTEmbedLoss,
    PerAnchorTopK,
    RecallBudget,
    RerankerCachedGISTEmbedLoss,
    RerankerDataCollator,
    RerankerStatsCallback,
)
from reranker_client.losses._candidates import loss_blocks
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss
from transformers import TrainerControl, TrainerState, TrainingArguments


@pytest.fixture(scope="module")
def student(minilm_dir) -> SentenceTransformer:
    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="module")
def guide(minilm_dir) -> SentenceTransformer:
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    model.eval()  # the guide's dropout would otherwise draw from the students' random stream
    return model


@pytest.fixture
def service(guide) -> FakeService:
    return FakeService(guide_embedder(guide))


def test_import_of_the_thin_client_stays_light() -> None:
    code = (
        "import sys, reranker_client; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'reranker_client.losses') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_same_loss_and_gradients_as_cached_gist_with_a_cosine_guide(
    student, guide, service
) -> None:
    original_student, student_copy = twin_students(student)
    original = CachedGISTEmbedLoss(
        original_student, guide, mini_batch_size=5, margin_strategy="absolute", margin=0.05
    )
    mine = RerankerCachedGISTEmbedLoss(
        student_copy, client=service.client(), mini_batch_size=5, margin=0.05
    )
    expected_loss, expected_grads = run_step(original, original_student, COLUMNS, seed=3)
    loss, grads = run_step(mine, student_copy, COLUMNS, seed=3)
    assert mine.last_step_stats is not None and mine.last_step_stats.masked > 0
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert relative_error(expected_grads, grads) < 1e-4


def test_one_reranker_call_per_step_none_from_backward_with_distinct_texts_and_pairs(
    student, service
) -> None:
    _, model = twin_students(student)
    loss = RerankerCachedGISTEmbedLoss(model, client=service.client(), mini_batch_size=4)
    value = loss(features(model, COLUMNS), None)
    assert len(service.bodies) == 1
    value.backward()
    assert len(service.bodies) == 1, "the backward pass must not call the reranker"

    body = service.bodies[0]
    assert len(body["queries"]) == len(set(body["queries"]))
    assert len(body["documents"]) == len(set(body["documents"]))
    pairs = [(body["queries"][q], body["documents"][d]) for q, d in body["pairs"]]
    assert len(pairs) == len(set(pairs))
    # The decoded texts (MiniLM is uncased) of every logit except the self pairs of aa and pp.
    decoded = [
        model.tokenizer.batch_decode(model.preprocess(c)["input_ids"], skip_special_tokens=True)
        for c in COLUMNS
    ]
    a, p, n = decoded
    expected = {(a[i], p[j]) for i in range(16) for j in range(16)}
    expected |= {(a[i], a[j]) for i in range(16) for j in range(16) if i != j}
    expected |= {(p[i], p[j]) for i in range(16) for j in range(16) if i != j}
    expected |= {(a[i], n[j]) for i in range(16) for j in range(16)}
    # A text against an equal text (the batch repeats an anchor) is masked, never sent.
    assert {(q, d) for q, d in expected if q == d}
    expected = {(q, d) for q, d in expected if q != d}
    assert set(pairs) == expected
    stats = loss.last_step_stats
    assert stats.sent_pairs == len(expected) and stats.naive_pairs == 4 * 16 * 16
    assert stats.considered_pairs == 4 * 16 * 16 - 2 * 16  # only the self pairs are never asked
    assert stats.requests == 2  # GET /info once, then one scoring request


def test_raw_texts_from_the_collator_reach_the_reranker(student, service) -> None:
    _, model = twin_students(student)
    collator = RerankerDataCollator(model.preprocess)
    rows = [
        {"anchor": a, "positive": p, "negative": n}
        for a, p, n in zip(ANCHORS, POSITIVES, NEGATIVES)
    ]
    batch = collator(rows)
    assert batch["anchor_reranker_text"] == ANCHORS
    column_features = [
        {k[len(c) + 1 :]: v for k, v in batch.items() if k.startswith(c + "_")}
        for c in ("anchor", "positive", "negative")
    ]
    loss = RerankerCachedGISTEmbedLoss(
        model, client=service.client(), contrast_anchors=False, contrast_positives=False
    )
    loss(column_features, None).backward()
    sent = set(service.bodies[0]["queries"]) | set(service.bodies[0]["documents"])
    assert sent == set(ANCHORS) | set(POSITIVES) | set(NEGATIVES)  # original case and accents


def test_collator_keeps_the_trainer_prompts_out_of_the_raw_texts(student) -> None:
    args = SentenceTransformerTrainingArguments(
        output_dir="unused", report_to=[], prompts={"anchor": "query: "}
    )
    collator = RerankerDataCollator.for_model(student, args)
    batch = collator([{"anchor": "Café au lait?", "positive": "Coffee with milk.", "label": 1}])
    assert batch["anchor_reranker_text"] == ["Café au lait?"]
    assert batch["positive_reranker_text"] == ["Coffee with milk."]
    assert "label_reranker_text" not in batch and batch["label"].tolist() == [1]
    decoded = student.tokenizer.decode(batch["anchor_input_ids"][0], skip_special_tokens=True)
    assert decoded == "query : cafe au lait?"  # what decoding would have sent instead


def test_evaluation_uses_the_reranker_without_caching_gradients(student, service) -> None:
    _, model = twin_students(student)
    model.eval()
    loss = RerankerCachedGISTEmbedLoss(model, client=service.client(), mini_batch_size=8)
    train_value = loss(features(model, COLUMNS), None)
    train_value.backward()
    with torch.no_grad():
        eval_value = loss(features(model, COLUMNS), None)
    assert not eval_value.requires_grad
    assert eval_value.item() == pytest.approx(train_value.item(), rel=1e-5)
    assert len(service.bodies) == 2
    assert service.bodies[1]["pairs"] == service.bodies[0]["pairs"]


def test_optimized_loss_sends_fewer_pairs_and_reports_them_in_the_logs(
    student, service, capsys
) -> None:
    _, model = twin_students(student)
    model.eval()  # no dropout: every step embeds, and so pre-filters, the same way
    loss = OptimizedRerankerCachedGISTEmbedLoss(
        model,
        client=service.client(),
        selection=PerAnchorTopK.preset("aggressive", max_candidates=6),
        show_progress_bar=True,
    )
    callback = RerankerStatsCallback(loss)
    for _ in range(2):
        loss(features(model, COLUMNS), None).backward()
    stats = loss.last_step_stats
    with torch.no_grad():
        loss(features(model, COLUMNS), None)  # evaluation: not in the training logs
    assert "Reranker pairs" in capsys.readouterr().err
    assert 0 < stats.sent_pairs <= 16 * (6 + 1)
    assert stats.cache_hits == stats.sent_pairs  # later steps asked the same pairs again
    assert stats.reduction > 0.8

    state = TrainerState()
    state.log_history.append({"loss": 1.0, "step": 2})
    logs = {"loss": 1.0}
    callback.on_log(
        TrainingArguments(output_dir="unused", report_to=[]), state, TrainerControl(), logs=logs
    )
    assert logs["reranker_sent_pairs"] == stats.sent_pairs
    assert logs["reranker_naive_pairs"] == 4 * 16 * 16
    assert logs["reranker_cache_hits"] == stats.sent_pairs / 2  # mean over the two steps
    assert state.log_history[-1]["reranker_reduction"] == pytest.approx(
        1 - 2 * stats.sent_pairs / (2 * 4 * 16 * 16)
    )
    config = loss.get_config_dict()
    assert config["selection"] == "PerAnchorTopK"
    assert config["max_candidates"] == 6 and config["hybrid_threshold"] == 0.6


def test_constructor_errors_say_how_to_fix_the_call(student) -> None:
    client = RerankerClient("http://fake.test")
    with pytest.raises(ValueError, match="exactly one of"):
        RerankerCachedGISTEmbedLoss(student)
    with pytest.raises(ValueError, match="exactly one of"):
        RerankerCachedGISTEmbedLoss(student, client=client, reranker_url="http://fake.test")
    with pytest.raises(ValueError, match=r"pass them to RerankerClient"):
        RerankerCachedGISTEmbedLoss(student, client=client, timeout=5)
    with pytest.raises(ValueError, match="margin_strategy"):
        RerankerCachedGISTEmbedLoss(student, client=client, margin_strategy="percent")
    with pytest.raises(ValueError, match="preset"):
        OptimizedRerankerCachedGISTEmbedLoss(student, client=client, preset="fast")
    with pytest.raises(ValueError, match="min_top_k"):
        OptimizedRerankerCachedGISTEmbedLoss(
            student, client=client, preset="balanced", max_candidates=3
        )
    with pytest.raises(ValueError, match="per-anchor presets"):
        OptimizedRerankerCachedGISTEmbedLoss(student, client=client, max_candidates=3)
    with pytest.raises(ValueError, match="target_recall"):
        OptimizedRerankerCachedGISTEmbedLoss(student, client=client, target_recall=1.5)
    with pytest.raises(TypeError, match="selection strategy"):
        RerankerCachedGISTEmbedLoss(student, client=client, selection="balanced")
    with pytest.raises(ValueError, match="not both"):
        OptimizedRerankerCachedGISTEmbedLoss(
            student, client=client, selection=RecallBudget(), target_recall=0.9
        )
    with pytest.raises(ValueError, match="gather_across_devices"):
        RerankerCachedGISTEmbedLoss(student, client=client, gather_across_devices=True)
    with pytest.raises(ValueError, match="on_reranker_error"):
        RerankerCachedGISTEmbedLoss(student, client=client, on_reranker_error="ignore")
    with pytest.raises(ValueError, match="once"):
        RerankerCachedGISTEmbedLoss(student, "http://fake.test", reranker_url="http://fake.test")
    for tokens in (0, -64):  # as sentence-transformers' cached losses refuse it
        with pytest.raises(ValueError, match="mini_batch_num_tokens must be a positive integer"):
            RerankerCachedGISTEmbedLoss(student, client=client, mini_batch_num_tokens=tokens)
        with pytest.raises(ValueError, match="mini_batch_num_tokens must be a positive integer"):
            OptimizedRerankerCachedGISTEmbedLoss(
                student, client=client, mini_batch_num_tokens=tokens
            )
        with pytest.raises(ValueError, match="mini_batch_num_tokens must be a positive integer"):
            CachedGISTEmbedLoss(student, student, mini_batch_num_tokens=tokens)
    for tokens in (None, 1, 512):
        RerankerCachedGISTEmbedLoss(
            student, client=client, mini_batch_num_tokens=tokens, check_reranker=False
        )
    # Positional URL; credentials never reach the config (the model card).
    loss = RerankerCachedGISTEmbedLoss(
        student, "http://user:secret@fake.test:9/base", timeout=3, check_reranker=False
    )
    assert loss.get_config_dict()["reranker_url"] == "http://fake.test:9/base"
    assert "secret" not in repr(loss.get_config_dict())
    assert "GISTEmbed" in loss.citation


def test_plain_loss_warns_once_with_the_size_of_a_large_step(student, service, caplog) -> None:
    loss = RerankerCachedGISTEmbedLoss(student, client=service.client())
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    columns = [torch.zeros(600, 4)] * 3

    def judge_nothing(candidates):  # a fake judge: only the candidates' count matters here
        return np.zeros(len(candidates), dtype=bool)

    with caplog.at_level("WARNING"):
        for _ in range(2):
            selection = loss.selector(columns, blocks, None, judge_nothing)
    assert len(selection.candidates) == 4 * 600 * 600 - 3 * 600
    warnings = [r.getMessage() for r in caplog.records if "pairs per step" in r.getMessage()]
    assert len(warnings) == 1 and "1,440,000" in warnings[0]


def test_reranker_trainer_sends_raw_texts_and_logs_the_accounting(student, service, tmp_path):
    from datasets import Dataset
    from reranker_client.losses import RerankerStatsCallback, RerankerTrainer

    _, model = twin_students(student)
    loss = RerankerCachedGISTEmbedLoss(model, client=service.client())
    texts = ["Café 🙂 C++", "Crème brûlée", "Naïve Bayes", "Ünïcödé"]
    dataset = Dataset.from_dict({"anchor": texts, "positive": [t + "!" for t in texts]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        per_device_train_batch_size=4,
        max_steps=1,
        logging_steps=1,
    )
    trainer = RerankerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    assert isinstance(trainer.data_collator, RerankerDataCollator)
    assert isinstance(trainer.callback_handler.callbacks[0], RerankerStatsCallback)
    trainer.train()
    sent = set(service.bodies[0]["queries"]) | set(service.bodies[0]["documents"])
    assert "Café 🙂 C++" in sent  # not "cafe c + +", as decoding MiniLM's ids would give
    logged = [entry for entry in trainer.state.log_history if "reranker_sent_pairs" in entry]
    assert logged and logged[0]["reranker_sent_pairs"] > 0


@pytest.mark.parametrize(
    ("old", "selection"),
    [
        ({}, RecallBudget()),
        ({"preset": None}, RecallBudget()),
        (
            {"target_recall": 0.9, "budget_ratio": 0.002, "expand": False},
            RecallBudget(target_recall=0.9, budget_ratio=0.002, expand=False),
        ),
        ({"target_recall": None}, RecallBudget(target_recall=None)),
        ({"preset": "balanced"}, PerAnchorTopK()),
        (
            {"preset": "aggressive", "max_candidates": 6, "similarity_threshold": -1},
            PerAnchorTopK.preset("aggressive", max_candidates=6, similarity_threshold=-1),
        ),
    ],
)
def test_earlier_keyword_arguments_still_work_and_name_their_replacement(
    student, old, selection
) -> None:
    client = RerankerClient("http://fake.test")
    if old:
        with pytest.warns(DeprecationWarning, match=r"pass selection=") as caught:
            loss = OptimizedRerankerCachedGISTEmbedLoss(
                student, client=client, check_reranker=False, **old
            )
        assert caught[0].filename == __file__  # points at the caller
    else:
        loss = OptimizedRerankerCachedGISTEmbedLoss(student, client=client, check_reranker=False)
    assert loss.selection == selection
    assert loss.get_config_dict()["selection"] == type(selection).__name__
    plain = RerankerCachedGISTEmbedLoss(student, client=client, check_reranker=False)
    assert plain.selection == AllCandidates()
    with pytest.raises(ValueError, match="preset='balanced' replaces"):
        OptimizedRerankerCachedGISTEmbedLoss(
            student, client=client, preset="balanced", target_recall=0.9
        )


def test_matryoshka_wraps_the_loss_step_and_the_reranker_is_asked_once(student, service) -> None:
    """MatryoshkaLoss decorates a cached loss's ``calculate_loss`` (CachedLossMixin's loss step):
    every dimension is trained, and the reranker is consulted once per step, not per dimension."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    _, model = twin_students(student)
    inner = RerankerCachedGISTEmbedLoss(model, client=service.client(), mini_batch_size=8)
    loss = MatryoshkaLoss(model, inner, matryoshka_dims=[384, 64])
    model.zero_grad(set_to_none=True)
    value = loss(features(model, COLUMNS[:2]), None)
    value.backward()
    assert len(service.bodies) == 1
    assert torch.isfinite(value) and value.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
