"""The Ray Serve app on a two-node loopback cluster: scores, faults, autoscaling.

The tests run in file order on one cluster: a cross-encoder app first (deployed, compared,
deleted), then the bi-encoder app, whose engine deployment autoscales between one and two
replicas and is the one killed in the fault tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray_cluster import (
    APP,
    LoopbackRayCluster,
    kill_replica,
    replica_actors,
    replica_states,
    wait_until,
)
from server_process import ServerProcess

pytestmark = [pytest.mark.ray, pytest.mark.engine]

QUERIES = [
    "What is the capital of France?",
    "How do plants make food?",
    "Who wrote Hamlet?",
]
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Hamlet is a tragedy written by William Shakespeare.",
    "Berlin is the capital of Germany.",
    "Bananas are rich in potassium.",
]
ENGINE_OPTIONS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 1, "resources": {"engine_slot": 1}},
}
# Small batches and four in flight, so that a stream keeps both replicas busy; no caches, so that
# the stream's few distinct requests reach an engine every time.
SETTINGS = {
    "dtype": "float32",
    "batch_max_pairs": 32,
    "engine_batches_in_flight": 4,
    "cache_size": 0,
    "embedding_cache_size": 0,
}


def _stream_body(n: int) -> dict[str, Any]:
    # 12 x 20 = 240 pairs: batches of 32 long enough that the engine, not the ingress, is busy.
    queries = [f"request {n}.{k}: {q}" for q in QUERIES for k in range(4)]
    docs = [f"{d} (variant {n}.{k})" for d in DOCUMENTS for k in range(4)]
    pairs = [[qi, di] for qi in range(len(queries)) for di in range(len(docs))]
    return {"queries": queries, "documents": docs, "pairs": pairs}


STREAM = [_stream_body(n) for n in range(6)]


def _answers(url: str) -> dict[str, Any]:
    """The same requests on the three routes, as {route: scores}."""
    with httpx.Client(base_url=url, timeout=120) as c:
        out: dict[str, Any] = {}
        for q in QUERIES:
            for route in ("/rerank", "/v2/rerank"):
                body: dict[str, Any] = {"query": q, "documents": DOCUMENTS}
                if route == "/v2/rerank":
                    body["model"] = c.get("/info").json()["model"]
                r = c.post(route, json=body)
                assert r.status_code == 200, r.text
                by_index = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
                out[f"{route} {q}"] = [by_index[i] for i in range(len(DOCUMENTS))]
        pairs = [[qi, di] for qi in range(len(QUERIES)) for di in range(len(DOCUMENTS))]
        body = {"queries": QUERIES, "documents": DOCUMENTS, "pairs": pairs}
        r = c.post("/rerank_batch_simple", json=body)
        assert r.status_code == 200, r.text
        out["/rerank_batch_simple"] = r.json()["scores"]
        return out


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-5), k


def _deploy(cluster: LoopbackRayCluster, settings: dict[str, Any], **engine: Any) -> str:
    from ray import serve
    from reranker_server.ray_serve import EngineDeployment, RerankerIngress

    eng = EngineDeployment.options(**{**ENGINE_OPTIONS, **engine}).bind(settings)
    app = RerankerIngress.options(num_replicas=2).bind(eng, settings)
    serve.run(app, name=APP, route_prefix="/")
    url = f"http://127.0.0.1:{cluster.http_port}"
    wait_until(lambda: _health(url).status_code == 200, 300, "the ingress to report healthy")
    return url


def _health(url: str) -> httpx.Response:
    try:
        return httpx.get(f"{url}/health", timeout=10)
    except httpx.TransportError:
        return httpx.Response(599)


@pytest.fixture(scope="module")
def minilm_reference(minilm_server: ServerProcess) -> dict[str, Any]:
    answers = _answers(minilm_server.url)
    with httpx.Client(base_url=minilm_server.url, timeout=120) as c:
        answers["stream"] = [
            c.post("/rerank_batch_simple", json=body).json()["scores"] for body in STREAM
        ]
    return answers


@pytest.fixture(scope="module")
def cross_encoder_reference(
    request: pytest.FixtureRequest, cross_encoder_dir: Path, tmp_path: Path
) -> dict[str, Any]:
    server = ServerProcess(
        "--model", str(cross_encoder_dir), "--dtype", "float32", log_path=tmp_path / "ce.log"
    )
    try:
        request.getfixturevalue("ray_cluster")  # started while the server loads its engine
        server.wait_ready()
        return _answers(server.url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-tests")


def test_cross_encoder_scores_match_single_process_server(
    ray_cluster: LoopbackRayCluster, cross_encoder_dir: Path, cross_encoder_reference: dict
) -> None:
    from ray import serve

    url = _deploy(ray_cluster, {"model": str(cross_encoder_dir), "dtype": "float32"})
    try:
        _assert_same(_answers(url), cross_encoder_reference)
    finally:
        serve.delete(APP)


@pytest.fixture(scope="module")
def minilm_app(ray_cluster: LoopbackRayCluster) -> Iterator[str]:
    from ray import serve

    autoscaling = {
        "min_replicas": 1,
        "max_replicas": 2,
        "initial_replicas": 1,
        # Low, so that any sustained stream asks for the second replica.
        "target_ongoing_requests": 0.25,
        "upscale_delay_s": 1,
        "downscale_delay_s": 4,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
    }
    yield _deploy(ray_cluster, SETTINGS, autoscaling_config=autoscaling)
    serve.delete(APP)


def test_bi_encoder_scores_match_single_process_server(
    minilm_app: str, minilm_reference: dict
) -> None:
    want = {k: v for k, v in minilm_reference.items() if k != "stream"}
    _assert_same(_answers(minilm_app), want)


class _Stream:
    """Training-style requests (/rerank_batch_simple, the ``STREAM`` bodies in turn) from a few
    threads until stopped; every answer is kept with the index of its request."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.done: list[tuple[int, int, Any]] = []
        self._stop = threading.Event()
        self._next = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _body(self) -> int:
        with self._lock:
            n, self._next = self._next, self._next + 1
        return n % len(STREAM)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as c:
            while not self._stop.is_set():
                n = self._body()
                r = c.post("/rerank_batch_simple", json=STREAM[n])
                self.done.append((n, r.status_code, r.json()))

    def __enter__(self) -> _Stream:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def test_sustained_load_scales_engines_up_then_a_killed_replica_loses_nothing(
    minilm_app: str, minilm_reference: dict[str, Any]
) -> None:
    with _Stream(minilm_app) as stream:
        wait_until(
            lambda: replica_states("RerankerEngine").get("RUNNING") == 2,
            420,  # the second engine loads while the stream keeps both cores busy
            "load to scale the engine deployment to 2 running replicas",
        )
        engines = replica_actors("RerankerEngine")
        assert len(engines) == 2
        answered_before_kill = len(stream.done)
        kill_replica(engines[0])
        # Keep the stream going until well after the kill has been seen and retried.
        wait_until(lambda: len(stream.done) > answered_before_kill + 8, 120, "more answers")
    statuses = [s for _, s, _ in stream.done]
    assert statuses.count(200) == len(statuses), sorted(set(statuses))
    # Every answer complete and right: as the single-process server answered the same request.
    for n, _, answer in stream.done:
        want = minilm_reference["stream"][n]
        assert len(answer["scores"]) == len(want)
        assert answer["scores"] == pytest.approx(want, abs=1e-5)


