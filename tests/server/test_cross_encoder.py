"""The cross-encoder family through the real engine, on a tiny random BERT classifier.

Reference: transformers' own forward pass on the same weights and the same tokenisation
(document truncated first), so the test checks the service's score read-out, token types and
truncation against an independent implementation.
"""

from __future__ import annotations

import math

import httpx
import pytest

pytestmark = pytest.mark.engine

QUERY = "what is the capital of france"
DOCS = ["paris is the capital of france", "bananas are yellow", "berlin is in germany"]
LONG_DOC = " ".join(["the quick brown fox jumps over the lazy dog"] * 80)  # ~800 tokens


@pytest.fixture(scope="module")
def hf_logit(cross_encoder_dir):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(cross_encoder_dir)
    model = BertForSequenceClassification.from_pretrained(cross_encoder_dir).eval()

    def logit(query: str, doc: str, max_length: int = 512) -> float:
        enc = tok(query, doc, truncation="only_second", max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            return float(model(**enc).logits[0, 0])

    return logit


@pytest.fixture
def ce(cross_encoder_server):
    with httpx.Client(base_url=cross_encoder_server.url, timeout=120) as c:
        yield c


def test_info_reports_cross_encoder(ce):
    info = ce.get("/info").json()
    assert info["family"] == "cross-encoder"
    assert info["limits"]["max_length"] == 512


def test_scores_are_sigmoid_of_the_models_logit(ce, hf_logit):
    r = ce.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    for x in r.json()["results"]:
        want = hf_logit(QUERY, DOCS[x["index"]])
        assert x["raw_score"] == pytest.approx(want, abs=1e-4)
        assert x["relevance_score"] == pytest.approx(1 / (1 + math.exp(-want)), abs=1e-5)


@pytest.mark.parametrize("max_length", [32, 100, 512])
def test_max_length_cuts_the_document_and_keeps_the_query(ce, hf_logit, max_length):
    r = ce.post(
        "/rerank_batch_simple",
        json={
            "queries": [QUERY],
            "documents": [LONG_DOC],
            "pairs": [[0, 0]],
            "max_length": max_length,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["scores"][0] == pytest.approx(
        1 / (1 + math.exp(-hf_logit(QUERY, LONG_DOC, max_length))), abs=1e-5
    )


def test_different_truncations_give_different_scores(ce):
    scores = [
        ce.post(
            "/rerank_batch_simple",
            json={"queries": [QUERY], "documents": [LONG_DOC], "pairs": [[0, 0]], "max_length": n},
        ).json()["scores"][0]
        for n in (32, 512)
    ]
    assert scores[0] != pytest.approx(scores[1], abs=1e-6)


def test_query_longer_than_max_length_is_still_scored(ce, hf_logit):
    long_query = " ".join(["question"] * 100)
    r = ce.post("/rerank", json={"query": long_query, "documents": ["short"], "max_length": 16})
    assert r.status_code == 200, r.text
    assert 0.0 <= r.json()["results"][0]["relevance_score"] <= 1.0


def test_max_length_too_small_or_large_is_422(ce):
    for n in (2, 513):
        r = ce.post("/rerank", json={"query": QUERY, "documents": DOCS, "max_length": n})
        assert r.status_code == 422
        assert "max_length" in r.json()["detail"]


def test_a_pairs_score_does_not_depend_on_its_batch(ce, hf_logit):
    """The issue's example: at max_length 32, a query longer than max_length in the batch made
    every batch-mate re-tokenise longest-first (0.475589 alone, 0.475450 in that batch)."""
    query = "what is the capital city of france and how many people lived there in the year 1900"
    doc = " ".join(["paris has been the capital of france for many centuries"] * 3)
    long_query = " ".join(["question"] * 100)
    r = ce.post(
        "/rerank_batch_simple",
        json={
            "queries": [query, long_query],
            "documents": [doc, "short"],
            "pairs": [[0, 0], [1, 1]],
            "max_length": 32,
        },
    )
    assert r.status_code == 200, r.text
    alone = 1 / (1 + math.exp(-hf_logit(query, doc, 32)))  # the pair on its own terms
    assert r.json()["scores"][0] == pytest.approx(alone, abs=1e-6)
