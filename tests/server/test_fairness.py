"""Fair scheduling through the real server and engine: while training clients keep a stream of
``/rerank_batch_simple`` work queued, a small ``/rerank`` with another instruction is answered
within a few engine batches, not when the stream stops (the issue measured > 30 s on main)."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from server_process import ServerProcess, metric_samples

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def qwen3_inprocess(tmp_path_factory, qwen3_dir):
    server = ServerProcess(
        "--model",
        str(qwen3_dir),
        "--dtype",
        "float32",
        "--batch-max-pairs",
        "16",
        log_path=tmp_path_factory.mktemp("fair") / "server.log",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _mean_batch_seconds(url: str) -> float:
    m = metric_samples(url)
    total = m[("reranker_engine_batch_duration_seconds_sum", ())]
    count = m[("reranker_engine_batch_duration_seconds_count", ())]
    return total / count


def test_online_request_is_not_starved_by_a_training_stream(qwen3_inprocess):
    url = qwen3_inprocess.url
    stop = threading.Event()
    failures: list[str] = []

    def training_stream() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while not stop.is_set():
                tag = uuid.uuid4().hex  # fresh pairs: the engine, not the cache, answers
                body = {
                    "queries": [f"training query {tag}"],
                    "documents": [f"candidate {i} {tag}" for i in range(64)],
                    "pairs": [[0, i] for i in range(64)],
                }
                r = c.post("/rerank_batch_simple", json=body)
                if r.status_code != 200:
                    failures.append(r.text)

    streams = [threading.Thread(target=training_stream) for _ in range(4)]
    for t in streams:
        t.start()
    try:
        time.sleep(3)  # four clients x 64 pairs: about 16 batches of 16 always queued
        latencies = []
        in_flight: list[float] = []
        for i in range(3):
            started = time.monotonic()
            r = httpx.post(
                f"{url}/rerank",
                json={
                    "query": f"online query {i} {uuid.uuid4().hex}",
                    "documents": ["first document", "second document"],
                    "instruction": "Another job's instruction",
                },
                timeout=60,
            )
            latencies.append(time.monotonic() - started)
            assert r.status_code == 200, r.text
            samples = metric_samples(url)
            depth = samples[("reranker_queue_depth_pairs", ())]
            assert depth > 0, "the stream had drained, so this did not test sustained load"
            in_flight.append(samples[("reranker_engine_batches_in_flight", ())])
            time.sleep(0.5)
    finally:
        stop.set()
        for t in streams:
            t.join()
    assert failures == []
    # The default for one engine: two batches in flight, so the engine never waits for the next.
    assert max(in_flight) >= 1 and max(in_flight) <= 2, in_flight
    batch = _mean_batch_seconds(url)
    # Two batches may be in flight when it arrives, then its own: three batch times, with room
    # for HTTP and tokenisation on a loaded two-core machine.
    print(f"online latencies {latencies}, mean engine batch {batch:.3f} s")
    assert max(latencies) < 5 * batch + 1.0
