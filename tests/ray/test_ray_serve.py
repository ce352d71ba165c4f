"""The Ray Serve app on a two-node loopback cluster: scores, faults, autoscaling, Redis.

The tests run in file order on one cluster: a cross-encoder app first (deployed, compared, its
two ingress replicas shown to share scores through a real Redis, deleted), then the bi-encoder
app, whose engine deployment autoscales between one and two replicas and is the one killed in
the fault tests.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from reranker_server.testing.ray_cluster import (
    APP,
    LoopbackRayCluster,
    kill_replica,
    replica_actors,
    replica_pids,
    replica_placement,
    replica_states,
    wait_until,
)
from server_process import ServerProcess, metric_samples

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
# What the stream's threads send, in turn: the training bodies, and /rerank (whose answer names
# each document's index, so that a lost or doubled document shows).
STREAM_REQUESTS: list[tuple[str, Any]] = [
    *(("/rerank_batch_simple", n) for n in range(len(STREAM))),
    *(("/rerank", q) for q in QUERIES),
]


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


def _engine_replicas_metric(url: str) -> float | None:
    """``reranker_engine_replicas{state="RUNNING"}`` from /metrics through Ray's proxy (any
    ingress replica answers)."""
    try:
        samples = metric_samples(url)
    except httpx.TransportError:
        return None
    return samples.get(("reranker_engine_replicas", (("state", "RUNNING"),)))


def _wait_for_running_metric(url: str, n: int) -> None:
    """Until four scrapes in a row report n RUNNING. Ray's proxy may send them all to one
    ingress replica; each replica reads the count from Ray's controller itself."""
    wait_until(
        lambda: all(_engine_replicas_metric(url) == n for _ in range(4)),
        30,
        f"/metrics to report {n} running engine replicas",
    )
    assert replica_states("RerankerEngine").get("RUNNING", 0) == n


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


def test_cross_encoder_scores_match_single_process_server_and_ingress_replicas_share_redis(
    ray_cluster: LoopbackRayCluster,
    cross_encoder_dir: Path,
    cross_encoder_reference: dict,
    redis_url: str,
) -> None:
    from ray import serve

    settings = {"model": str(cross_encoder_dir), "dtype": "float32", "redis_url": redis_url}
    url = _deploy(ray_cluster, settings)
    try:
        _assert_same(_answers(url), cross_encoder_reference)
        _assert_replicas_share_scores_through_redis(url)
    finally:
        serve.delete(APP)


