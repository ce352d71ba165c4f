"""The Cohere/Jina/vLLM (/v1, /v2) and text-embeddings-inference shapes, on the fake engine."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.fast

QUERY = "Which city is the capital of France?"
DOCUMENTS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]


def native_scores(client, documents: list[str]) -> list[float]:
    pairs = [[0, i] for i in range(len(documents))]
    body = {"queries": [QUERY], "documents": documents, "pairs": pairs}
    return client.post("/rerank_batch_simple", json=body).json()["scores"]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cohere_routes_answer_the_native_shape_and_ignore_unknown_fields(plain, path):
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCUMENTS}
    # An unknown model name is refused; the served one or none is accepted.
    assert plain.post(path, json=body).status_code == 404
    body.pop("model")
    r = plain.post(path, json={**body, "user": "me", "max_chunks_per_doc": 10, "top_n": 2})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    expected = native_scores(plain, DOCUMENTS)
    assert len(results) == 2
    for x in results:
        assert set(x) == {"index", "relevance_score", "raw_score"}
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-9)


def test_native_route_refuses_unknown_fields(plain):
    r = plain.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "user": "me"})
    assert r.status_code == 422 and "user: Extra inputs are not permitted" in r.text


def test_documents_as_objects_are_echoed_with_their_fields(plain):
    documents = [{"text": DOCUMENTS[0], "id": "a"}, DOCUMENTS[1]]
    body = {"query": QUERY, "documents": documents, "return_documents": True}
    r = plain.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    echoed = {x["index"]: x["document"] for x in r.json()["results"]}
    assert echoed[0]["text"] == DOCUMENTS[0] and echoed[1]["text"] == DOCUMENTS[1]


def test_tei_shape_answers_a_bare_sorted_list(plain):
    r = plain.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert r.status_code == 200, r.text
    ranks = r.json()
    expected = native_scores(plain, DOCUMENTS)
    assert [x["index"] for x in ranks] == sorted(range(3), key=lambda i: -expected[i])
    for x in ranks:
        assert set(x) == {"index", "score", "text"} and x["text"] == DOCUMENTS[x["index"]]
        assert x["score"] == pytest.approx(expected[x["index"]], abs=1e-9)


def test_tei_raw_scores_on_a_cross_encoder_are_logits(serve):
    app = serve(model_family="cross-encoder")
    plain_ranks = app.client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS}).json()
    raw = app.client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})
    raw_ranks = {x["index"]: x["score"] for x in raw.json()}
    for x in plain_ranks:
        assert 0 <= x["score"] <= 1
        assert (raw_ranks[x["index"]] > 0) == (x["score"] > 0.5)  # sigmoid(logit)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "q", "texts": ["a", ""]}, "texts[1] is empty or blank"),
        ({"query": "q", "texts": ["a"], "truncation_direction": "Left"}, "truncation_direction"),
        ({"query": "q", "texts": ["a"], "documents": ["b"]}, "documents: Extra inputs"),
    ],
)
def test_tei_errors_come_in_tei_shape(plain, body, message):
    r = plain.post("/rerank", json=body)
    assert r.status_code == 422, r.text
    payload = r.json()
    assert payload["error_type"] == "Validation"
    assert message in payload["error"] and payload["detail"] == payload["error"]


def test_tei_engine_outage_comes_in_tei_shape(serve):
    app = serve()
    app.backend.kill()
    r = app.client.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status_code == 503, r.text
    assert r.json()["error_type"] == "Unhealthy"
