"""A pool of remote engines: round-robin over the healthy ones, health checks, fail-over.

Each engine's ``/health`` is polled in the background. An engine that refuses the connection is
taken out at once (its process is gone). One that times out or answers 5xx is taken out only after
``failure_threshold`` such failures in a row: one slow or unlucky batch (which another engine may
fail just the same) must not empty the pool. Either way the batch fails over to the next engine,
and an engine taken out comes back when its health check passes again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

logger = logging.getLogger("reranker_server")
T = TypeVar("T")


class NoEngineError(Exception):
    """No engine in the pool could take the work."""


class EngineRequestError(Exception):
    """An engine refused a request as invalid (a bug on our side, not a reason to fail over)."""


@dataclass
class Engine:
    url: str
    healthy: bool = False
    failures: int = 0


class EnginePool:
    def __init__(
        self,
        urls: list[str],
        client: httpx.AsyncClient,
        health_interval_s: float,
        failure_threshold: int = 1,
    ):
        if not urls:
            raise ValueError("the engine pool needs at least one engine URL")
        self.engines = [Engine(u.rstrip("/")) for u in urls]
        self._client = client
        self._interval = health_interval_s
        self.failure_threshold = failure_threshold
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None

    @property
    def any_healthy(self) -> bool:
        return any(e.healthy for e in self.engines)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(e) for e in self.engines))

    async def _check(self, engine: Engine) -> None:
        try:
            r = await self._client.get(f"{engine.url}/health", timeout=min(5.0, self._interval * 2))
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok != engine.healthy:
            logger.warning("engine %s is %s", engine.url, "healthy" if ok else "unhealthy")
            if ok:
                engine.failures = 0  # back on probation from scratch
        engine.healthy = ok

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="engine-health")

    async def _watch(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _healthy_in_turn(self) -> list[Engine]:
        healthy = [e for e in self.engines if e.healthy]
        if not healthy:
            return []
        start = next(self._turn) % len(healthy)
        return healthy[start:] + healthy[:start]

    def _failed(self, engine: Engine, exc: Exception) -> None:
        engine.failures += 1
        gone = isinstance(exc, httpx.ConnectError) or engine.failures >= self.failure_threshold
        if gone:
            engine.healthy = False
        logger.warning(
            "engine %s failed (%s, %d in a row)%s; failing over",
            engine.url,
            type(exc).__name__,
            engine.failures,
            ", taken out until its health check passes" if gone else "",
        )

    async def call(self, fn: Callable[[httpx.AsyncClient, str], Awaitable[T]]) -> T:
        """Run ``fn(client, engine_url)`` on a healthy engine, failing over to the others."""
        errors = []
        for engine in self._healthy_in_turn():
            try:
                result = await fn(self._client, engine.url)
            except EngineRequestError:
                raise
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                self._failed(engine, exc)
                errors.append(f"{engine.url}: {type(exc).__name__}")
                continue
            engine.failures = 0
            return result
        raise NoEngineError(
            "no healthy engine could score the batch"
            + (f" ({'; '.join(errors)})" if errors else "")
        )
