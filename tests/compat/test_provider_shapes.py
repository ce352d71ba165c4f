"""NVIDIA NIM, Voyage, Infinity and DeepInfra shapes on the real MiniLM server, checked against
the native scores (plain HTTP here; tests/compat/test_litellm.py drives them with LiteLLM)."""

from __future__ import annotations

import pytest
from compat_helpers import SERVED, native_scores

pytestmark = pytest.mark.engine

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]


def _best_first(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


@pytest.mark.parametrize("path", ["/v1/ranking", f"/v1/retrieval/{SERVED}/reranking"])
def test_nim_ranking(plain, path):
    body = {
        "model": SERVED,
        "query": {"text": QUERY},
        "passages": [{"text": d} for d in DOCS],
        "truncate": "END",
    }
    r = plain.post(path, json=body)
    assert r.status_code == 200, r.text
    rankings = r.json()["rankings"]
    native = native_scores(plain, QUERY, DOCS)
    assert [x["index"] for x in rankings] == _best_first(native)
    assert set(rankings[0]) == {"index", "logit"}
    top = plain.post(path, json={**body, "top_k": 1}).json()["rankings"]
    assert [x["index"] for x in top] == _best_first(native)[:1]


def test_nim_refuses_a_passage_without_text_with_a_json_reason(plain):
    r = plain.post("/v1/ranking", json={"query": {"text": QUERY}, "passages": [{"txt": "x"}]})
    assert r.status_code == 422 and "passages" in r.text


def test_voyage(plain):
    r = plain.post(
        "/voyage/v1/rerank",
        json={
            "model": SERVED,
            "query": QUERY,
            "documents": DOCS,
            "top_k": 2,
            "return_documents": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    native = native_scores(plain, QUERY, DOCS)
    assert (
        body["object"] == "list" and body["model"] == SERVED and body["usage"]["total_tokens"] > 0
    )
    assert [d["index"] for d in body["data"]] == _best_first(native)[:2]
    for d in body["data"]:
        assert d["relevance_score"] == pytest.approx(native[d["index"]], abs=1e-6)
        assert d["document"] == DOCS[d["index"]]


@pytest.mark.parametrize("path", ["/infinity/rerank", "/infinity/v1/rerank"])
def test_infinity_answers_documents_as_plain_strings(plain, path):
    r = plain.post(path, json={"query": QUERY, "documents": DOCS, "return_documents": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["document"] for x in results] == [DOCS[x["index"]] for x in results]
    native = native_scores(plain, QUERY, DOCS)
    assert [x["index"] for x in results] == _best_first(native)


def test_deepinfra_scores_pairs_in_input_order(plain):
    queries = [QUERY, QUERY, "Which fruit is yellow?"]
    r = plain.post(f"/inference/{SERVED}", json={"queries": queries, "documents": DOCS})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert scores[:2] == pytest.approx(native_scores(plain, QUERY, DOCS[:2]), abs=1e-6)
    assert scores[2] == pytest.approx(native_scores(plain, queries[2], DOCS[2:])[0], abs=1e-6)
    bad = plain.post(f"/inference/{SERVED}", json={"queries": [QUERY], "documents": DOCS})
    assert bad.status_code == 422 and "queries" in bad.json()["detail"]
    other = plain.post("/inference/other/model", json={"queries": [QUERY], "documents": DOCS[:1]})
    assert other.status_code == 404
