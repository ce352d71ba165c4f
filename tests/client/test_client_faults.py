"""Fault handling, splitting and fallbacks of the reranker clients, against a fake server.

Every test talks to :class:`FakeRerankServer` through ``httpx.MockTransport``: no real server,
no network. Tests taking the ``twin`` fixture run once with each client, sync and async. Sleeps
and the clock are replaced by :class:`FakeTime`, so backoffs and deadlines are checked exactly
and cost no wall time.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from reranker_client import (
    AsyncRerankerClient,
    ClientStats,
    RerankerBadRequestError,
    RerankerClient,
    RerankerError,
    RerankerOverloadedError,
    RerankerServerError,
    RerankerTimeoutError,
    RerankerUnavailableError,
    RerankRequest,
    RerankRequestLike,
)
from reranker_client._retry import parse_retry_after

BASE_URL = "http://reranker.test"

Fault = httpx.Response | Callable[[httpx.Request], httpx.Response]


def fake_score(query: str, document: str) -> float:
    """The fake model: a stable, practically unique score per pair."""
    return zlib.crc32(f"{query}\x00{document}".encode()) / 2**32


def error_response(
    status: int, error: str, detail: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "detail": detail}, headers=headers)


class FakeRerankServer:
    """A fake of the reranker service, usable as an ``httpx.MockTransport`` handler.

    It implements the wire format with :func:`fake_score` as the model, records every request,
    answers 404 on the paths in ``missing``, and plays scripted faults first (see :meth:`fail`).
    """

    def __init__(self, *, max_pairs_per_request: int = 64, missing: Iterable[str] = ()) -> None:
        self.max_pairs_per_request = max_pairs_per_request
        self.missing = set(missing)
        self.calls: list[tuple[str, str, Any]] = []
        self.timeouts: list[float | None] = []
        self._faults: dict[str, list[Fault]] = {}
        self._forever: dict[str, Fault] = {}
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def fail(self, path: str, *faults: Fault, forever: bool = False) -> None:
        """Answer the next requests to ``path`` with ``faults`` (responses, or callables that
        return one or raise); with ``forever``, the last fault repeats without end."""
        self._faults.setdefault(path, []).extend(faults)
        if forever:
            self._forever[path] = faults[-1]

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.calls]

    def bodies(self, path: str) -> list[Any]:
        return [body for _, p, body in self.calls if p == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body: Any = json.loads(request.content) if request.content else None
        with self._lock:
            self.calls.append((request.method, path, body))
            self.timeouts.append(request.extensions["timeout"]["read"])
            queued = self._faults.get(path)
            fault = queued.pop(0) if queued else self._forever.get(path)
        if fault is not None:
            return fault if isinstance(fault, httpx.Response) else fault(request)
        if path in self.missing:
            return error_response(404, "not_found", "Not Found")
        if path == "/rerank":
            return httpx.Response(200, json=self._rerank(body))
        if path == "/rerank_batch":
            return httpx.Response(
                200, json={"results": [self._rerank(r) for r in body["requests"]]}
            )
        if path == "/rerank_batch_simple":
            return httpx.Response(200, json=self._score(body))
        if path == "/info":
            return httpx.Response(200, json=self._info())
        if path == "/health":
            return httpx.Response(200, json={"status": "ok", "model": "fake-reranker"})
        return error_response(404, "not_found", "Not Found")

    def _cache_hits(self, pairs: list[tuple[str, str]]) -> int:
        with self._lock:
            hits = sum(pair in self._seen for pair in pairs)
            self._seen.update(pairs)
        return hits

    def _rerank(self, body: dict[str, Any]) -> dict[str, Any]:
        query, documents = body["query"], body["documents"]
        results: list[dict[str, Any]] = [
            {
                "index": i,
                "relevance_score": fake_score(query, doc),
                "raw_score": fake_score(query, doc) * 10 - 5,
                "document": doc if body["return_documents"] else None,
            }
            for i, doc in enumerate(documents)
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        if body["top_n"] is not None:
            results = results[: body["top_n"]]
        hits = self._cache_hits([(query, doc) for doc in documents])
        usage = {"pairs": len(documents), "cache_hits": hits}
        return {"model": "fake-reranker", "results": results, "usage": usage}

    def _score(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = [(body["queries"][q], body["documents"][d]) for q, d in body["pairs"]]
        usage = {"pairs": len(texts), "cache_hits": self._cache_hits(texts)}
        return {"model": "fake-reranker", "scores": [fake_score(*t) for t in texts], "usage": usage}

    def _info(self) -> dict[str, Any]:
        limits = {
            "max_pairs_per_request": self.max_pairs_per_request,
            "max_length": 512,
            "batch_max_pairs": 256,
            "batch_max_tokens": 16384,
            "batch_max_wait_ms": 5.0,
        }
        return {
            "model": "fake-reranker",
            "family": "cross-encoder",
            "version": "0",
            "limits": limits,
        }


class FakeTime:
    """A clock that only moves when the client sleeps (or a fake request takes time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def make_client(
    server: FakeRerankServer, fake_time: FakeTime | None = None, **kwargs: Any
) -> RerankerClient:
    client = RerankerClient(BASE_URL, transport=httpx.MockTransport(server), **kwargs)
    fake_time = fake_time or FakeTime()
    client._sleep = fake_time.sleep
    client._clock = fake_time.clock
    return client


def make_async_client(
    server: Any, fake_time: FakeTime | None = None, **kwargs: Any
) -> AsyncRerankerClient:
    client = AsyncRerankerClient(BASE_URL, transport=httpx.MockTransport(server), **kwargs)
    fake_time = fake_time or FakeTime()
    client._sleep = fake_time.async_sleep
    client._clock = fake_time.clock
    return client


class Twin:
    """One of the two clients, driven alike: ``await twin.call(client.rerank(...))`` awaits the
    async client's coroutine and passes the sync client's result through, so one test body
    checks both (they share their planning and parsing; only the I/O is written twice)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def make(
        self, server: FakeRerankServer, fake_time: FakeTime | None = None, **kwargs: Any
    ) -> Any:
        if self.kind == "sync":
            return make_client(server, fake_time, **kwargs)
        return make_async_client(server, fake_time, **kwargs)

    @staticmethod
    async def call(result: Any) -> Any:
        return await result if inspect.isawaitable(result) else result


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest) -> Twin:
    return Twin(request.param)


QUERIES = ["what is a cat", "how do planes fly", "best pasta recipe"]
DOCUMENTS = [f"document number {i}" for i in range(8)]
# Ten pairs in a deliberately unsorted order, with a repeated pair.
PAIRS = [(0, 1), (2, 7), (1, 1), (0, 4), (2, 0), (1, 6), (0, 1), (2, 3), (1, 5), (0, 2)]


def expected_scores(pairs: Iterable[tuple[int, int]]) -> list[float]:
    return [fake_score(QUERIES[q], DOCUMENTS[d]) for q, d in pairs]


def expected_ranking(query: str, documents: list[str]) -> list[int]:
    return sorted(range(len(documents)), key=lambda i: -fake_score(query, documents[i]))


def timing_out(fake_time: FakeTime) -> Callable[[httpx.Request], httpx.Response]:
    """A fault that uses up the request's whole timeout, then times out."""

    def handler(request: httpx.Request) -> httpx.Response:
        fake_time.now += request.extensions["timeout"]["read"]
        raise httpx.ReadTimeout("timed out", request=request)

    return handler


def causes(error: BaseException) -> list[BaseException]:
    chain = []
    cause = error.__cause__
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    return chain


# --------------------------------------------------------------------------------------------
# Retries


async def test_429_with_retry_after_is_honoured_then_succeeds(twin: Twin) -> None:
    server = FakeRerankServer()
    server.fail("/rerank", error_response(429, "overloaded", "queue full", {"Retry-After": "7"}))
    fake_time = FakeTime()
    client = twin.make(server, fake_time, reranker_batch_size=16)
    client._random = lambda: 1.0  # the largest jitter, still far below Retry-After

    response = await twin.call(client.rerank(QUERIES[0], DOCUMENTS[:3]))

    assert fake_time.sleeps == [7.0]
    assert server.paths() == ["/rerank", "/rerank"]
    assert client.stats.retries == 1
    assert client.stats.requests == 2
    assert [r.index for r in response.results] == expected_ranking(QUERIES[0], DOCUMENTS[:3])


async def test_503_twice_then_success_backs_off_exponentially(twin: Twin) -> None:
    server = FakeRerankServer()
    unavailable = error_response(503, "unavailable", "engine loading")
    server.fail("/rerank_batch_simple", unavailable, unavailable)
    fake_time = FakeTime()
    client = twin.make(server, fake_time, reranker_batch_size=16, backoff_base=0.5)
    client._random = lambda: 0.5

    scores = await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS))

    assert scores == expected_scores(PAIRS)
    assert client.stats.retries == 2
    assert client.stats.requests == 3
    assert client.stats.pairs_sent == len(PAIRS)  # the retried attempts are not counted twice
    # Full jitter: random() * base * 2**attempt.
    assert fake_time.sleeps == [0.25, 0.5]


