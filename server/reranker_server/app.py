"""The application factory: ``uvicorn --factory reranker_server.app:create_app``."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from . import __version__
from .auth import ApiKeyMiddleware, ApiKeys, configured_keys, document_auth, open_paths
from .backend import Backend, create_backend
from .batch_queue import BatchQueue
from .crash_only import CrashOnlyWatch
from .errors import install_error_handlers
from .metrics import Metrics
from .provider_shapes import router as provider_router
from .request_limits import BodySizeLimitMiddleware, state_max_length, state_text_limit
from .request_resolution import RequestResolver
from .routes import router
from .score_cache import TieredScoreCache
from .scoring import Score
from .service import RerankService
from .settings import Settings

logger = logging.getLogger("reranker_server")


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """Build the app. The engine starts loading when the app starts; until it is ready /health
    answers 503 and scoring requests get 503 with Retry-After."""
    settings = settings or Settings()
    # Read before the engine starts loading: a bad key file must stop the server at once.
    keys = ApiKeys(configured_keys(settings))
    backend = backend or create_backend(settings)
    metrics = Metrics()
    queue: BatchQueue[Score] = BatchQueue(
        backend.score_batch,
        max_batch_pairs=settings.batch_max_pairs,
        max_wait_ms=settings.batch_max_wait_ms,
        max_queued_pairs=settings.max_queued_pairs,
        max_in_flight=settings.batches_in_flight,
        batch_timeout_s=settings.engine_batch_timeout_s,
        priority_aging_s=settings.priority_aging_s,
        metrics=metrics.queue,
        on_failure=backend.mark_dead,  # /health then answers 503 with the reason
    )
    cache = TieredScoreCache.from_settings(settings, metrics.cache)
    metrics.read_state(metrics.engine_up, lambda: 1 if backend.alive else 0)
    metrics.read_state(metrics.embedding_cache_bytes, lambda: backend.embedding_cache_bytes)
    resolver = RequestResolver(settings, backend)
    service = RerankService(settings, backend, resolver, cache, queue, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue.start()
        await cache.start()
        loading = asyncio.create_task(backend.start(), name="engine-load")
        watch = None
        if not settings.stay_up_without_engine:
            crash_only = CrashOnlyWatch(backend, watch_after_start=backend.engine_in_process)
            watch = asyncio.create_task(crash_only.run(loading), name="crash-only")
        # With several workers, another worker may answer /metrics: keep this one's current.
        refresh = None
        if metrics.multiprocess():
            refresh = asyncio.create_task(metrics.refresh_state_every(), name="metrics-refresh")
        try:
            yield
        finally:
            for task in (watch, refresh):
                if task is not None:
                    task.cancel()
            await queue.close()
            loading.cancel()
            await backend.aclose()
            await cache.aclose()
            metrics.worker_exited()

    app = FastAPI(
        title="Reranker service",
        version=__version__,
        description="Rerank documents with a vLLM-served model: cross-encoders, Qwen3-style LLM "
        "rerankers and bi-encoders, with batching, a score cache and Prometheus metrics.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(provider_router)

    # Added innermost first: metrics see every answer, and a request without a key is refused
    # before its body is read.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    if keys.enabled:
        app.add_middleware(ApiKeyMiddleware, keys=keys, open_paths=open_paths(settings))
    openapi = app.openapi

    def openapi_with_limits() -> dict[str, Any]:
        schema = state_text_limit(openapi(), settings.max_text_chars)
        if backend.family is not None:  # the model's limits are known once it has loaded
            state_max_length(schema, backend.family.min_length, backend.max_length)
        if keys.enabled:
            document_auth(schema, open_paths(settings))
        return schema

    app.openapi = openapi_with_limits  # type: ignore[method-assign]

    worker_id = str(os.getpid())

    @app.middleware("http")
    async def record_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            # Which worker answered: for debugging load balancing across --workers.
            response.headers["x-reranker-worker"] = worker_id
            return response
        finally:
            route = request.scope.get("route")
            # The route template, never the raw path: unknown paths must not grow the label set.
            endpoint = getattr(route, "path", "unmatched")
            if endpoint != "/metrics":
                metrics.requests.labels(endpoint, str(status)).inc()
                metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)

    return app