def test_idle_scales_engines_back_down(minilm_app: str) -> None:
    wait_until(
        lambda: replica_states("RerankerEngine") == {"RUNNING": 1},
        180,
        "idle to scale the engine deployment back to 1 replica",
    )
    assert _health(minilm_app).status_code == 200


def test_killed_ingress_replica_is_replaced(minilm_app: str) -> None:
    before = replica_actors("RerankerIngress")
    assert len(before) == 2
    kill_replica(before[0])
    wait_until(
        lambda: (
            len(replica_actors("RerankerIngress")) == 2
            and before[0] not in replica_actors("RerankerIngress")
            and replica_states("RerankerIngress") == {"RUNNING": 2}
        ),
        120,
        "a replacement ingress replica",
    )
    r = httpx.post(
        f"{minilm_app}/rerank", json={"query": QUERIES[0], "documents": DOCUMENTS}, timeout=60
    )
    assert r.status_code == 200, r.text


def test_no_engine_replica_gives_503_with_retry_after(minilm_app: str) -> None:
    # A replica scaled down a moment ago can still be listed while Serve stops it.
    wait_until(lambda: len(replica_actors("RerankerEngine")) == 1, 180, "one engine replica")
    (engine,) = replica_actors("RerankerEngine")
    kill_replica(engine)
    wait_until(lambda: _health(minilm_app).status_code == 503, 60, "/health to turn 503")
    health = _health(minilm_app).json()
    assert "no engine replica is running" in str(health), health
    body = {"query": "a query never asked before", "documents": ["a document never seen"]}
    r = httpx.post(f"{minilm_app}/rerank", json=body, timeout=60)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    assert "no engine replica is running" in r.text