async def test_429_on_every_attempt_raises_overloaded_after_max_retries(twin: Twin) -> None:
    server = FakeRerankServer()
    server.fail("/rerank", error_response(429, "overloaded", "queue full"), forever=True)
    client = twin.make(server, reranker_batch_size=16, max_retries=2)

    with pytest.raises(RerankerOverloadedError) as caught:
        await twin.call(client.rerank(QUERIES[0], DOCUMENTS[:2]))

    assert isinstance(caught.value, RerankerUnavailableError)
    assert caught.value.status_code == 429
    assert caught.value.detail == "queue full"
    assert server.paths() == ["/rerank"] * 3
    assert client.stats.retries == 2


async def test_connection_refused_raises_unavailable_chained_to_httpx_error(twin: Twin) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server = FakeRerankServer()
    server.fail("/rerank", refuse, forever=True)
    client = twin.make(server, reranker_batch_size=16, max_retries=3)

    with pytest.raises(RerankerUnavailableError) as caught:
        await twin.call(client.rerank(QUERIES[0], DOCUMENTS[:2]))

    assert not isinstance(caught.value, RerankerOverloadedError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(server.calls) == 4


async def test_read_timeouts_until_the_deadline_raise_timeout_error(twin: Twin) -> None:
    server = FakeRerankServer()
    fake_time = FakeTime()
    server.fail("/rerank_batch_simple", timing_out(fake_time), forever=True)
    client = twin.make(
        server,
        fake_time,
        reranker_batch_size=16,
        timeout=4.0,
        deadline=30.0,
        max_retries=1000,  # the deadline, not the retry budget, must end this
        backoff_base=1.0,
        backoff_max=2.0,
    )
    start = fake_time.now

    with pytest.raises(RerankerTimeoutError) as caught:
        await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS))

    assert "deadline" in str(caught.value)
    assert any(isinstance(cause, httpx.ReadTimeout) for cause in causes(caught.value))
    assert fake_time.now - start <= 30.0
    assert len(server.calls) >= 4
    assert all(t is not None and t <= 4.0 for t in server.timeouts)
    assert client.stats.retries == len(server.calls) - 1


