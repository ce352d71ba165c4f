"""The score cache: each worker's LRU of pair scores, then optionally Redis shared by all.

``TieredScoreCache`` is the one cache the service asks: a lookup tries the local LRU
(``LocalScoreCache``, cachetools), then the shared tier (``shared_cache.SharedScoreCache``,
Redis) for what the LRU lacks, copying shared hits into the LRU; a store writes both. It counts
its own hits, misses, shared-tier hits and errors, and sets its size gauges whenever the LRU
changes (``metrics.CacheMetrics``), so that each worker's series is current. Keys are MD5
digests of an unambiguous encoding of (model, prompt version, instruction, max_length, query,
document), the same in both tiers, so a pair scored by any worker or replica is a hit for all.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from cachetools import LRUCache

from .scoring import GroupKey, Pair, Score

if TYPE_CHECKING:
    from .metrics import CacheMetrics
    from .settings import Settings
    from .shared_cache import SharedScoreCache

# Hashing and looking up this many pairs takes ~7 ms here (100 000 take 0.7 s): above it, the
# work goes to a thread so that /health and small requests are not held up behind it.
_OFF_LOOP_PAIRS = 1000
# Memory per local entry: a 16-byte digest key (49 B), a Score (48 B) and its two floats (48 B),
# plus cachetools' table and LRU order. Measured with tracemalloc on this machine: 267 B per
# entry at 1000 entries, 303 B at 100 000.
_ENTRY_BYTES = 300
R = TypeVar("R")


async def _off_loop_if_large(n: int, fn: Callable[..., R], *args: Any) -> R:
    if n >= _OFF_LOOP_PAIRS:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _field(value: str | int | None) -> bytes:
    # Length-prefixed so that no two different field tuples share an encoding
    # ("ab"+"c" vs "a"+"bc"), and None distinct from "" (no length can start with "-").
    if value is None:
        return b"-;"
    data = str(value).encode("utf-8")
    return str(len(data)).encode() + b":" + data


def cache_key(
    model: str,
    prompt_version: str,
    instruction: str | None,
    max_length: int,
    query: str,
    document: str,
) -> bytes:
    """MD5 digest identifying one scored pair under one model and one input format."""
    payload = b"".join(
        _field(v) for v in (model, prompt_version, instruction, max_length, query, document)
    )
    return hashlib.md5(payload, usedforsecurity=False).digest()


class LocalScoreCache:
    """A bounded LRU of scores in this process. ``maxsize=0`` turns it off (every lookup misses)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lru: LRUCache[bytes, Score] | None = LRUCache(maxsize) if maxsize > 0 else None
        # Large lookups and stores run on a worker thread (``_OFF_LOOP_PAIRS``) while small
        # ones run on the event loop: the lock keeps the LRU's order links consistent.
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Score | None:
        if self._lru is None:
            return None
        with self._lock:
            return self._lru.get(key)

    def put(self, key: bytes, score: Score) -> None:
        if self._lru is None:
            return
        with self._lock:
            self._lru[key] = score

    @property
    def bytes(self) -> int:
        """An estimate of the memory the entries hold (``_ENTRY_BYTES`` each)."""
        return len(self) * _ENTRY_BYTES

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)


@dataclass
class CacheLookup:
    """What a lookup found: per pair its key and score (None = miss), and the misses' positions."""

    keys: list[bytes]
    scores: list[Score | None]
    misses: list[int]

    @property
    def hits(self) -> int:
        return len(self.scores) - len(self.misses)


class TieredScoreCache:
    """The local LRU in front of an optional shared (Redis) tier; see the module docstring."""

    def __init__(
        self,
        local: LocalScoreCache,
        metrics: CacheMetrics,
        shared: SharedScoreCache | None = None,
    ) -> None:
        self.local = local
        self.shared = shared
        self.metrics = metrics

    @classmethod
    def from_settings(cls, settings: Settings, metrics: CacheMetrics) -> TieredScoreCache:
        """``RERANKER_CACHE_SIZE`` entries locally; Redis too when ``RERANKER_REDIS_URL`` is set."""
        shared = None
        if settings.redis_url:
            from .shared_cache import SharedScoreCache

            shared = SharedScoreCache(
                settings.redis_url,
                ttl_s=settings.redis_ttl_s,
                timeout_s=settings.redis_timeout_s,
                retry_s=settings.redis_retry_s,
                max_memory=settings.redis_max_memory,
                on_error=metrics.redis_errors.inc,
            )
        return cls(LocalScoreCache(settings.cache_size), metrics, shared)

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

    async def lookup(
        self, model: str, prompt_version: str, key: GroupKey, pairs: Sequence[Pair]
    ) -> CacheLookup:
        """The cached score of each pair under this model, format and group; counted."""
        found = await _off_loop_if_large(
            len(pairs), self._local_lookup, model, prompt_version, key, pairs
        )
        if found.misses and self.shared is not None:
            shared = await self.shared.get_many([found.keys[i] for i in found.misses])
            still_missing = []
            for i, score in zip(found.misses, shared):
                if score is None:
                    still_missing.append(i)
                else:
                    found.scores[i] = score
                    self.local.put(found.keys[i], score)
            if len(still_missing) < len(found.misses):
                self._record_size()
            self.metrics.redis_hits.inc(len(found.misses) - len(still_missing))
            found.misses = still_missing
        self.metrics.pairs_requested.inc(len(pairs))
        self.metrics.hits.inc(found.hits)
        self.metrics.misses.inc(len(found.misses))
        return found

    async def store(self, found: CacheLookup, fresh: dict[int, Score]) -> None:
        """Keep the fresh scores of a lookup's misses (by position) in both tiers."""
        items = {found.keys[i]: score for i, score in fresh.items()}
        await _off_loop_if_large(len(items), self._local_store, items)
        self._record_size()
        if self.shared is not None:
            await self.shared.put_many(list(items.items()))

    def _local_lookup(
        self, model: str, prompt_version: str, key: GroupKey, pairs: Sequence[Pair]
    ) -> CacheLookup:
        keys = [
            cache_key(model, prompt_version, key.instruction, key.max_length, q, d)
            for q, d in pairs
        ]
        scores = [self.local.get(k) for k in keys]
        return CacheLookup(keys, scores, [i for i, s in enumerate(scores) if s is None])

    def _local_store(self, items: dict[bytes, Score]) -> None:
        for k, score in items.items():
            self.local.put(k, score)

    def _record_size(self) -> None:
        """The size gauges, after the LRU changed (stores, shared hits, their evictions)."""
        self.metrics.set_size(len(self.local), self.local.bytes)

    def __len__(self) -> int:
        return len(self.local)

    @property
    def bytes(self) -> int:
        """Memory held by this worker's tier (the shared tier's is Redis's own)."""
        return self.local.bytes
