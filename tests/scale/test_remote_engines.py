"""The remote-engine backend against several real `vllm serve` engines: load balancing,
fail-over when an engine stops, 503 when none is left, and `--workers 2` sharing one engine."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import psutil
import pytest
from reranker_client import RerankerClient
from reranker_server.metrics import STATE_REFRESH_S
from server_process import ServerProcess, metric_samples, start_engines

pytestmark = pytest.mark.engine


def engine_requests(url: str) -> float:
    """Requests an engine has finished, from vLLM's own metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def test_two_engines_share_the_load_and_losing_one_loses_no_request(tmp_path, cross_encoder_dir):
    engines = start_engines(cross_encoder_dir, 2, tmp_path)
    server = ServerProcess(
        "--model",
        str(cross_encoder_dir),
        "--batch-max-pairs",
        "8",
        *[arg for e in engines for arg in ("--engine-url", e.url)],
        log_path=tmp_path / "server.log",
        env={"RERANKER_ENGINE_HEALTH_INTERVAL_S": "0.5"},
    )
    try:
        server.wait_ready()
        query = "which engine answers"
        docs = [f"document {i}" for i in range(40)]
        with RerankerClient(server.url, max_retries=5) as client:
            reference = client.score_pairs([query], docs, [(0, i) for i in range(40)])
        assert all(engine_requests(e.url) > 0 for e in engines), "load was not spread"

        failures: list[str] = []
        results: list[tuple[list[str], list[float]]] = []
        stop = threading.Event()

        def traffic() -> None:
            with RerankerClient(server.url, max_retries=5, backoff_base=0.2) as c:
                while not stop.is_set():
                    tag = uuid.uuid4().hex[:6]  # fresh pairs: the engines, not the cache, answer
                    batch = [f"{d} {tag}" for d in docs[:10]]
                    try:
                        results.append(
                            (batch, c.score_pairs([query], batch, [(0, i) for i in range(10)]))
                        )
                    except Exception as exc:  # noqa: BLE001 - collected and asserted on
                        failures.append(repr(exc))

        threads = [threading.Thread(target=traffic) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(2)
        engines[0].kill_tree()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert len(results) > 10
        assert httpx.get(f"{server.url}/health").status_code == 200

        # Still the right scores, now all from the surviving engine.
        with RerankerClient(server.url) as client:
            again = client.score_pairs([query + " again"], docs, [(0, i) for i in range(40)])
            assert again != pytest.approx(reference, abs=1e-9)  # a different query: fresh work
            assert client.score_pairs([query], docs, [(0, i) for i in range(40)]) == pytest.approx(
                reference, abs=1e-6
            )

        # With no engine left the server says so, quickly, instead of hanging.
        engines[1].kill_tree()
        deadline = time.monotonic() + 15
        while httpx.get(f"{server.url}/health").status_code != 503:
            assert time.monotonic() < deadline, "health did not notice the engines were gone"
            time.sleep(0.2)
        started = time.monotonic()
        r = httpx.post(f"{server.url}/rerank", json={"query": "q", "documents": [uuid.uuid4().hex]})
        assert r.status_code == 503 and "no engine" in r.json()["detail"]
        assert time.monotonic() - started < 5
    finally:
        server.stop()
        for e in engines:
            e.stop()


def test_two_workers_share_one_engine_and_report_all_metrics(tmp_path, cross_encoder_dir):
    (engine,) = start_engines(cross_encoder_dir, 1, tmp_path)
    server = ServerProcess(
        "--model",
        str(cross_encoder_dir),
        "--engine-url",
        engine.url,
        "--workers",
        "2",
        log_path=tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        # Both workers must be ready, not just the one that answered first.
        deadline = time.monotonic() + 120
        workers: dict[str, int] = {}  # pid -> requests it answered
        n = 0
        while len(workers) < 2 or n < 40:
            assert time.monotonic() < deadline, f"only workers {set(workers)} answered"
            with httpx.Client(base_url=server.url, timeout=60) as fresh_connection:
                r = fresh_connection.post(
                    "/rerank", json={"query": "q", "documents": [f"d{n}", "shared doc"]}
                )
            if r.status_code == 200:
                n += 1
                pid = r.headers["x-reranker-worker"]
                workers[pid] = workers.get(pid, 0) + 1
        assert len(workers) == 2

        # The model is loaded once: by the engine, and by no worker.
        server_tree = psutil.Process(server.proc.pid).children(recursive=True)
        assert not [p for p in server_tree if "EngineCore" in " ".join(p.cmdline())]
        engine_tree = psutil.Process(engine.proc.pid).children(recursive=True)
        assert len([p for p in engine_tree if "EngineCore" in " ".join(p.cmdline())]) == 1

        # Whichever worker answers /metrics, it reports both workers' requests, and each
        # worker's gauges as they are now, from the first answer on (not as the other worker
        # last answered /metrics): its own engine up, its own cache of its requests' pairs
        # (one new document each, and "shared doc" once). The engine's gauge is refreshed every
        # STATE_REFRESH_S in each worker: the worker that answered last may be only just ready.
        time.sleep(2 * STATE_REFRESH_S)
        for _ in range(4):
            m = metric_samples(server.url)
            total = m[("reranker_requests_total", (("endpoint", "/rerank"), ("status", "200")))]
            assert total == n
            for pid, answered in workers.items():
                assert m[("reranker_engine_up", (("pid", pid),))] == 1
                assert m[("reranker_cache_entries", (("pid", pid),))] == answered + 1
    finally:
        server.stop()
        engine.stop()
