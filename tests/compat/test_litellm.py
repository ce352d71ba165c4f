"""LiteLLM's ``rerank()`` for every provider that takes an ``api_base`` and has a rerank shape
this server can serve, against the real MiniLM server; scores must be the native ones.

``PROVIDERS`` is the table of the README: provider -> the ``api_base`` to give -> the route hit.
"""

from __future__ import annotations

import pytest
from compat_helpers import SERVED, native_scores

pytestmark = pytest.mark.engine

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]

# provider, api_base suffix (appended to the server's URL), route LiteLLM then calls.
PROVIDERS = [
    ("cohere", "", "/v1/rerank"),
    ("jina_ai", "/v1", "/v1/rerank"),
    ("hosted_vllm", "", "/v1/rerank"),
    ("together_ai", "/v1", "/v1/rerank"),
    ("infinity", "/infinity", "/infinity/rerank"),
    ("nvidia_nim", "", "/v1/retrieval/{model}/reranking"),
    ("nvidia_nim/ranking", "", "/v1/ranking"),
    ("voyage", "/voyage", "/voyage/v1/rerank"),
    ("deepinfra", "", "/inference/{model}"),
    ("huggingface", "", "/rerank"),  # TEI's shape, with `top_n` (compat.TeiRerankRequest)
]
# Not served separately: `cohere` covers Azure AI's and
# Fireworks' Cohere-shaped APIs; bedrock, vertex_ai and watsonx sign requests for their clouds.


@pytest.mark.parametrize(("provider", "suffix", "route"), PROVIDERS, ids=[p[0] for p in PROVIDERS])
def test_litellm_rerank(plain, minilm_server, provider, suffix, route):
    litellm = pytest.importorskip("litellm")
    response = litellm.rerank(
        model=f"{provider}/{SERVED}",
        query=QUERY,
        documents=DOCS,
        top_n=2,
        api_base=minilm_server.url + suffix,
        api_key="unused",
    )
    native = native_scores(plain, QUERY, DOCS)
    results = response.results
    best = sorted(range(len(DOCS)), key=lambda i: -native[i])
    indices = [r["index"] for r in results]
    if provider == "deepinfra":
        # DeepInfra answers a score per document in input order; LiteLLM keeps them all so.
        assert indices == list(range(len(DOCS))), results
    else:
        assert indices == best[:2], (provider, route, results)
    for r in results:
        if provider != "nvidia_nim" and not provider.startswith("nvidia_nim"):
            assert r["relevance_score"] == pytest.approx(native[r["index"]], abs=1e-5)
