"""The API key of both clients: ``api_key=`` or ``RERANKER_API_KEY``, sent as a bearer token.

A fake server on ``httpx.MockTransport`` records the ``Authorization`` header of every request
and answers 401 ``{error: "unauthorized", detail}`` without the right key, as the service does.
Every test runs once with each client (``kind``: sync and async).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from reranker_client import (
    API_KEY_ENV,
    AsyncRerankerClient,
    RerankerAuthenticationError,
    RerankerBadRequestError,
    RerankerClient,
)

KEY = "s3cret-key"


class FakeGuardedServer:
    """Answers ``/rerank_batch_simple`` behind a key; score = 10 x len(query) + len(document)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.authorizations: list[str | None] = []
        self.pairs: list[list[int]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization")
        self.authorizations.append(auth)
        if auth != f"Bearer {self.key}":
            return httpx.Response(
                401, json={"error": "unauthorized", "detail": "missing or invalid API key"}
            )
        body: dict[str, Any] = json.loads(request.content)
        self.pairs.extend(body["pairs"])
        queries, documents = body["queries"], body["documents"]
        scores = [10.0 * len(queries[q]) + len(documents[d]) for q, d in body["pairs"]]
        usage = {"pairs": len(scores), "cache_hits": 0}
        return httpx.Response(200, json={"model": "fake", "scores": scores, "usage": usage})


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)


def _sync(server: FakeGuardedServer, **kwargs: Any) -> RerankerClient:
    return RerankerClient(
        "http://reranker.test",
        transport=httpx.MockTransport(server.handler),
        reranker_batch_size=8,
        **kwargs,
    )


def _async(server: FakeGuardedServer, **kwargs: Any) -> AsyncRerankerClient:
    return AsyncRerankerClient(
        "http://reranker.test",
        transport=httpx.MockTransport(server.handler),
        reranker_batch_size=8,
        **kwargs,
    )


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def score_pairs(
    kind: str,
    server: FakeGuardedServer,
    queries: list[str],
    documents: list[str],
    pairs: Any,
    **kwargs: Any,
) -> list[float]:
    """``score_pairs`` on a fresh client of that kind, closed afterwards."""
    if kind == "sync":
        with _sync(server, **kwargs) as client:
            return client.score_pairs(queries, documents, pairs)
    async with _async(server, **kwargs) as client:
        return await client.score_pairs(queries, documents, pairs)


async def test_api_key_is_sent_as_a_bearer_token(kind: str) -> None:
    server = FakeGuardedServer(KEY)
    scores = await score_pairs(
        kind, server, ["a", "bb"], ["x", "yy"], [(0, 1), (1, 0)], api_key=KEY
    )
    assert scores == [12.0, 21.0]
    assert server.authorizations == [f"Bearer {KEY}"]


async def test_key_comes_from_the_environment_when_not_passed(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    server = FakeGuardedServer(KEY)
    await score_pairs(kind, server, ["a"], ["x"], [(0, 0)])
    assert server.authorizations == [f"Bearer {KEY}"]


async def test_explicit_key_wins_over_the_environment(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    server = FakeGuardedServer(KEY)
    await score_pairs(kind, server, ["a"], ["x"], [(0, 0)], api_key=KEY)
    assert server.authorizations == [f"Bearer {KEY}"]


async def test_no_key_sends_no_header(kind: str) -> None:
    server = FakeGuardedServer(KEY)
    with pytest.raises(RerankerAuthenticationError, match=API_KEY_ENV):
        await score_pairs(kind, server, ["a"], ["x"], [(0, 0)])
    assert server.authorizations == [None]


async def test_401_says_how_to_pass_the_key_and_is_not_retried(kind: str) -> None:
    server = FakeGuardedServer(KEY)
    with pytest.raises(RerankerAuthenticationError) as caught:
        await score_pairs(kind, server, ["a"], ["x"], [(0, 0)], api_key="wrong")
    error = caught.value
    assert isinstance(error, RerankerBadRequestError)
    assert error.status_code == 401 and error.error == "unauthorized"
    assert "api_key=" in str(error) and API_KEY_ENV in str(error)
    assert "wrong" not in str(error)  # the key is never echoed
    assert len(server.authorizations) == 1


async def test_numpy_pair_arrays_are_sent_in_order_and_checked(kind: str) -> None:
    server = FakeGuardedServer(KEY)
    pairs = np.array([[1, 2], [0, 0], [2, 1]] * 5, dtype=np.int64)
    scores = await score_pairs(
        kind, server, ["a", "bb", "ccc"], ["x", "yy", "zzz"], pairs, api_key=KEY
    )
    with pytest.raises(ValueError, match="out of range"):
        await score_pairs(kind, server, ["a"], ["x"], np.array([[0, 3]]), api_key=KEY)
    assert scores == [10.0 * (q + 1) + (d + 1) for q, d in pairs.tolist()]
    assert len(server.authorizations) == 2  # 15 pairs in requests of at most 8
