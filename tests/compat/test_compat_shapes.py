"""The Cohere/Jina/vLLM and TEI request and answer shapes, field by field, on the real server
(the shared default one: no key, default limits)."""

from __future__ import annotations

import uuid

import pytest
from compat_helpers import SERVED, native_scores

pytestmark = pytest.mark.engine

QUERY = "Which city is the capital of France?"


def docs(n: int = 4) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    base = [
        "Paris is the capital of France.",
        "Bananas are yellow.",
        "Berlin is the capital of Germany.",
        "The Louvre is a museum in Paris.",
    ]
    return [f"{base[i % len(base)]} #{i} {tag}" for i in range(n)]


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_the_three_routes_answer_the_same_shape_and_scores(plain, path):
    documents = docs()
    r = plain.post(path, json={"model": SERVED, "query": QUERY, "documents": documents})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("rerank-") and body["model"] == SERVED
    expected = native_scores(plain, QUERY, documents)
    assert [x["index"] for x in body["results"]] == sorted(
        range(len(documents)), key=lambda i: -expected[i]
    )
    for x in body["results"]:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-7)
        assert "document" not in x  # return_documents defaults to false
    usage = body["usage"]
    assert usage["pairs"] == len(documents)
    assert usage["prompt_tokens"] == usage["total_tokens"] > len(documents)


def test_null_means_absent_and_top_n_zero_means_all(plain):
    documents = docs(5)
    for top_n in (None, 0):
        body = {
            "query": QUERY,
            "documents": documents,
            "top_n": top_n,
            "return_documents": None,
            "instruction": None,
            "max_length": None,
            "model": None,
        }
        r = plain.post("/rerank", json=body)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 5
    r = plain.post("/v2/rerank", json={"query": QUERY, "documents": documents, "top_n": 2})
    assert len(r.json()["results"]) == 2


def test_documents_as_objects_are_echoed_with_their_fields(plain):
    documents = docs(3)
    objects = [{"text": d, "id": f"doc-{i}", "rank": i} for i, d in enumerate(documents)]
    r = plain.post(
        "/v1/rerank", json={"query": QUERY, "documents": objects, "return_documents": True}
    )
    assert r.status_code == 200, r.text
    expected = native_scores(plain, QUERY, documents)
    for x in r.json()["results"]:
        assert x["document"] == objects[x["index"]]
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-7)


def test_rank_fields_rank_on_field_lines_in_the_order_given(plain):
    tag = uuid.uuid4().hex[:6]
    objects = [
        {"title": f"France {tag}", "body": "Paris is its capital.", "text": "not ranked on"},
        {"title": f"Fruit {tag}", "body": "Bananas are yellow.", "text": "not ranked on"},
    ]
    r = plain.post(
        "/rerank", json={"query": QUERY, "documents": objects, "rank_fields": ["title", "body"]}
    )
    assert r.status_code == 200, r.text
    texts = [f"title: {o['title']}\nbody: {o['body']}" for o in objects]
    expected = native_scores(plain, QUERY, texts)
    for x in r.json()["results"]:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-7)
    # Without rank_fields, an object without text is ranked on all its fields, in order.
    r = plain.post(
        "/rerank", json={"query": QUERY, "documents": objects[:1], "return_documents": True}
    )
    (result,) = r.json()["results"]
    assert result["relevance_score"] != pytest.approx(expected[0], abs=1e-4)  # ranked on "text"
    bare = {k: v for k, v in objects[0].items() if k != "text"}
    r = plain.post("/rerank", json={"query": QUERY, "documents": [bare], "return_documents": True})
    (result,) = r.json()["results"]
    assert result["relevance_score"] == pytest.approx(expected[0], abs=1e-7)
    assert result["document"] == {**bare, "text": texts[0]}
    # A document with none of the rank_fields is ranked on its text.
    r = plain.post(
        "/rerank",
        json={"query": QUERY, "documents": [{"text": texts[0]}], "rank_fields": ["summary"]},
    )
    assert r.json()["results"][0]["relevance_score"] == pytest.approx(expected[0], abs=1e-7)


def test_mixed_string_and_object_documents(plain):
    documents = docs(2)
    r = plain.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": [documents[0], {"text": documents[1]}]},
    )
    assert r.status_code == 200, r.text
    expected = native_scores(plain, QUERY, documents)
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    assert got == pytest.approx(dict(enumerate(expected)), abs=1e-7)


