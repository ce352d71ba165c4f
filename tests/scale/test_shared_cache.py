"""Two server processes share a real Redis: a pair scored through one is a cache hit through the
other, and stopping Redis mid-run fails no request."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from server_process import ServerProcess, metric_samples, start_engines

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory, cross_encoder_dir):
    (engine,) = start_engines(cross_encoder_dir, 1, tmp_path_factory.mktemp("engine"))
    yield engine
    engine.stop()


@pytest.fixture
def two_servers(tmp_path, engine, redis_server, cross_encoder_dir):
    servers = [
        ServerProcess(
            "--model",
            str(cross_encoder_dir),
            "--engine-url",
            engine.url,
            "--redis-url",
            redis_server.url,
            log_path=tmp_path / f"server-{i}.log",
            env={"RERANKER_REDIS_RETRY_S": "1"},
        )
        for i in range(2)
    ]
    try:
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()


def rerank(url: str, docs: list[str]) -> dict:
    r = httpx.post(f"{url}/rerank", json={"query": "shared query", "documents": docs}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_pair_scored_by_one_server_is_a_hit_for_the_other(two_servers):
    a, b = two_servers
    docs = [f"document {i} {uuid.uuid4().hex}" for i in range(5)]
    first = rerank(a.url, docs)
    assert first["usage"]["cache_hits"] == 0
    before = metric_samples(b.url)
    second = rerank(b.url, docs)
    assert second["usage"]["cache_hits"] == 5
    assert second["results"] == first["results"]
    after = metric_samples(b.url)
    assert after[("reranker_redis_hits_total", ())] - before[("reranker_redis_hits_total", ())] == 5
    assert after[("reranker_pairs_scored_total", ())] == before[("reranker_pairs_scored_total", ())]


def test_stopping_redis_mid_run_fails_no_request(two_servers, redis_server):
    failures: list[str] = []
    done = 0
    stop = threading.Event()

    def traffic(url: str) -> None:
        nonlocal done
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                docs = [f"doc {uuid.uuid4().hex}", "a repeated document"]
                r = c.post("/rerank", json={"query": "q", "documents": docs})
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")
                done += 1

    threads = [threading.Thread(target=traffic, args=(s.url,)) for s in two_servers]
    for t in threads:
        t.start()
    time.sleep(1.5)
    served_before_outage = done
    redis_server.stop()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    assert served_before_outage > 0 and done > served_before_outage
    assert failures == []
    errors = sum(
        metric_samples(s.url).get(("reranker_redis_errors_total", ()), 0) for s in two_servers
    )
    assert errors >= 1  # the outage was noticed, counted, and survived
    for s in two_servers:
        assert httpx.get(f"{s.url}/health").status_code == 200


def test_unreachable_redis_from_the_start_degrades_to_local_cache(
    tmp_path, engine, cross_encoder_dir
):
    from server_process import free_port

    server = ServerProcess(
        "--model",
        str(cross_encoder_dir),
        "--engine-url",
        engine.url,
        "--redis-url",
        f"redis://127.0.0.1:{free_port()}/0",
        log_path=tmp_path / "s.log",
    )
    try:
        server.wait_ready()
        docs = [f"doc {uuid.uuid4().hex}"]
        assert rerank(server.url, docs)["usage"]["cache_hits"] == 0
        assert rerank(server.url, docs)["usage"]["cache_hits"] == 1  # the local LRU still works
        m = metric_samples(server.url)
        assert m[("reranker_redis_errors_total", ())] >= 1
    finally:
        server.stop()
