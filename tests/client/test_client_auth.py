"""The API key of both clients: ``api_key=`` or ``RERANKER_API_KEY``, sent as a bearer token.

A fake server on ``httpx.MockTransport`` records the ``Authorization`` header of every request
and answers 401 ``{error: "unauthorized", detail}`` without the right key, as the service does.
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


def test_api_key_is_sent_as_a_bearer_token() -> None:
    server = FakeGuardedServer(KEY)
    with _sync(server, api_key=KEY) as client:
        assert client.score_pairs(["a", "bb"], ["x", "yy"], [(0, 1), (1, 0)]) == [12.0, 21.0]
    assert server.authorizations == [f"Bearer {KEY}"]


def test_key_comes_from_the_environment_when_not_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    server = FakeGuardedServer(KEY)
    with _sync(server) as client:
        client.score_pairs(["a"], ["x"], [(0, 0)])
    assert server.authorizations == [f"Bearer {KEY}"]


def test_explicit_key_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    server = FakeGuardedServer(KEY)
    with _sync(server, api_key=KEY) as client:
        client.score_pairs(["a"], ["x"], [(0, 0)])
    assert server.authorizations == [f"Bearer {KEY}"]


def test_no_key_sends_no_header() -> None:
    server = FakeGuardedServer(KEY)
    with _sync(server) as client, pytest.raises(RerankerAuthenticationError):
        client.score_pairs(["a"], ["x"], [(0, 0)])
    assert server.authorizations == [None]


def test_401_says_how_to_pass_the_key_and_is_not_retried() -> None:
    server = FakeGuardedServer(KEY)
    with _sync(server, api_key="wrong") as client:
        with pytest.raises(RerankerAuthenticationError) as caught:
            client.score_pairs(["a"], ["x"], [(0, 0)])
    error = caught.value
    assert isinstance(error, RerankerBadRequestError)
    assert error.status_code == 401 and error.error == "unauthorized"
    assert "api_key=" in str(error) and API_KEY_ENV in str(error)
    assert "wrong" not in str(error)  # the key is never echoed
    assert len(server.authorizations) == 1


async def test_async_client_sends_the_key_and_maps_401() -> None:
    server = FakeGuardedServer(KEY)
    transport = httpx.MockTransport(server.handler)
    async with AsyncRerankerClient(
        "http://reranker.test", transport=transport, reranker_batch_size=8, api_key=KEY
    ) as client:
        assert await client.score_pairs(["a"], ["x"], [(0, 0)]) == [11.0]
    async with AsyncRerankerClient(
        "http://reranker.test", transport=transport, reranker_batch_size=8
    ) as client:
        with pytest.raises(RerankerAuthenticationError, match=API_KEY_ENV):
            await client.score_pairs(["a"], ["x"], [(0, 0)])
    assert server.authorizations == [f"Bearer {KEY}", None]


def test_numpy_pair_arrays_are_sent_in_order_and_checked() -> None:
    server = FakeGuardedServer(KEY)
    pairs = np.array([[1, 2], [0, 0], [2, 1]] * 5, dtype=np.int64)
    with _sync(server, api_key=KEY) as client:
        scores = client.score_pairs(["a", "bb", "ccc"], ["x", "yy", "zzz"], pairs)
        with pytest.raises(ValueError, match="out of range"):
            client.score_pairs(["a"], ["x"], np.array([[0, 3]]))
    assert scores == [10.0 * (q + 1) + (d + 1) for q, d in pairs.tolist()]
    assert len(server.authorizations) == 2  # 15 pairs in requests of at most 8
