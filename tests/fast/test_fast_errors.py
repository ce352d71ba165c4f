"""Bad input, engine states and overload: every failure is a 4xx/5xx with a JSON body saying
what was wrong, never a stack trace (on the fake engine)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.fast

JSON = {"content-type": "application/json"}


def assert_error(r, status: int, error: str, message: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    assert message in str(body["detail"]), body
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        ("/rerank", {"query": "q"}, "documents: Field required"),
        ("/rerank", {"query": "", "documents": ["a"]}, "query"),
        (
            "/rerank",
            {"query": "q", "documents": ["a"], "max_length": 100000},
            "above this model's limit of 256",
        ),
        ("/rerank", {"query": "q", "documents": ["a"], "max_length": 0}, "max_length"),
        ("/rerank", {"query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
        (
            "/rerank",
            {"query": "q", "documents": ["a"], "topn": 1},
            "topn: Extra inputs are not permitted",
        ),
        (
            "/rerank_batch",
            {
                "requests": [
                    {"query": "q", "documents": ["a"]},
                    {"query": "q", "documents": ["a"], "max_length": 9999},
                ]
            },
            "requests[1]: max_length 9999",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["d"], "pairs": [[0, 1]]},
            "pairs[0] = [0, 1] is out of range",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["d"], "pairs": [[-1, 0]]},
            "pairs[0][0]: Input should be greater than or equal to 0",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q", ""], "documents": ["d"], "pairs": [[0, 0]]},
            "queries[1] is empty",
        ),
        ("/v1/rerank", {"query": "q", "documents": [{}]}, "documents[0]: the document object"),
        ("/v2/rerank", {"query": "q", "documents": ["a", 3]}, "documents[1]: Input should be"),
    ],
)
def test_bad_input_gets_422_with_a_useful_message(plain, endpoint, body, message):
    assert_error(plain.post(endpoint, json=body), 422, "invalid_request", message)


def test_malformed_json_invalid_utf8_and_unknown_route(plain):
    r = plain.post("/rerank", content=b"{not json", headers=JSON)
    assert_error(r, 422, "invalid_request", "not valid JSON")
    r = plain.post("/rerank", content=b'{"query": "q", "documents": ["\xff\xfe"]}', headers=JSON)
    assert_error(r, 422, "invalid_request", "not valid UTF-8")
    r = plain.post("/rerank", content=rb'{"query": "q", "documents": ["\ud800"]}', headers=JSON)
    assert_error(r, 422, "invalid_request", "surrogate")
    assert_error(plain.get("/no/such/route"), 404, "not_found", "")


def test_another_models_name_gets_404_naming_the_served_one(serve):
    app = serve(model_aliases="rerank-v3.5")
    body = {"model": "someone-else", "query": "q", "documents": ["a"]}
    r = app.client.post("/v2/rerank", json=body)
    assert_error(r, 404, "model_not_found", "this server serves")
    assert "rerank-v3.5" in r.json()["detail"]
    r = app.client.post("/v2/rerank", json={**body, "model": "rerank-v3.5"})
    assert r.status_code == 200, r.text


def test_too_many_pairs_get_422_naming_the_limit(serve):
    app = serve(max_pairs_per_request=3)
    r = app.client.post("/rerank", json={"query": "q", "documents": ["a", "b", "c", "d"]})
    assert_error(r, 422, "invalid_request", "more than this server's limit of 3")
    body = {"queries": ["q"], "documents": ["d"], "pairs": [[0, 0]] * 4}
    assert_error(app.client.post("/rerank_batch_simple", json=body), 422, "invalid_request", "3")


def test_loading_engine_gets_503_with_retry_after_then_serves(serve):
    app = serve(ready=False)
    body = {"query": "q", "documents": ["a"]}
    r = app.client.post("/rerank", json=body)
    assert_error(r, 503, "engine_unavailable", "still loading")
    assert r.headers["retry-after"] == "5"
    assert_error(app.client.get("/health"), 503, "engine_unavailable", "loading")
    assert app.client.get("/livez").status_code == 200
    assert app.client.get("/info").json()["limits"]["max_length"] == 0

    app.backend.finish_loading()
    app.wait_ready()
    assert app.client.post("/rerank", json=body).status_code == 200


def test_a_dead_engine_gets_503_and_health_says_why(serve):
    app = serve()
    app.backend.kill()
    r = app.client.post("/rerank", json={"query": "q", "documents": ["a"]})
    assert_error(r, 503, "engine_unavailable", "the fake engine was killed; restart the server")
    assert r.headers["retry-after"] == "30"
    assert_error(app.client.get("/health"), 503, "engine_unavailable", "killed")
    assert app.client.get("/livez").status_code == 200
    assert "reranker_engine_up 0.0" in app.client.get("/metrics").text


def test_more_queued_work_than_allowed_gets_429(serve):
    app = serve(max_queued_pairs=2)
    r = app.client.post("/rerank", json={"query": "q", "documents": ["a", "b", "c"]})
    assert_error(r, 429, "overloaded", "")
    assert app.client.post("/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
