"""The reference request that every docker test sends, and its check against the venv server."""

from __future__ import annotations

import httpx
import pytest

# Texts whose ranking by all-MiniLM-L6-v2 is unambiguous (cosine 0.86 / 0.40 / 0.00).
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Berlin is the capital of Germany.",
    "Paris is the capital of France.",
    "I like bananas.",
]


def rerank_scores(url: str) -> list[tuple[int, float]]:
    """(index, score) of the reference request, in the server's order."""
    response = httpx.post(
        f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=120
    )
    assert response.status_code == 200, response.text
    return [(r["index"], r["relevance_score"]) for r in response.json()["results"]]


def assert_same_ranking_as(url: str, reference_url: str) -> None:
    """Paris first, bananas last, and the same scores as the reference server (float32 sums may
    differ in the last bits between processes)."""
    got, expected = rerank_scores(url), rerank_scores(reference_url)
    assert [i for i, _ in got] == [1, 0, 2]
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        assert a == pytest.approx(b, abs=1e-5)
