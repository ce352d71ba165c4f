"""Input limits and malformed input on the real server: body size (413), text length (422), lone
surrogates, invalid UTF-8 and deeply nested JSON (422 invalid_request), and the schema saying so.

The keyed server has small limits (64 KiB bodies, 2000-character texts) so they can bite."""

from __future__ import annotations

import json

import httpx
import pytest
from compat_helpers import MAX_BYTES, MAX_CHARS
from reranker_server.request_limits import TEXT_PATTERN

pytestmark = pytest.mark.engine

JSON = {"content-type": "application/json"}


def test_a_body_over_the_limit_gets_413(keyed):
    big = {"query": "q", "documents": ["word " * 300] * 60}  # ~90 KB, every text short
    assert len(json.dumps(big)) > MAX_BYTES
    r = keyed.post("/rerank", json=big)
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "request_too_large"
    assert str(MAX_BYTES) in body["detail"] and "RERANKER_MAX_REQUEST_BYTES" in body["detail"]


def test_a_chunked_body_over_the_limit_gets_413(keyed):
    def chunks():
        yield b'{"query": "q", "documents": ['
        for _ in range(200):
            yield b'"' + b"x" * 1000 + b'", '
        yield b'"end"]}'

    r = keyed.post("/rerank", content=chunks(), headers=JSON)  # no Content-Length
    assert r.status_code == 413, r.text


def test_a_body_under_the_limit_is_served(keyed):
    body = {"query": "q", "documents": ["word " * 300] * 30}  # ~45 KB
    assert len(json.dumps(body)) < MAX_BYTES
    r = keyed.post("/rerank", json=body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/rerank", {"query": "q", "documents": ["ok", "x" * (MAX_CHARS + 1)]}, "documents[1]"),
        ("/v1/rerank", {"query": "x" * (MAX_CHARS + 1), "documents": ["ok"]}, "query has"),
        ("/rerank", {"query": "q", "texts": ["x" * (MAX_CHARS + 1)]}, "texts[0]"),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["x" * (MAX_CHARS + 1)], "pairs": [[0, 0]]},
            "documents[0]",
        ),
    ],
)
def test_a_text_over_the_limit_gets_422(keyed, path, body, where):
    r = keyed.post(path, json=body)
    assert r.status_code == 422, r.text
    text = r.text
    assert where in text and f"limit of {MAX_CHARS}" in text and "RERANKER_MAX_TEXT_CHARS" in text
    ok = json.loads(json.dumps(body).replace("x" * (MAX_CHARS + 1), "x" * MAX_CHARS))
    assert keyed.post(path, json=ok).status_code == 200


@pytest.mark.parametrize(
    ("path", "raw", "where"),
    [
        ("/rerank", r'{"query": "q", "documents": ["a", "\ud800"]}', "documents[1]"),
        ("/rerank", r'{"query": "\udfff", "documents": ["a"]}', "query"),
        ("/v1/rerank", r'{"query": "q", "documents": [{"text": "a", "t": "\ud800"}]}', "documents"),
        ("/rerank", r'{"query": "q", "documents": ["a"], "instruction": "\ud800"}', "instruction"),
        ("/rerank", r'{"query": "q", "texts": ["\ud800"]}', "texts[0]"),
        (
            "/rerank_batch_simple",
            r'{"queries": ["q"], "documents": ["\ud800x"], "pairs": [[0, 0]]}',
            "documents[0]",
        ),
    ],
)
def test_lone_surrogates_get_422(plain, path, raw, where):
    r = plain.post(path, content=raw.encode(), headers=JSON)
    assert r.status_code == 422, r.text
    assert where in r.text and "surrogate" in r.text


def test_invalid_utf8_gets_422(plain):
    r = plain.post("/rerank", content=b'{"query": "q", "documents": ["\xff\xfe"]}', headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json() == {
        "error": "invalid_request",
        "detail": "the body is not valid UTF-8 (invalid start byte at byte 30)",
    }


def test_deeply_nested_json_gets_422(plain):
    r = plain.post("/rerank", content=b"[" * 100_000 + b"]" * 100_000, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and "nested too deeply" in r.json()["detail"]
    r = plain.post("/v1/rerank", content=b'{"query": "q", "documents": [}', headers=JSON)
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]


def test_openapi_states_the_text_rules(keyed, plain):
    for client, limit in ((keyed, MAX_CHARS), (plain, 100_000)):
        schema = client.get("/openapi.json").json()
        query = schema["components"]["schemas"]["RerankRequest"]["properties"]["query"]
        assert query["pattern"] == TEXT_PATTERN and query["maxLength"] == limit
        texts = schema["components"]["schemas"]["RerankBatchSimpleRequest"]["properties"]
        assert texts["queries"]["items"]["maxLength"] == limit


def test_a_training_sized_call_fits_the_default_limits(plain):
    # The largest call the server takes (100 000 pairs) is about 2 MB of JSON: far below the
    # default 64 MiB, which leaves room for thousands of long texts besides.
    queries = [f"query {i}" for i in range(200)]
    documents = [f"document {i}" for i in range(200)]
    pairs = [[i % 200, (i // 200) % 200] for i in range(100_000)]
    body = json.dumps({"queries": queries, "documents": documents, "pairs": pairs})
    assert 1_000_000 < len(body) < 64 * 1024 * 1024
    r = httpx.post(f"{plain.base_url}/rerank_batch_simple", content=body, headers=JSON, timeout=600)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["scores"]) == 100_000
