"""A real Prometheus (Debian's package) scrapes the running server; after traffic its query API
returns the request and cache counters."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import httpx
import pytest
from server_process import free_port

pytestmark = pytest.mark.engine


@pytest.fixture
def prometheus(tmp_path, minilm_server):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run deploy/install-test-tools.sh"
    target = minilm_server.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: reranker\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "prometheus did not start"
        time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


def query(prom: str, expr: str) -> float | None:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    result = r["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(prom: str, expr: str, at_least: float, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = query(prom, expr)
        if value is not None and value >= at_least:
            return value
        assert time.monotonic() < deadline, f"{expr} = {value}, wanted >= {at_least}"
        time.sleep(0.5)


def test_prometheus_scrapes_request_and_cache_counters(prometheus, minilm_server):
    wait_for(prometheus, 'up{job="reranker"}', 1)
    before_requests = (
        query(prometheus, 'sum(reranker_requests_total{endpoint="/rerank",status="200"})') or 0
    )
    before_hits = query(prometheus, "reranker_cache_hits_total") or 0
    docs = [f"scraped document {i} {uuid.uuid4().hex}" for i in range(4)]
    for _ in range(3):  # the second and third rounds are cache hits
        r = httpx.post(f"{minilm_server.url}/rerank", json={"query": "q", "documents": docs})
        assert r.status_code == 200
    wait_for(
        prometheus,
        'sum(reranker_requests_total{endpoint="/rerank",status="200"})',
        before_requests + 3,
    )
    wait_for(prometheus, "reranker_cache_hits_total", before_hits + 8)
    assert wait_for(prometheus, "reranker_engine_up", 1) == 1
    assert query(prometheus, "sum(reranker_engine_batch_pairs_count)") > 0