async def test_attempt_timeout_is_clipped_to_what_remains_of_the_deadline(twin: Twin) -> None:
    server = FakeRerankServer()
    fake_time = FakeTime()
    server.fail("/rerank", timing_out(fake_time), forever=True)
    client = twin.make(server, fake_time, reranker_batch_size=16, timeout=60.0, deadline=10.0)

    with pytest.raises(RerankerTimeoutError):
        await twin.call(client.rerank(QUERIES[0], DOCUMENTS[:2]))

    assert server.timeouts == [10.0]


async def test_422_surfaces_the_server_detail_without_retrying(twin: Twin) -> None:
    detail = [{"loc": ["body", "pairs", 0], "msg": "index out of range", "type": "value_error"}]
    server = FakeRerankServer()
    server.fail("/rerank_batch_simple", error_response(422, "invalid_request", detail))
    fake_time = FakeTime()
    client = twin.make(server, fake_time, reranker_batch_size=16)

    with pytest.raises(RerankerBadRequestError) as caught:
        await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS))

    error = caught.value
    assert error.status_code == 422
    assert error.error == "invalid_request"
    assert error.detail == detail
    assert "body.pairs.0: index out of range" in str(error)
    assert server.paths() == ["/rerank_batch_simple"]  # neither retried nor a fallback
    assert fake_time.sleeps == []
    assert client.stats.retries == 0


async def test_500_is_a_server_error_and_not_retried(twin: Twin) -> None:
    server = FakeRerankServer()
    server.fail("/rerank", error_response(500, "internal", "boom"))
    client = twin.make(server, reranker_batch_size=16)

    with pytest.raises(RerankerServerError) as caught:
        await twin.call(client.rerank(QUERIES[0], DOCUMENTS[:2]))

    assert caught.value.status_code == 500
    assert len(server.calls) == 1