def _assert_replicas_share_scores_through_redis(url: str) -> None:
    """A new request, then the ingress replica that answered it killed, then the same request
    again: whichever replica answers now (the other one, or the replacement) is another process
    that never scored these pairs, so its cache hits can only be Redis's.

    Killing is the way to reach a second replica: Ray's proxy sent 60 requests in a row to the
    same one."""
    docs = [f"shared document {i} {uuid.uuid4().hex}" for i in range(5)]
    body = {"query": "a query for the shared cache", "documents": docs}
    first = httpx.post(f"{url}/rerank", json=body, timeout=60)
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["cache_hits"] == 0
    scorer = int(first.headers["x-reranker-worker"])
    pids = replica_pids("RerankerIngress")
    assert scorer in pids.values(), (scorer, pids)
    kill_replica(next(name for name, pid in pids.items() if pid == scorer))

    answers: list[httpx.Response] = []

    def answered() -> bool:
        try:
            r = httpx.post(f"{url}/rerank", json=body, timeout=60)
        except httpx.TransportError:
            return False
        answers.append(r)
        # The proxy can still pick the dead replica for a moment: Ray answers that with a 5xx.
        return r.status_code == 200

    wait_until(answered, 120, "another ingress replica to answer")
    second = answers[-1]
    assert int(second.headers["x-reranker-worker"]) != scorer
    assert second.json()["usage"]["cache_hits"] == len(docs), second.json()
    assert second.json()["results"] == first.json()["results"]


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
    """Training-style requests (``STREAM_REQUESTS`` in turn) from a few threads until stopped.

    Every request sent is counted, and ends as one answer (kept with what was asked) or one
    failure (an exception inside the thread, kept as text): none can vanish."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.sent = 0
        self.answers: list[tuple[str, Any, int, Any]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _next(self) -> tuple[str, Any]:
        with self._lock:
            n, self.sent = self.sent, self.sent + 1
        return STREAM_REQUESTS[n % len(STREAM_REQUESTS)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as c:
            while not self._stop.is_set():
                route, what = self._next()
                try:
                    if route == "/rerank":
                        r = c.post(route, json={"query": what, "documents": DOCUMENTS})
                    else:
                        r = c.post(route, json=STREAM[what])
                    is_json = r.headers.get("content-type", "").startswith("application/json")
                    body = r.json() if is_json else r.text
                    with self._lock:
                        self.answers.append((route, what, r.status_code, body))
                except Exception as exc:  # noqa: BLE001 - recorded, asserted on below
                    with self._lock:
                        self.failures.append(f"{route}: {type(exc).__name__}: {exc}")

    def __enter__(self) -> _Stream:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def assert_all_answered_completely_and_correctly(self, reference: dict[str, Any]) -> None:
        assert self.failures == []
        assert self.sent == len(self.answers)
        bad = [(route, status, body) for route, _, status, body in self.answers if status != 200]
        assert bad == []
        for route, what, _, body in self.answers:
            if route == "/rerank":
                # Each document exactly once, with the single-process server's score.
                indices = sorted(x["index"] for x in body["results"])
                assert indices == list(range(len(DOCUMENTS))), body
                by_index = {x["index"]: x["relevance_score"] for x in body["results"]}
                got = [by_index[i] for i in range(len(DOCUMENTS))]
                assert got == pytest.approx(reference[f"/rerank {what}"], abs=1e-5)
            else:
                want = reference["stream"][what]
                assert len(body["scores"]) == len(STREAM[what]["pairs"]) == len(want)
                assert body["scores"] == pytest.approx(want, abs=1e-5)


def _engines_on_different_nodes() -> dict[str, tuple[str, str]]:
    placement = replica_placement("RerankerEngine")
    assert len(placement) == 2, placement
    nodes = {node for _, node in placement.values()}
    assert len(nodes) == 2, f"both engine replicas on one node: {placement}"
    return placement


def test_sustained_load_scales_engines_up_then_a_killed_replica_loses_nothing(
    minilm_app: str, minilm_reference: dict[str, Any]
) -> None:
    with _Stream(minilm_app) as stream:
        wait_until(
            lambda: replica_states("RerankerEngine").get("RUNNING") == 2,
            420,  # the second engine loads while the stream keeps both cores busy
            "load to scale the engine deployment to 2 running replicas",
        )
        before = _engines_on_different_nodes()
        _wait_for_running_metric(minilm_app, 2)
        killed = sorted(before)[0]
        killed_id = before[killed][0]
        answered_before_kill = len(stream.answers)
        kill_replica(killed)

        def replaced() -> bool:
            now = replica_placement("RerankerEngine")
            return (
                replica_states("RerankerEngine") == {"RUNNING": 2}
                and len(now) == 2
                and killed not in now
                and killed_id not in {actor for actor, _ in now.values()}
            )

        # The stream keeps the autoscaler asking for 2 while Ray loads the replacement.
        wait_until(replaced, 300, "Ray to replace the killed engine replica")
        after = _engines_on_different_nodes()
        assert killed_id not in {actor for actor, _ in after.values()}
        # And answers keep coming after the kill, through the retries and the replacement.
        wait_until(lambda: len(stream.answers) > answered_before_kill + 8, 120, "more answers")
    assert len(stream.answers) > answered_before_kill
    stream.assert_all_answered_completely_and_correctly(minilm_reference)


def test_idle_scales_engines_back_down(minilm_app: str) -> None:
    wait_until(
        lambda: replica_states("RerankerEngine") == {"RUNNING": 1},
        180,
        "idle to scale the engine deployment back to 1 replica",
    )
    assert _health(minilm_app).status_code == 200
    _wait_for_running_metric(minilm_app, 1)


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
    _wait_for_running_metric(minilm_app, 0)
    body = {"query": "a query never asked before", "documents": ["a document never seen"]}
    r = httpx.post(f"{minilm_app}/rerank", json=body, timeout=60)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    assert "no engine replica is running" in r.text
