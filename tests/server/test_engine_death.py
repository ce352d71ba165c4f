"""With RERANKER_STAY_UP_WITHOUT_ENGINE=true: when the engine core process dies or hangs,
/health says so and requests get 503 instead of hanging.

Uses servers of their own (the tiny cross-encoder), since the tests kill or freeze the engine."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.engine

# These tests watch the stay-up behaviour; the default, exiting, is in test_crash_only.py.
STAY_UP = {"RERANKER_STAY_UP_WITHOUT_ENGINE": "true"}


@pytest.fixture
def doomed_server(tmp_path, cross_encoder_dir):
    server = ServerProcess(
        "--model",
        str(cross_encoder_dir),
        "--dtype",
        "float32",
        log_path=tmp_path / "doomed.log",
        env=STAY_UP,
    )
    try:
        yield server
    finally:
        server.stop()


def test_loading_then_ready_then_dead(doomed_server):
    url = doomed_server.url
    # While the model loads: /health and scoring answer 503 with a reason, never hang or 500.
    saw_loading = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/health", timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if r.status_code == 200:
            break
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        saw_loading = True
        r = httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["d"]}, timeout=5)
        if r.status_code == 200:  # the engine became ready between the two calls
            break
        assert r.status_code == 503 and r.headers.get("retry-after")
        time.sleep(0.5)
    assert saw_loading
    doomed_server.wait_ready()
    assert httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200

    engines = _engine_core_processes(doomed_server)
    assert engines, "no engine core child process found"
    # The engine core and its worker die together, as when the machine kills the engine.
    for p in engines:
        for victim in [*p.children(recursive=True), p]:
            os.kill(victim.pid, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/health", timeout=5)
        if r.status_code == 503:
            break
        time.sleep(0.2)
    assert r.status_code == 503 and r.json()["error"] == "engine_unavailable"
    started = time.monotonic()
    r = httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["fresh doc"]}, timeout=30)
    assert r.status_code == 503 and "died" in r.json()["detail"]
    assert time.monotonic() - started < 10
    assert doomed_server.proc.poll() is None  # the HTTP server itself stays up to say so
    assert httpx.get(f"{url}/livez", timeout=5).status_code == 200  # alive, not ready


def _engine_core_processes(server: ServerProcess) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(server.proc.pid).children(recursive=True)
        if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()
    ]


def test_a_hung_engine_turns_the_service_unhealthy_and_callers_get_503(tmp_path, cross_encoder_dir):
    server = ServerProcess(
        "--model",
        str(cross_encoder_dir),
        "--dtype",
        "float32",
        log_path=tmp_path / "hung.log",
        env={"RERANKER_ENGINE_BATCH_TIMEOUT_S": "3", **STAY_UP},
    )
    frozen: list[psutil.Process] = []
    try:
        server.wait_ready()
        url = server.url
        assert (
            httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200
        )
        # SIGSTOP: the engine core is alive (no death to notice) but never answers.
        for p in _engine_core_processes(server):
            frozen += [*p.children(recursive=True), p]
        assert frozen, "no engine core child process found"
        for p in frozen:
            p.suspend()
        started = time.monotonic()
        r = httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["fresh"]}, timeout=60)
        assert r.status_code == 503, r.text
        assert "did not answer" in r.json()["detail"]
        assert time.monotonic() - started < 20
        health = httpx.get(f"{url}/health", timeout=5)
        assert health.status_code == 503 and "did not answer" in health.json()["detail"]
        r = httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["other"]}, timeout=10)
        assert r.status_code == 503 and r.headers.get("retry-after")
    finally:
        for p in frozen:
            try:
                p.resume()
            except psutil.NoSuchProcess:
                pass
        server.stop()
