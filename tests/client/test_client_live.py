"""The clients against the real server on the real engine (the session's MiniLM server).

Tests taking ``kind`` run once with each client, sync and async."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomllib
from reranker_client import (
    AsyncRerankerClient,
    RerankerBadRequestError,
    RerankerClient,
    RerankRequest,
)

pytestmark = pytest.mark.engine

QUERY = "What is the capital of France?"
DOCS = [
    "Berlin is the capital of Germany.",
    "Paris is the capital and largest city of France.",
    "Bananas are rich in potassium.",
    "The Eiffel Tower is a landmark in Paris.",
]


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@asynccontextmanager
async def open_client(kind: str, url: str, **kwargs: Any) -> AsyncIterator[Any]:
    """A client of that kind, closed on exit."""
    if kind == "sync":
        with RerankerClient(url, **kwargs) as client:
            yield client
    else:
        async with AsyncRerankerClient(url, **kwargs) as client:
            yield client


async def call(result: Any) -> Any:
    """The async client's coroutine awaited, the sync client's result as it is."""
    return await result if inspect.isawaitable(result) else result


def direct_scores(url: str, queries, documents, pairs, **kw) -> list[float]:
    """The server's own answer for the pairs, in one plain HTTP request."""
    r = httpx.post(
        f"{url}/rerank_batch_simple",
        timeout=120,
        json={"queries": queries, "documents": documents, "pairs": pairs, **kw},
    )
    r.raise_for_status()
    return r.json()["scores"]


async def test_health_and_info(minilm_server, kind):
    async with open_client(kind, minilm_server.url) as client:
        assert (await call(client.health()))["status"] == "ok"
        info = await call(client.info())
        assert info.family == "bi-encoder"
        assert info.limits.max_pairs_per_request == 100_000


async def test_rerank_matches_the_server(minilm_server, kind):
    async with open_client(kind, minilm_server.url) as client:
        response = await call(client.rerank(QUERY, DOCS, top_n=3, return_documents=True))
    assert [r.index for r in response.results][0] == 1
    assert len(response.results) == 3
    assert all(r.document == DOCS[r.index] for r in response.results)
    want = direct_scores(minilm_server.url, [QUERY], DOCS, [[0, i] for i in range(4)])
    for r in response.results:
        assert r.relevance_score == pytest.approx(want[r.index], abs=1e-6)


async def test_rerank_split_across_requests_keeps_indexes(minilm_server, kind):
    docs = [f"document {i} about {'Paris' if i % 5 == 0 else 'other things'}" for i in range(23)]
    async with open_client(kind, minilm_server.url, reranker_batch_size=4) as client:
        split = await call(client.rerank(QUERY, docs))
        assert client.stats.requests >= 6  # 23 documents in chunks of 4
    with RerankerClient(minilm_server.url) as client:
        whole = client.rerank(QUERY, docs)
    assert [(r.index, round(r.relevance_score, 6)) for r in split.results] == [
        (r.index, round(r.relevance_score, 6)) for r in whole.results
    ]
    assert split.usage.pairs == 23


async def test_score_pairs_split_preserves_pair_order(minilm_server, kind):
    tag = uuid.uuid4().hex[:6]
    queries = [f"query {i} {tag}" for i in range(6)]
    documents = [f"document {j} {tag}" for j in range(9)]
    pairs = [(i, j) for i in range(6) for j in range(9) if (i + j) % 2 == 0]
    want = direct_scores(minilm_server.url, queries, documents, [list(p) for p in pairs])
    async with open_client(
        kind, minilm_server.url, reranker_batch_size=5, max_concurrency=3
    ) as client:
        got = await call(client.score_pairs(queries, documents, pairs))
        stats = client.stats.snapshot()
    assert got == pytest.approx(want, abs=1e-6)
    assert stats.pairs_sent == len(pairs)
    assert stats.cache_hits == len(pairs)  # direct_scores already asked for every pair


async def test_rerank_batch_mixed_instructions(minilm_server, kind):
    requests = [
        RerankRequest(QUERY, DOCS, instruction="query: "),
        RerankRequest("fruit", DOCS),
        {"query": QUERY, "documents": DOCS[:2], "max_length": 64},
    ]
    async with open_client(kind, minilm_server.url, reranker_batch_size=5) as client:
        responses = await call(client.rerank_batch(requests))
    assert len(responses) == 3
    assert responses[1].results[0].index == 2  # bananas for "fruit"
    assert len(responses[2].results) == 2
    for req, resp in zip([r if isinstance(r, dict) else r.to_dict() for r in requests], responses):
        alone = httpx.post(f"{minilm_server.url}/rerank", json=req, timeout=60).json()
        assert [x["index"] for x in alone["results"]] == [r.index for r in resp.results]


async def test_bad_request_surfaces_server_detail(minilm_server, kind):
    async with open_client(kind, minilm_server.url) as client:
        with pytest.raises(RerankerBadRequestError) as exc:
            await call(client.rerank(QUERY, DOCS, max_length=100_000))
        assert exc.value.status_code == 422
        assert "above this model's limit" in str(exc.value.detail)
        assert client.stats.retries == 0


async def test_async_client_concurrent_calls(minilm_server):
    tag = uuid.uuid4().hex[:6]
    async with AsyncRerankerClient(
        minilm_server.url, reranker_batch_size=7, max_concurrency=4
    ) as client:
        jobs = [
            client.score_pairs(
                [f"q{i} {tag}"], [f"d{j} {tag}" for j in range(10)], [(0, j) for j in range(10)]
            )
            for i in range(8)
        ]
        results = await asyncio.gather(*jobs)
        assert (await client.health())["status"] == "ok"
    for i, got in enumerate(results):
        want = direct_scores(
            minilm_server.url,
            [f"q{i} {tag}"],
            [f"d{j} {tag}" for j in range(10)],
            [[0, j] for j in range(10)],
        )
        assert got == pytest.approx(want, abs=1e-6)


def test_sync_client_inside_a_running_event_loop(minilm_server):
    async def notebook_cell() -> list[float]:
        with RerankerClient(minilm_server.url) as client:
            return client.score_pairs([QUERY], DOCS, [(0, 1), (0, 2)])

    scores = asyncio.run(notebook_cell())
    assert scores[0] > scores[1]


def test_client_installs_and_imports_without_server_dependencies():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert [d.split(">")[0] for d in project["project"]["dependencies"]] == ["httpx"]
    # Block the server's heavy dependencies: the client must not need any of them.
    code = (
        "import sys\n"
        "for m in ('vllm', 'torch', 'fastapi', 'pydantic', 'reranker_server',\n"
        "          'prometheus_client'):\n"
        "    sys.modules[m] = None\n"
        "import reranker_client\n"
        "print(reranker_client.RerankerClient.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RerankerClient"