async def test_health_makes_a_single_attempt(twin: Twin) -> None:
    server = FakeRerankServer()
    assert (await twin.call(twin.make(server).health()))["status"] == "ok"

    server.fail("/health", error_response(503, "unavailable", "engine loading"))
    client = twin.make(server)
    with pytest.raises(RerankerUnavailableError) as caught:
        await twin.call(client.health())
    assert caught.value.detail == "engine loading"
    assert client.stats.requests == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = (now + timedelta(seconds=42)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after(later, now=now) == 42.0
    assert parse_retry_after("-5", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


# --------------------------------------------------------------------------------------------
# Fallback from missing batch endpoints


async def test_missing_batch_simple_falls_back_to_rerank_and_remembers_it(twin: Twin) -> None:
    server = FakeRerankServer(missing={"/rerank_batch_simple"})
    client = twin.make(server, reranker_batch_size=16)
    pairs = [(1, 2), (0, 0), (1, 0), (0, 3), (1, 2)]

    scores = await twin.call(client.score_pairs(QUERIES, DOCUMENTS, pairs))

    assert scores == expected_scores(pairs)
    assert server.paths() == ["/rerank_batch_simple", "/rerank", "/rerank"]
    rerank_bodies = {body["query"]: body["documents"] for body in server.bodies("/rerank")}
    # One /rerank per query, each document once.
    assert rerank_bodies == {
        QUERIES[1]: [DOCUMENTS[2], DOCUMENTS[0]],
        QUERIES[0]: [DOCUMENTS[0], DOCUMENTS[3]],
    }
    assert client.stats.fallbacks == 1
    assert "/rerank_batch_simple" in client.unsupported_endpoints

    server.calls.clear()
    assert await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS)) == expected_scores(PAIRS)
    assert set(server.paths()) == {"/rerank"}  # straight to /rerank this time
    assert client.stats.fallbacks == 2


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_missing_rerank_batch_falls_back_to_individual_reranks(
    twin: Twin, status: int
) -> None:
    server = FakeRerankServer()
    server.fail("/rerank_batch", error_response(status, "unsupported", "no such endpoint"))
    client = twin.make(server, reranker_batch_size=16)
    requests: list[RerankRequestLike] = [
        RerankRequest(QUERIES[0], DOCUMENTS[:3]),
        {"query": QUERIES[1], "documents": DOCUMENTS[3:7], "top_n": 2},
    ]

    responses = await twin.call(client.rerank_batch(requests))

    assert server.paths() == ["/rerank_batch", "/rerank", "/rerank"]
    assert [r.index for r in responses[0].results] == expected_ranking(QUERIES[0], DOCUMENTS[:3])
    assert [r.index for r in responses[1].results] == expected_ranking(QUERIES[1], DOCUMENTS[3:7])[
        :2
    ]
    assert client.stats.fallbacks == 1


# --------------------------------------------------------------------------------------------
# Splitting and reassembly


async def test_score_pairs_is_split_and_each_request_carries_only_its_texts(twin: Twin) -> None:
    server = FakeRerankServer()
    client = twin.make(server, reranker_batch_size=3)

    scores = await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS))

    assert scores == expected_scores(PAIRS)
    bodies = server.bodies("/rerank_batch_simple")
    assert len(bodies) == 4 and client.stats.requests == 4
    assert [len(body["pairs"]) for body in bodies] == [3, 3, 3, 1]
    for start, body in zip(range(0, len(PAIRS), 3), bodies, strict=True):
        chunk = PAIRS[start : start + 3]
        sent = [(body["queries"][q], body["documents"][d]) for q, d in body["pairs"]]
        assert sent == [(QUERIES[q], DOCUMENTS[d]) for q, d in chunk]
        # Exactly the texts the chunk uses, each once.
        assert sorted(body["queries"]) == sorted({QUERIES[q] for q, _ in chunk})
        assert sorted(body["documents"]) == sorted({DOCUMENTS[d] for _, d in chunk})
    assert client.stats.pairs_sent == 10


async def test_rerank_with_split_documents_merges_sorts_and_applies_top_n(twin: Twin) -> None:
    server = FakeRerankServer()
    client = twin.make(server, reranker_batch_size=3)
    documents = DOCUMENTS[:7]

    response = await twin.call(client.rerank(QUERIES[2], documents, top_n=2, return_documents=True))

    bodies = server.bodies("/rerank")
    assert [body["documents"] for body in bodies] == [documents[0:3], documents[3:6], documents[6:]]
    assert [body["top_n"] for body in bodies] == [2, 2, None]
    assert [r.index for r in response.results] == expected_ranking(QUERIES[2], documents)[:2]
    assert all(r.document == documents[r.index] for r in response.results)
    assert response.usage.pairs == 7


