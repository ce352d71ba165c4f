"""reranker_client and the losses against the real server with API keys on (issue 10's client
side): the key goes from ``api_key=`` or RERANKER_API_KEY into ``Authorization: Bearer``, and a
missing or wrong key is the client's own clear error, not a retry loop or a generic failure."""

from __future__ import annotations

import pytest
from compat_helpers import ENV_KEYS, FILE_KEY
from reranker_client import RerankerAuthenticationError, RerankerClient
from reranker_client.losses import RerankerCachedGISTEmbedLoss
from sentence_transformers import SentenceTransformer

QUERY = "What is the capital of France?"
DOCS = ["Bananas are yellow.", "Paris is the capital of France.", "Berlin is in Germany."]


def _ranked(client: RerankerClient) -> list[int]:
    return [r.index for r in client.rerank(QUERY, DOCS).results]


@pytest.mark.parametrize("key", [ENV_KEYS[1], FILE_KEY])
def test_client_with_a_valid_key_ranks_like_the_open_server(keyed_server, minilm_server, key):
    with (
        RerankerClient(keyed_server.url, api_key=key) as keyed,
        RerankerClient(minilm_server.url) as open_,
    ):
        got = keyed.rerank(QUERY, DOCS)
        want = open_.rerank(QUERY, DOCS)
    assert [r.index for r in got.results][0] == 1
    assert [r.index for r in got.results] == [r.index for r in want.results]
    for a, b in zip(got.results, want.results):
        assert a.relevance_score == pytest.approx(b.relevance_score, abs=1e-6)


def test_client_reads_the_key_from_the_environment(keyed_server, monkeypatch):
    monkeypatch.setenv("RERANKER_API_KEY", ENV_KEYS[0])
    with RerankerClient(keyed_server.url) as client:
        assert _ranked(client)[0] == 1


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_client_without_a_valid_key_gets_an_authentication_error(keyed_server, monkeypatch, key):
    monkeypatch.delenv("RERANKER_API_KEY", raising=False)
    with RerankerClient(keyed_server.url, api_key=key) as client:
        with pytest.raises(RerankerAuthenticationError, match="RERANKER_API_KEY"):
            client.rerank(QUERY, DOCS)


def test_loss_passes_its_key_to_the_server(keyed_server, minilm_dir, monkeypatch):
    monkeypatch.delenv("RERANKER_API_KEY", raising=False)
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    # The loss checks /health and /info when it is built: with the key this succeeds...
    loss = RerankerCachedGISTEmbedLoss(model, keyed_server.url, api_key=ENV_KEYS[0])
    assert loss is not None
    # ...and without it the start-up check fails at once with the authentication error.
    with pytest.raises(RerankerAuthenticationError):
        RerankerCachedGISTEmbedLoss(model, keyed_server.url, api_key="not-a-key")
