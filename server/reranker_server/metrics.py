"""Prometheus metrics.

Each app gets its own registry, so several apps in one process (tests) do not collide. With
several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` is set (the CLI does it) and every worker
writes its values there; /metrics then reports the whole server, whichever worker answers.

Each value is written where its event happens: the queue writes its own (``QueueMetrics``:
depth, dedup, waits and engine batches), the score cache its own (``CacheMetrics``, its size
whenever its local tier changes), the app the HTTP requests'. The gauges of state the backend
holds are read instead (``Metrics.read_state``): ``reranker_engine_up`` (an engine can die or
fail its health check at any time) and ``reranker_embedding_cache_bytes`` (the bi-encoder
family's cache). They are read when /metrics is collected and, with several workers, also every
``STATE_REFRESH_S`` in each worker: the worker answering /metrics reads the others' values from
the shared directory as they last wrote them, so a gauge read only at collect time would stay,
for every other worker, at what it was when that worker last answered /metrics (0 if it never
did). Every gauge keeps prometheus_client's multiprocess mode ``all``: one series per worker,
labelled ``pid``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# Queue waits run from a few ms (idle) to minutes (a low priority behind a training backlog).
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: With several workers, how often each worker writes its engine-state gauges (seconds).
STATE_REFRESH_S = 1.0


class QueueMetrics:
    """What the batching queue reports about itself; it writes these, nobody else does."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.queue_depth = Gauge(
            "reranker_queue_depth_pairs", "Pairs waiting for an engine batch.", registry=r
        )
        self.batches_in_flight = Gauge(
            "reranker_engine_batches_in_flight",
            "Engine batches being scored now (at most ENGINE_BATCHES_IN_FLIGHT).",
            registry=r,
        )
        self.requests_waiting = Gauge(
            "reranker_queue_requests_waiting",
            "Requests with pairs waiting for an engine batch.",
            registry=r,
        )
        self.queue_wait = Histogram(
            "reranker_queue_wait_seconds",
            "Per request: time from queueing until its last pair was handed to the engine, by "
            "the request's priority.",
            ["priority"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.pairs_deduplicated = Counter(
            "reranker_pairs_deduplicated",
            "Pairs that shared the score of an identical pair already queued or running.",
            registry=r,
        )
        self.batch_pairs = Histogram(
            "reranker_engine_batch_pairs",
            "Pairs per engine batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "reranker_engine_batch_duration_seconds",
            "Engine time per batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pairs_scored = Counter(
            "reranker_pairs_scored", "Pairs scored by the engine.", registry=r
        )

    def set_state(self, depth: int, in_flight: int, requests_waiting: int) -> None:
        """The queue's gauges, as they are now."""
        self.queue_depth.set(depth)
        self.batches_in_flight.set(in_flight)
        self.requests_waiting.set(requests_waiting)

    def observe_wait(self, priority: int, seconds: float) -> None:
        """One request's queue wait. Priorities beyond +-10 share the label of +-10, so a
        client cannot grow the series without bound."""
        self.queue_wait.labels(str(max(-10, min(10, priority)))).observe(seconds)

    def observe_batch(self, pairs: int, seconds: float) -> None:
        """One engine batch scored: its size and its time."""
        self.batch_pairs.observe(pairs)
        self.batch_duration.observe(seconds)
        self.pairs_scored.inc(pairs)


class CacheMetrics:
    """What the score cache (``score_cache.TieredScoreCache``) reports; it writes all of it: the
    counters on each lookup, its size whenever its local tier changes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.pairs_requested = Counter(
            "reranker_pairs_requested", "Pairs asked for by clients.", registry=r
        )
        self.hits = Counter(
            "reranker_cache_hits", "Pairs answered from the score cache.", registry=r
        )
        self.misses = Counter(
            "reranker_cache_misses", "Pairs not found in the score cache.", registry=r
        )
        self.redis_hits = Counter(
            "reranker_redis_hits",
            "Pairs answered by the shared (Redis) cache after a local miss.",
            registry=r,
        )
        self.redis_errors = Counter(
            "reranker_redis_errors",
            "Failed shared-cache operations (the local cache carried on alone).",
            registry=r,
        )
        self.entries = Gauge(
            "reranker_cache_entries", "Scores held in the score cache.", registry=r
        )
        self.bytes = Gauge(
            "reranker_cache_bytes",
            "Memory held by this worker's score cache (an estimate per entry).",
            registry=r,
        )

    def set_size(self, entries: int, nbytes: int) -> None:
        """The local tier's size, as it is now."""
        self.entries.set(entries)
        self.bytes.set(nbytes)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue = QueueMetrics(r)
        self.requests = Counter(
            "reranker_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "reranker_request_duration_seconds",
            "HTTP request duration by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_up = Gauge(
            "reranker_engine_up", "1 when the engine is ready and alive, else 0.", registry=r
        )
        self.embedding_cache_bytes = Gauge(
            "reranker_embedding_cache_bytes",
            "Memory held by the bi-encoder's text-embedding cache (vectors and texts).",
            registry=r,
        )
        self.cache = CacheMetrics(r)
        # Gauges of state that lives elsewhere and changes unseen (the module docstring).
        self._state: list[tuple[Gauge, Callable[[], float]]] = []

    def read_state(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Keep ``gauge`` at ``read()``: set when the metrics are collected and by
        ``refresh_state_every``."""
        self._state.append((gauge, read))

    def refresh_state(self) -> None:
        """Set the state gauges of this process from their ``read()``."""
        for gauge, read in self._state:
            gauge.set(read())

    async def refresh_state_every(self, seconds: float = STATE_REFRESH_S) -> None:
        """Refresh the state gauges every ``seconds``, until cancelled (each worker runs this in
        multiprocess mode, so that its series are current whichever worker answers /metrics)."""
        while True:
            self.refresh_state()
            await asyncio.sleep(seconds)

    @staticmethod
    def multiprocess() -> bool:
        return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

    def exposition(self) -> tuple[bytes, str]:
        """The text for /metrics: this registry, or every worker's values in multiprocess mode."""
        self.refresh_state()
        if self.multiprocess():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def worker_exited() -> None:
        """Drop this worker's live gauges from the shared directory."""
        if Metrics.multiprocess():
            multiprocess.mark_process_dead(os.getpid())