async def test_rerank_with_split_documents_keeps_every_result_with_its_original_index(
    twin: Twin,
) -> None:
    server = FakeRerankServer()
    client = twin.make(server, reranker_batch_size=3)
    documents = DOCUMENTS[:7]

    response = await twin.call(client.rerank(QUERIES[0], documents))

    assert [r.index for r in response.results] == expected_ranking(QUERIES[0], documents)
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    assert all(
        r.relevance_score == fake_score(QUERIES[0], documents[r.index]) for r in response.results
    )


async def test_rerank_batch_is_split_by_total_pairs_and_reassembled_in_order(twin: Twin) -> None:
    server = FakeRerankServer()
    client = twin.make(server, reranker_batch_size=4)
    sizes = [(0, 2), (2, 4), (0, 5), (7, 8)]  # 2 + 2 | 4 (first part of 5) | 1 + 1
    requests = [RerankRequest(QUERIES[i % 3], DOCUMENTS[a:b]) for i, (a, b) in enumerate(sizes)]

    responses = await twin.call(client.rerank_batch(requests))

    bodies = server.bodies("/rerank_batch")
    assert [[len(r["documents"]) for r in body["requests"]] for body in bodies] == [
        [2, 2],
        [4],
        [1, 1],
    ]
    for request, response in zip(requests, responses, strict=True):
        assert [r.index for r in response.results] == expected_ranking(
            request.query, list(request.documents)
        )
        assert response.usage.pairs == len(request.documents)


async def test_default_batch_size_is_read_once_from_info(twin: Twin) -> None:
    server = FakeRerankServer(max_pairs_per_request=4)
    client = twin.make(server)
    assert client.reranker_batch_size is None

    assert await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS[:9])) == expected_scores(
        PAIRS[:9]
    )
    assert server.paths() == ["/info"] + ["/rerank_batch_simple"] * 3
    assert client.reranker_batch_size == 4

    server.calls.clear()
    await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS[:9]))
    assert "/info" not in server.paths()


async def test_a_failing_chunk_fails_the_whole_call(twin: Twin) -> None:
    server = FakeRerankServer()
    server.fail("/rerank_batch_simple", error_response(422, "invalid_request", "too long"))
    client = twin.make(server, reranker_batch_size=2)

    with pytest.raises(RerankerBadRequestError):
        await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS))


async def test_invalid_pairs_are_rejected_before_anything_is_sent(twin: Twin) -> None:
    server = FakeRerankServer()
    client = twin.make(server, reranker_batch_size=4)

    with pytest.raises(ValueError):
        await twin.call(client.score_pairs(QUERIES, DOCUMENTS, [(0, len(DOCUMENTS))]))
    with pytest.raises(TypeError):
        await twin.call(client.score_pairs(QUERIES, DOCUMENTS, [(0.0, 1)]))  # type: ignore[list-item]
    assert server.calls == []


# --------------------------------------------------------------------------------------------
# Threads, event loops, counters


def test_sync_client_works_when_called_inside_a_running_event_loop() -> None:
    server = FakeRerankServer()
    client = make_client(server, reranker_batch_size=2, max_concurrency=3)

    async def notebook_cell() -> tuple[list[float], list[int]]:
        asyncio.get_running_loop()  # the sync client is called with a loop running
        scores = client.score_pairs(QUERIES, DOCUMENTS, PAIRS)
        ranking = client.rerank(QUERIES[1], DOCUMENTS[:5])
        return scores, [r.index for r in ranking.results]

    scores, ranking = asyncio.run(notebook_cell())

    assert scores == expected_scores(PAIRS)
    assert ranking == expected_ranking(QUERIES[1], DOCUMENTS[:5])


async def test_sync_client_works_inside_an_async_test() -> None:
    server = FakeRerankServer()
    client = make_client(server, reranker_batch_size=3)

    assert client.score_pairs(QUERIES, DOCUMENTS, PAIRS) == expected_scores(PAIRS)


def test_sync_requests_in_flight_never_exceed_max_concurrency() -> None:
    server = FakeRerankServer()
    in_flight, peak = 0, 0
    lock = threading.Lock()

    def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.03)
        with lock:
            in_flight -= 1
        return server(request)

    client = RerankerClient(
        BASE_URL, transport=httpx.MockTransport(slow), reranker_batch_size=1, max_concurrency=3
    )
    assert client.score_pairs(QUERIES, DOCUMENTS, PAIRS) == expected_scores(PAIRS)
    assert 2 <= peak <= 3
    client.close()


