"""With several workers, each worker's gauges are current whichever worker answers /metrics.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, as ``--workers N`` runs) every worker writes
its series to a shared directory, and the worker answering /metrics reads them all from there:
a gauge that a worker sets only while it answers /metrics stays, for every other worker, at what
that worker last wrote (0 if it never answered). Two workers are simulated in this process: each
app's metrics get prometheus_client's multiprocess values under a pid of its own, as a worker
process's would (``tests/scale`` runs real ``--workers 2``).
"""

from __future__ import annotations

import time

import prometheus_client.values
from prometheus_client.parser import text_string_to_metric_families
from reranker_server.score_cache import _ENTRY_BYTES

DOCUMENTS = ["a cat", "a dog", "a bird"]


def _series(text: str, pid: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("pid") == pid
    }


def test_a_worker_that_never_answers_metrics_still_reports_its_cache_and_engine(
    serve, monkeypatch, tmp_path
):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def worker(pid: int):  # noqa: ANN202 - a FakeApp
        # Values made from here on are this "worker's", in the shared directory.
        value_class = prometheus_client.values.MultiProcessValue(lambda: pid)
        monkeypatch.setattr(prometheus_client.values, "ValueClass", value_class)
        return serve()

    scorer, answerer = worker(101), worker(202)
    r = scorer.client.post("/rerank", json={"query": "a pet", "documents": DOCUMENTS})
    assert r.status_code == 200, r.text

    expected = {
        "reranker_cache_entries": len(DOCUMENTS),
        "reranker_cache_bytes": len(DOCUMENTS) * _ENTRY_BYTES,
        "reranker_engine_up": 1.0,
    }
    # The cache sets its size as it stores; the engine's gauges are refreshed every second.
    deadline = time.monotonic() + 10
    while True:
        series = _series(answerer.client.get("/metrics").text, "101")
        if {name: series.get(name) for name in expected} == expected and series.get(
            "reranker_embedding_cache_bytes", 0
        ) > 0:
            break
        assert time.monotonic() < deadline, f"the scoring worker's series are stale: {series}"
        time.sleep(0.05)
    # The answering worker's own series, too, as the worker that scored nothing.
    own = _series(answerer.client.get("/metrics").text, "202")
    assert own["reranker_cache_entries"] == 0 and own["reranker_engine_up"] == 1