def test_max_tokens_per_doc_and_truncate_prompt_tokens_act_as_max_length(plain):
    long_doc = f"{uuid.uuid4().hex} " + "Paris is the capital of France. " * 40
    base = {"query": QUERY, "documents": [long_doc]}

    def score(path: str, **extra) -> float:
        r = plain.post(path, json={**base, **extra})
        assert r.status_code == 200, r.text
        return r.json()["results"][0]["relevance_score"]

    cut = score("/rerank", max_length=16)
    assert score("/v2/rerank", max_tokens_per_doc=16) == cut
    assert score("/rerank", truncate_prompt_tokens=16) == cut
    # The smallest limit wins; a foreign limit above the model's 256 means the model's limit.
    assert score("/rerank", max_length=64, max_tokens_per_doc=16) == cut
    whole = score("/rerank")
    assert whole != pytest.approx(cut, abs=1e-4)
    assert score("/v2/rerank", max_tokens_per_doc=4096) == whole
    assert score("/rerank", truncate_prompt_tokens=-1, max_tokens_per_doc=0) == whole


def test_model_names_served_name_path_and_mismatch(plain):
    documents = docs(2)
    assert (
        plain.post("/rerank", json={"model": SERVED, "query": QUERY, "documents": documents})
    ).status_code == 200
    r = plain.post("/v1/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": ["a"]})
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "model_not_found"
    assert "'rerank-v3.5' is not served here" in body["detail"] and SERVED in body["detail"]
    for path, payload in [
        ("/rerank_batch_simple", {"queries": ["q"], "documents": ["d"], "pairs": [[0, 0]]}),
        ("/rerank_batch", {"requests": [{"query": "q", "documents": ["d"]}]}),
    ]:
        assert plain.post(path, json={**payload, "model": SERVED}).status_code == 200
        assert plain.post(path, json={**payload, "model": "other"}).status_code == 404


def test_aliases_are_accepted(keyed):
    for name in ("rerank-v3.5", "minilm"):
        r = keyed.post("/v2/rerank", json={"model": name, "query": QUERY, "documents": ["a"]})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == SERVED


def test_ignored_and_unknown_fields(plain):
    documents = docs(2)
    known_ignored = {"priority": 5, "max_chunks_per_doc": 10, "raw_scores": True}
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        r = plain.post(path, json={"query": QUERY, "documents": documents, **known_ignored})
        assert r.status_code == 200, (path, r.text)
    unknown = {"query": QUERY, "documents": documents, "use_activation": True, "user": "me"}
    for path in ("/v1/rerank", "/v2/rerank"):
        assert plain.post(path, json=unknown).status_code == 200
    r = plain.post("/rerank", json=unknown)
    assert r.status_code == 422 and "use_activation: Extra inputs are not permitted" in r.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "q", "documents": [{}]}, "documents[0]: the document object is empty"),
        ({"query": "q", "documents": [{"text": " "}]}, "documents[0].text is empty or blank"),
        ({"query": "q", "documents": ["a", 3]}, "documents[1]: Input should be a valid string"),
        ({"query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
        ({"query": "q", "documents": ["a"], "max_tokens_per_doc": -1}, "max_tokens_per_doc"),
    ],
)
def test_compat_bad_input_gets_422(plain, body, message):
    r = plain.post("/v1/rerank", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and message in r.json()["detail"]


def test_tei_shape_answers_a_bare_sorted_list(plain):
    texts = docs(4)
    r = plain.post("/rerank", json={"query": QUERY, "texts": texts})
    assert r.status_code == 200, r.text
    ranks = r.json()
    assert isinstance(ranks, list) and len(ranks) == 4
    expected = native_scores(plain, QUERY, texts)
    assert [x["index"] for x in ranks] == sorted(range(4), key=lambda i: -expected[i])
    for x in ranks:
        assert set(x) == {"index", "score"}
        assert x["score"] == pytest.approx(expected[x["index"]], abs=1e-7)


def test_tei_options(plain):
    texts = docs(3)
    body = {
        "query": QUERY,
        "texts": texts,
        "raw_scores": True,
        "return_text": True,
        "truncate": True,
        "truncation_direction": "Right",
    }
    r = plain.post("/rerank", json=body)
    assert r.status_code == 200, r.text
    expected = native_scores(plain, QUERY, texts)  # bi-encoder: raw score == relevance
    for x in r.json():
        assert x["text"] == texts[x["index"]]
        assert x["score"] == pytest.approx(expected[x["index"]], abs=1e-7)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "q", "texts": ["a", ""]}, "texts[1] is empty or blank"),
        ({"query": "q", "texts": []}, "texts"),
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


def test_native_batch_routes_still_answer_their_shapes(plain):
    documents = docs(2)
    r = plain.post(
        "/rerank_batch",
        json={"requests": [{"query": QUERY, "documents": documents, "return_documents": True}]},
    )
    assert r.status_code == 200, r.text
    (one,) = r.json()["results"]
    assert {x["document"]["text"] for x in one["results"]} == set(documents)
    expected = native_scores(plain, QUERY, documents)
    for x in one["results"]:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-7)
