"""What the compatibility suites share: the keyed server's configuration and the native scores
that every integration must reproduce."""

from __future__ import annotations

import httpx

SERVED = "sentence-transformers/all-MiniLM-L6-v2"
ALIAS = "rerank-v3.5"  # the Cohere model name a client may keep sending
ENV_KEYS = ("key-alpha", "key-beta")
FILE_KEY = "key-from-file"
MAX_BYTES = 65_536
MAX_CHARS = 2_000


def native_scores(client: httpx.Client, query: str, documents: list[str]) -> list[float]:
    """The native training route's scores for query x each document, in document order."""
    r = client.post(
        "/rerank_batch_simple",
        json={
            "queries": [query],
            "documents": documents,
            "pairs": [[0, i] for i in range(len(documents))],
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["scores"]
