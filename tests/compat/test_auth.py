"""API keys on the real server (keys from the environment and from a key file, /metrics behind
the key), start-up failures for an unusable key file, and the key check's own logic."""

from __future__ import annotations

import httpx
import pytest
from compat_helpers import ENV_KEYS, FILE_KEY
from reranker_server.auth import ApiKeyMiddleware, ApiKeys, open_paths, read_key_file
from reranker_server.settings import Settings
from server_process import ServerProcess
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

BODY = {"query": "capital of France", "documents": ["Paris", "Berlin"]}


@pytest.mark.engine
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {ENV_KEYS[0]}", ENV_KEYS[0], "Bearer", f"Bearer {ENV_KEYS[0]}x"],
)
def test_requests_without_a_valid_key_get_401(keyed_server, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [("POST", "/rerank"), ("POST", "/v2/rerank"), ("GET", "/info")]:
        r = httpx.request(method, keyed_server.url + path, json=BODY, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        body = r.json()
        assert body["error"] == "unauthorized" and "Authorization: Bearer" in body["detail"]


@pytest.mark.engine
@pytest.mark.parametrize("key", [*ENV_KEYS, FILE_KEY])
def test_every_configured_key_is_accepted(keyed_server, key):
    for scheme in ("Bearer", "bearer"):
        r = httpx.post(
            keyed_server.url + "/rerank", json=BODY, headers={"Authorization": f"{scheme} {key}"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["index"] == 0


@pytest.mark.engine
def test_probes_stay_open_and_metrics_follow_the_setting(keyed_server):
    assert httpx.get(keyed_server.url + "/health").status_code == 200
    assert httpx.get(keyed_server.url + "/livez").status_code == 200
    # This server sets RERANKER_METRICS_REQUIRE_KEY=true.
    assert httpx.get(keyed_server.url + "/metrics").status_code == 401
    r = httpx.get(keyed_server.url + "/metrics", headers={"Authorization": f"Bearer {FILE_KEY}"})
    assert r.status_code == 200 and "reranker_requests_total" in r.text


@pytest.mark.engine
def test_openapi_states_the_key(keyed):
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert schema["security"] == [{"apiKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/rerank"]["post"]  # the global one applies


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read RERANKER_API_KEY_FILE"), ("# only a comment\n\n", "holds no key")],
)
def test_an_unusable_key_file_stops_the_server_at_start(tmp_path, content, message):
    key_file = tmp_path / "keys"
    if content is not None:
        key_file.write_text(content)
    server = ServerProcess(
        log_path=tmp_path / "server.log", env={"RERANKER_API_KEY_FILE": str(key_file)}
    )
    try:
        assert server.proc.wait(120) != 0
        log = server.log_tail()
        assert message in log and str(key_file) in log
        assert "Traceback" not in log
    finally:
        server.stop()


def test_key_file_format(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# comment\n\n  first  \nsecond\n   # indented comment\n")
    assert read_key_file(str(path)) == ["first", "second"]


def test_key_check():
    keys = ApiKeys(["alpha", "beta"])
    assert keys.enabled and not ApiKeys([]).enabled
    assert keys.accepts(b"Bearer alpha") and keys.accepts(b"bearer  beta ")
    for header in (
        None,
        b"",
        b"alpha",
        b"Bearer",
        b"Bearer alph",
        b"Bearer alphaa",
        b"Token alpha",
    ):
        assert not keys.accepts(header), header


def _app(settings: Settings) -> TestClient:
    async def ok(_):
        return PlainTextResponse("ok")

    routes = [Route(p, ok) for p in ("/health", "/livez", "/metrics", "/rerank")]
    app = Starlette(routes=routes)
    app.add_middleware(ApiKeyMiddleware, keys=ApiKeys(["k"]), open_paths=open_paths(settings))
    return TestClient(app)


def test_metrics_are_open_by_default_and_closed_on_request():
    default = _app(Settings(api_key=["k"]))
    assert [default.get(p).status_code for p in ("/health", "/livez", "/metrics", "/rerank")] == [
        200,
        200,
        200,
        401,
    ]
    closed = _app(Settings(api_key=["k"], metrics_require_key=True))
    assert closed.get("/metrics").status_code == 401
    assert closed.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
