"""The shared score cache: an optional Redis layer behind each worker's in-process LRU.

Same MD5 keys as the local cache, so a pair scored by any worker or replica is a hit for all.
Redis is an accelerator, never a dependency: any Redis failure is logged, counted in
``reranker_redis_errors_total`` and answered as a miss, and Redis is then left alone for
``retry_s`` seconds so that an outage does not add a timeout to every request.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Callable, Sequence

from .scoring import Score

logger = logging.getLogger("reranker_server")

_PREFIX = b"reranker:score:"
_VALUE = struct.Struct("<dd")  # relevance, raw (NaN when absent)


def _encode(score: Score) -> bytes:
    return _VALUE.pack(score.relevance, math.nan if score.raw is None else score.raw)


def _decode(data: bytes) -> Score | None:
    if len(data) != _VALUE.size:
        return None  # not ours; treat as a miss
    relevance, raw = _VALUE.unpack(data)
    return Score(relevance, None if math.isnan(raw) else raw)


class SharedScoreCache:
    def __init__(
        self,
        url: str,
        *,
        ttl_s: int,
        timeout_s: float,
        retry_s: float,
        max_memory: str | None = None,
        on_error: Callable[[], object] | None = None,
    ) -> None:
        import redis.asyncio as redis

        self.url = url
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.max_memory = max_memory
        self._on_error = on_error
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        if self.available:  # log once per outage, not once per request
            logger.warning(
                "shared cache %s failed (%s: %s); using the local cache alone for %.0f s",
                what,
                type(exc).__name__,
                exc,
                self.retry_s,
            )
        self._down_until = time.monotonic() + self.retry_s
        if self._on_error is not None:
            self._on_error()

    async def start(self) -> None:
        """Apply the memory bound if one is configured (best effort: managed Redis may refuse)."""
        if not self.max_memory:
            return
        try:
            await self._redis.config_set("maxmemory", self.max_memory)
            await self._redis.config_set("maxmemory-policy", "allkeys-lru")
        except Exception as exc:  # noqa: BLE001
            self._failed("configuration", exc)

    async def get_many(self, keys: Sequence[bytes]) -> list[Score | None]:
        if not keys or not self.available:
            return [None] * len(keys)
        try:
            values = await self._redis.mget([_PREFIX + k for k in keys])
        except Exception as exc:  # noqa: BLE001 - any failure is a miss
            self._failed("read", exc)
            return [None] * len(keys)
        return [_decode(v) if isinstance(v, bytes) else None for v in values]

    async def put_many(self, items: Sequence[tuple[bytes, Score]]) -> None:
        if not items or not self.available:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, score in items:
                    pipe.set(_PREFIX + key, _encode(score), ex=self.ttl_s)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed("write", exc)

    async def aclose(self) -> None:
        try:
            await self._redis.aclose()
        except Exception:  # noqa: BLE001 - at exit
            pass
