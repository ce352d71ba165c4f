"""``on_reranker_error``, the start-up check and the per-step failure counters of the losses.

The service is the fake of ``loss_helpers`` (guide cosine through a real client on
``httpx.MockTransport``), made to fail its first scoring requests with 503, as an engine that is
reloading does; the client does not retry (``max_retries=0``) so each failure reaches the loss.
"""

from __future__ import annotations

import httpx
import pytest
import torch
from loss_helpers import COLUMNS, FakeService, features, guide_embedder
from reranker_client import RerankerClient, RerankerUnavailableError
from reranker_client.losses import RerankerCachedGISTEmbedLoss
from reranker_client.losses._accounting import RerankerStepStats, StatsAccumulator
from sentence_transformers import SentenceTransformer

LOADING = {"error": "unavailable", "detail": "the engine is loading"}


class FailingFirst:
    """Wraps the fake service: the first ``failures`` scoring requests answer 503."""

    def __init__(self, service: FakeService, failures: int, health_status: int = 200) -> None:
        self.service = service
        self.failures = failures
        self.health_status = health_status
        self.scoring_requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(self.health_status, json={"status": "loading"} | LOADING)
        if request.url.path == "/rerank_batch_simple":
            self.scoring_requests += 1
            if self.scoring_requests <= self.failures:
                return httpx.Response(503, json=LOADING)
        return self.service.handler(request)

    def client(self) -> RerankerClient:
        return RerankerClient(
            "http://fake.test", transport=httpx.MockTransport(self.handler), max_retries=0
        )


@pytest.fixture(scope="module")
def student(minilm_dir) -> SentenceTransformer:
    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="module")
def embed(minilm_dir):
    guide = SentenceTransformer(str(minilm_dir), device="cpu")
    guide.eval()
    return guide_embedder(guide)


def _loss(student, service: FailingFirst, **kwargs) -> RerankerCachedGISTEmbedLoss:
    loss = RerankerCachedGISTEmbedLoss(student, client=service.client(), **kwargs)
    loss.failure_policy._sleep = lambda seconds: sleeps.append(seconds)  # type: ignore[method-assign]
    return loss


sleeps: list[float] = []


@pytest.fixture(autouse=True)
def fresh_sleeps() -> None:
    sleeps.clear()


def test_raise_propagates_the_client_error(student, embed) -> None:
    loss = _loss(student, FailingFirst(FakeService(embed), failures=1))
    with pytest.raises(RerankerUnavailableError, match="loading"):
        loss(features(student, COLUMNS), None)


def test_wait_retries_the_step_through_an_outage(student, embed) -> None:
    service = FailingFirst(FakeService(embed), failures=2)
    loss = _loss(student, service, on_reranker_error="wait")
    value = loss(features(student, COLUMNS), None)
    value.backward()
    assert sleeps == [1.0, 2.0]  # doubling pauses
    stats = loss.last_step_stats
    assert stats.failures == 2 and stats.skipped == 0
    assert stats.masked > 0 and stats.sent_pairs > 0
    assert service.scoring_requests == 3


def test_wait_gives_up_after_its_budget(student, embed) -> None:
    loss = _loss(
        student,
        FailingFirst(FakeService(embed), failures=1000),
        on_reranker_error="wait",
        reranker_wait_timeout=0.5,
    )
    with pytest.raises(RuntimeError, match="reranker_wait_timeout"):
        loss(features(student, COLUMNS), None)


def test_skip_returns_a_zero_loss_counts_the_step_and_caps_the_share(student, embed) -> None:
    service = FailingFirst(FakeService(embed), failures=1)
    loss = _loss(student, service, on_reranker_error="skip", max_skipped_share=0.05)
    student.zero_grad(set_to_none=True)
    value = loss(features(student, COLUMNS), None)
    value.backward()
    assert value.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in student.parameters())
    assert loss.last_step_stats.skipped == 1 and loss.last_step_stats.failures == 1
    assert loss.last_step_stats.wait_seconds > 0  # the failed call's time is counted
    for _ in range(9):  # 1 skipped of 10 steps is more than 5%: the tenth step raises
        loss.failure_policy.run(lambda: None, training=True)
    service.failures = service.scoring_requests + 1
    with pytest.raises(RuntimeError, match="max_skipped_share"):
        loss(features(student, COLUMNS), None)


def test_start_up_check_fails_fast_with_a_clear_message(student, embed) -> None:
    service = FailingFirst(FakeService(embed), failures=0, health_status=503)
    with pytest.raises(RuntimeError, match=r"not ready.*check_reranker=False"):
        RerankerCachedGISTEmbedLoss(student, client=service.client())
    loss = RerankerCachedGISTEmbedLoss(student, client=service.client(), check_reranker=False)
    assert loss.reranker_info == {}


def test_start_up_check_records_the_guide_for_the_model_card(student, embed) -> None:
    loss = RerankerCachedGISTEmbedLoss(student, client=FakeService(embed).client())
    assert loss.get_config_dict()["reranker"] == {
        "model": "fake",
        "family": "bi-encoder",
        "version": "0",
    }


def test_micro_batches_of_one_optimizer_step_count_as_one_step() -> None:
    accumulator = StatsAccumulator()
    for sent in (10, 30):  # two micro-batches (gradient accumulation 2) ...
        accumulator.add(RerankerStepStats(sent_pairs=sent, naive_pairs=100, estimated_recall=0.5))
    means = accumulator.pop(steps=1)  # ... of one optimizer step
    assert means["reranker_sent_pairs"] == 40
    assert means["reranker_estimated_recall"] == 0.5
    assert means["reranker_reduction"] == pytest.approx(0.8)
    assert accumulator.pop() == {}


def test_zero_loss_of_a_skipped_step_is_a_tensor_the_trainer_can_use(student, embed) -> None:
    loss = _loss(student, FailingFirst(FakeService(embed), failures=1), on_reranker_error="skip")
    value = loss(features(student, COLUMNS), None)
    assert isinstance(value, torch.Tensor) and value.requires_grad


def test_skip_counts_the_failed_calls_time_as_waiting() -> None:
    from reranker_client.losses._failure_policy import FailurePolicy

    policy = FailurePolicy("skip", wait_timeout=900.0, max_skipped_share=1.0)
    now = [100.0]
    policy._clock = lambda: now[0]  # type: ignore[method-assign]

    def failing_call() -> None:
        now[0] += 7.5  # the call took 7.5 s before it failed
        raise RerankerUnavailableError("the engine is loading")

    assert policy.run(failing_call, training=True) is None
    assert policy.last_waited == 7.5 and policy.last_failures == 1