def test_stats_are_exact_across_threads_and_reset_gives_per_step_deltas() -> None:
    server = FakeRerankServer()
    client = make_client(server, reranker_batch_size=3, max_concurrency=4)

    threads = [
        threading.Thread(target=client.score_pairs, args=(QUERIES, DOCUMENTS, PAIRS))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    before = client.stats.snapshot()
    assert before.requests == 8 * 4
    assert before.pairs_sent == 8 * 10
    # Nine distinct pairs: everything but the first sight of each is a cache hit.
    assert before.cache_hits == 8 * 10 - 9

    client.score_pairs(QUERIES, DOCUMENTS, PAIRS)
    delta = client.stats - before
    assert (delta.requests, delta.pairs_sent, delta.cache_hits) == (4, 10, 10)

    step = client.stats.reset()
    assert step.pairs_sent == 9 * 10
    assert client.stats.as_dict() == ClientStats().as_dict()


def test_stats_updates_are_not_lost_under_thread_contention() -> None:
    stats = ClientStats()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke lost updates
    try:

        def count() -> None:
            for _ in range(20_000):
                stats._add(requests=1)

        threads = [threading.Thread(target=count) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    assert stats.requests == 8 * 20_000


def test_context_manager_closes_the_client() -> None:
    server = FakeRerankServer()
    with make_client(server, reranker_batch_size=2) as client:
        assert client.info().limits.max_pairs_per_request == 64
    assert client._http.is_closed


# --------------------------------------------------------------------------------------------
# The async client only: concurrency within one event loop


async def test_async_missing_batch_simple_falls_back_and_remembers_it() -> None:
    server = FakeRerankServer(missing={"/rerank_batch_simple"})
    # One request at a time, so which chunk meets the 404 first is deterministic.
    client = make_async_client(server, reranker_batch_size=4, max_concurrency=1)

    assert await client.score_pairs(QUERIES, DOCUMENTS, PAIRS) == expected_scores(PAIRS)
    assert server.paths().count("/rerank_batch_simple") == 1
    # The first chunk found the endpoint missing; the other two were sent to /rerank directly.
    assert client.stats.fallbacks == 3

    server.calls.clear()
    assert await client.score_pairs(QUERIES, DOCUMENTS, PAIRS[:4]) == expected_scores(PAIRS[:4])
    assert set(server.paths()) == {"/rerank"}


async def test_async_default_batch_size_is_read_once_from_info() -> None:
    server = FakeRerankServer(max_pairs_per_request=4)

    async def yielding(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)  # let the concurrent calls overlap, as over a real network
        return server(request)

    client = make_async_client(yielding)

    await asyncio.gather(*(client.score_pairs(QUERIES, DOCUMENTS, PAIRS[:8]) for _ in range(3)))

    assert server.paths().count("/info") == 1
    assert server.paths().count("/rerank_batch_simple") == 3 * 2
    assert client.reranker_batch_size == 4


async def test_async_requests_in_flight_never_exceed_max_concurrency() -> None:
    server = FakeRerankServer()
    in_flight, peak = 0, 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return server(request)

    client = make_async_client(slow, reranker_batch_size=1, max_concurrency=3)

    assert await client.score_pairs(QUERIES, DOCUMENTS, PAIRS) == expected_scores(PAIRS)
    assert peak == 3


async def test_unavailable_after_retries_is_typed_and_chained(twin: Twin) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server = FakeRerankServer()
    server.fail("/info", refuse, forever=True)
    client = twin.make(server, max_retries=2)

    with pytest.raises(RerankerUnavailableError) as caught:
        await twin.call(client.score_pairs(QUERIES, DOCUMENTS, PAIRS))

    assert isinstance(caught.value, RerankerError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert client.stats.requests == 3


def test_info_accepts_unknown_engine_token_budget() -> None:
    """A server on remote engines does not know the engines' token budget and sends null."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "model": "m",
                "family": "bi-encoder",
                "version": "0",
                "limits": {
                    "max_pairs_per_request": 10,
                    "max_length": 256,
                    "batch_max_pairs": 8,
                    "batch_max_tokens": None,
                    "batch_max_wait_ms": 5.0,
                },
            },
        )

    with RerankerClient("http://fake", transport=httpx.MockTransport(handler)) as client:
        info = client.info()
    assert info.limits.batch_max_tokens is None
    assert info.limits.max_pairs_per_request == 10
