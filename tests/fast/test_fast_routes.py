"""Routing and answer shapes of every route, on the fake engine."""

from __future__ import annotations

import pytest
from reranker_server.llm_reranker import QWEN3_DEFAULT_INSTRUCTION
from reranker_server.settings import DEFAULT_MODEL_NAME

pytestmark = pytest.mark.fast

QUERY = "Which city is the capital of France?"
DOCUMENTS = [
    "Paris is the capital of France.",
    "Bananas are yellow.",
    "Berlin is the capital of Germany.",
]


def native_scores(client, query: str, documents: list[str]) -> list[float]:
    r = client.post(
        "/rerank_batch_simple",
        json={"queries": [query], "documents": documents, "pairs": [[0, i] for i in range(3)]},
    )
    assert r.status_code == 200, r.text
    return r.json()["scores"]


def test_rerank_sorts_results_and_indexes_the_request(plain):
    r = plain.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == DEFAULT_MODEL_NAME
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(x["index"] for x in body["results"]) == [0, 1, 2]
    expected = native_scores(plain, QUERY, DOCUMENTS)
    for x in body["results"]:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-9)
        assert "document" not in x  # only with return_documents
    assert body["usage"]["pairs"] == 3


def test_top_n_and_return_documents(plain):
    body = {"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True}
    results = plain.post("/rerank", json=body).json()["results"]
    assert len(results) == 2
    assert all(x["document"]["text"] == DOCUMENTS[x["index"]] for x in results)


def test_rerank_batch_answers_each_request_in_order(plain):
    requests = [{"query": QUERY, "documents": DOCUMENTS}, {"query": "bananas", "documents": ["a"]}]
    r = plain.post("/rerank_batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert len(first["results"]) == 3 and len(second["results"]) == 1


def test_rerank_batch_simple_answers_in_pair_order(plain):
    body = {"queries": [QUERY, "fruit"], "documents": DOCUMENTS, "pairs": [[1, 1], [0, 0], [0, 0]]}
    scores = plain.post("/rerank_batch_simple", json=body).json()["scores"]
    assert len(scores) == 3 and scores[1] == scores[2]
    alone = native_scores(plain, QUERY, DOCUMENTS)
    assert scores[1] == pytest.approx(alone[0], abs=1e-9)


def test_a_repeated_request_is_answered_from_the_score_cache(serve):
    app = serve()
    body = {"query": "a fresh query", "documents": ["one text", "another text"]}
    first = app.client.post("/rerank", json=body).json()
    calls = len(app.backend.batches)
    second = app.client.post("/rerank", json=body).json()
    assert len(app.backend.batches) == calls  # the engine was not called again
    assert second["usage"]["cache_hits"] == 2 and first["usage"]["cache_hits"] == 0
    assert second["results"] == first["results"]


def test_health_livez_and_info(plain):
    assert plain.get("/health").json() == {"status": "ok", "model": DEFAULT_MODEL_NAME}
    assert plain.get("/livez").json()["status"] == "alive"
    info = plain.get("/info").json()
    assert info["family"] == "bi-encoder" and info["limits"]["max_length"] == 256
    assert info["limits"]["max_pairs_per_request"] == 100_000
    assert info["default_instruction"] is None


def test_openapi_lists_the_routes_and_states_the_models_limits(plain):
    schema = plain.get("/openapi.json").json()
    assert {"/rerank", "/v1/rerank", "/v2/rerank", "/rerank_batch", "/rerank_batch_simple"} <= set(
        schema["paths"]
    )
    assert "256" in str(schema["components"]["schemas"]["RerankRequest"])
    assert plain.get("/docs").status_code == 200


def test_metrics_count_requests_by_route_template(plain):
    plain.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    plain.get("/no/such/route")
    text = plain.get("/metrics").text
    assert 'reranker_requests_total{endpoint="/rerank",status="200"}' in text
    assert 'endpoint="unmatched",status="404"' in text
    assert "/no/such/route" not in text  # raw paths must not grow the label set


@pytest.mark.parametrize("family", ["cross-encoder", "llm-reranker"])
def test_classifier_families_score_through_the_same_routes(serve, family):
    app = serve(model_family=family)
    r = app.client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert all(0.0 <= x["relevance_score"] <= 1.0 for x in results)  # sigmoid of a logit
    info = app.client.get("/info").json()
    assert info["family"] == family
    expected = QWEN3_DEFAULT_INSTRUCTION if family == "llm-reranker" else None
    assert info["default_instruction"] == expected
