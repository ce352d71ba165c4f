"""API keys, body size and text length limits, on the fake engine."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.fast

KEYS = "key-alpha,key-beta"
BODY = {"query": "capital of France", "documents": ["Paris", "Berlin"]}


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic key-alpha", "key-alpha", "Bearer"]
)
def test_requests_without_a_valid_key_get_401(serve, authorization):
    app = serve(api_key=KEYS)
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [("POST", "/rerank"), ("POST", "/v2/rerank"), ("GET", "/info")]:
        r = app.client.request(method, path, json=BODY, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized"
        assert "Authorization: Bearer" in r.json()["detail"]


def test_every_key_from_env_and_file_is_accepted(serve, tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# comment\n\nkey-from-file\n")
    app = serve(api_key=KEYS, api_key_file=key_file)
    for key in ("key-alpha", "key-beta", "key-from-file"):
        r = app.client.post("/rerank", json=BODY, headers={"Authorization": f"bearer {key}"})
        assert r.status_code == 200, r.text


def test_probes_stay_open_and_metrics_follow_the_setting(serve):
    app = serve(api_key=KEYS, metrics_require_key=True)
    assert app.client.get("/health").status_code == 200
    assert app.client.get("/livez").status_code == 200
    assert app.client.get("/metrics").status_code == 401
    ok = app.client.get("/metrics", headers={"Authorization": "Bearer key-beta"})
    assert ok.status_code == 200 and "reranker_requests_total" in ok.text
    schema = app.client.get("/openapi.json", headers={"Authorization": "Bearer key-beta"}).json()
    assert schema["security"] == [{"apiKey": []}]


def test_a_body_over_the_limit_gets_413(serve):
    app = serve(max_request_bytes=4096)
    big = {"query": "q", "documents": ["word " * 100] * 10}
    assert len(json.dumps(big)) > 4096
    r = app.client.post("/rerank", json=big)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "request_too_large"
    assert "4096" in r.json()["detail"] and "RERANKER_MAX_REQUEST_BYTES" in r.json()["detail"]
    assert app.client.post("/rerank", json=BODY).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/rerank", {"query": "q", "documents": ["ok", "x" * 101]}, "documents[1]"),
        ("/v1/rerank", {"query": "x" * 101, "documents": ["ok"]}, "query has"),
        ("/rerank", {"query": "q", "texts": ["x" * 101]}, "texts[0]"),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["x" * 101], "pairs": [[0, 0]]},
            "documents[0]",
        ),
    ],
)
def test_a_text_over_the_limit_gets_422(serve, path, body, where):
    app = serve(max_text_chars=100)
    r = app.client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert where in r.text and "limit of 100" in r.text and "RERANKER_MAX_TEXT_CHARS" in r.text
    ok = json.loads(json.dumps(body).replace("x" * 101, "x" * 100))
    assert app.client.post(path, json=ok).status_code == 200
