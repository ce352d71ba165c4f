"""When the engine core process dies, /health says so and requests get 503 instead of hanging.

Uses a server of its own (the tiny cross-encoder), since the test kills its engine."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.engine


@pytest.fixture
def doomed_server(tmp_path, cross_encoder_dir):
    server = ServerProcess(
        "--model", str(cross_encoder_dir), "--dtype", "float32", log_path=tmp_path / "doomed.log"
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

    engines = [
        p
        for p in psutil.Process(doomed_server.proc.pid).children(recursive=True)
        if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()
    ]
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
