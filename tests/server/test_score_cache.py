"""Unit tests of the score cache, its keys and its counters (no engine; a fake shared tier)."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc

from cachetools import LRUCache
from prometheus_client import CollectorRegistry
from reranker_server.metrics import CacheMetrics
from reranker_server.score_cache import (
    _ENTRY_BYTES,
    LocalScoreCache,
    Score,
    TieredScoreCache,
    cache_key,
)
from reranker_server.scoring import GroupKey

BASE = ("model", "bi-1", "instr", 256, "query", "doc")


def test_key_depends_on_every_field():
    base = cache_key(*BASE)
    for i, other in enumerate(["model2", "bi-2", "instr2", 128, "query2", "doc2"]):
        fields = list(BASE)
        fields[i] = other
        assert cache_key(*fields) != base, f"field {i} ignored"


def test_key_is_unambiguous_across_field_boundaries():
    # Plain concatenation would give the same bytes for these.
    assert cache_key("m", "v", None, 1, "ab", "c") != cache_key("m", "v", None, 1, "a", "bc")
    assert cache_key("m", "v", "x", 1, "q", "d") != cache_key("m", "v", None, 1, "xq", "d")
    assert cache_key("m", "v", "", 1, "q", "d") != cache_key("m", "v", None, 1, "q", "d")
    assert cache_key("m", "v", None, 12, "3q", "d") != cache_key("m", "v", None, 123, "q", "d")


def test_key_is_a_16_byte_md5_digest():
    import hashlib

    key = cache_key(*BASE)
    assert len(key) == 16
    assert key == cache_key(*BASE)
    assert hashlib.md5(b"").digest_size == 16


def test_lru_evicts_least_recently_used():
    cache = LocalScoreCache(2)
    cache.put(b"a", Score(0.1))
    cache.put(b"b", Score(0.2))
    assert cache.get(b"a") == Score(0.1)  # a is now the most recent
    cache.put(b"c", Score(0.3))
    assert cache.get(b"b") is None
    assert cache.get(b"a") == Score(0.1) and cache.get(b"c") == Score(0.3)
    assert len(cache) == 2


def test_size_zero_turns_caching_off():
    cache = LocalScoreCache(0)
    cache.put(b"a", Score(0.1))
    assert cache.get(b"a") is None and len(cache) == 0


class FakeSharedTier:
    """A fake of ``SharedScoreCache`` (the Redis tier): a dict, optionally failing like an outage
    does (the real one answers a miss and counts an error)."""

    def __init__(self, metrics: CacheMetrics) -> None:
        self.data: dict[bytes, Score] = {}
        self.down = False
        self.metrics = metrics

    async def get_many(self, keys):
        if self.down:
            self.metrics.redis_errors.inc()
            return [None] * len(keys)
        return [self.data.get(k) for k in keys]

    async def put_many(self, items):
        if self.down:
            self.metrics.redis_errors.inc()
            return
        self.data.update(items)


def _counts(m: CacheMetrics) -> dict[str, float]:
    return {
        name: getattr(m, name)._value.get()
        for name in ("pairs_requested", "hits", "misses", "redis_hits", "redis_errors")
    }


KEY = GroupKey(None, 128)
PAIRS = [("q", "a"), ("q", "b"), ("q", "c")]


def _tiered(local_size: int = 10):
    metrics = CacheMetrics(CollectorRegistry())
    shared = FakeSharedTier(metrics)
    return TieredScoreCache(LocalScoreCache(local_size), metrics, shared), shared, metrics  # type: ignore[arg-type]


def test_tiered_cache_counts_local_and_shared_hits_and_misses():
    async def run():
        cache, shared, metrics = _tiered()
        found = await cache.lookup("m", "v", KEY, PAIRS)
        assert found.misses == [0, 1, 2] and found.hits == 0
        await cache.store(found, {0: Score(0.1), 1: Score(0.2), 2: Score(0.3)})
        assert len(shared.data) == 3 and len(cache) == 3
        again = await cache.lookup("m", "v", KEY, PAIRS[:2])
        assert again.scores == [Score(0.1), Score(0.2)] and again.misses == []
        return metrics

    assert _counts(asyncio.run(run())) == {
        "pairs_requested": 5,
        "hits": 2,
        "misses": 3,
        "redis_hits": 0,
        "redis_errors": 0,
    }


def test_a_shared_hit_is_a_hit_and_fills_the_local_tier():
    async def run():
        cache, shared, metrics = _tiered()
        other, _, _ = _tiered()
        other.shared = shared  # another worker, same Redis
        await other.store(await other.lookup("m", "v", KEY, PAIRS), {1: Score(0.5)})
        found = await cache.lookup("m", "v", KEY, PAIRS)
        assert found.misses == [0, 2] and found.scores[1] == Score(0.5)
        assert cache.local.get(found.keys[1]) == Score(0.5)  # later lookups stay local
        return metrics

    counts = _counts(asyncio.run(run()))
    assert (counts["hits"], counts["redis_hits"], counts["misses"]) == (1, 1, 2)


def test_a_shared_tier_outage_is_a_miss_and_an_error_and_the_local_tier_carries_on():
    async def run():
        cache, shared, metrics = _tiered()
        shared.down = True
        found = await cache.lookup("m", "v", KEY, PAIRS[:1])
        await cache.store(found, {0: Score(0.9)})
        assert (await cache.lookup("m", "v", KEY, PAIRS[:1])).scores == [Score(0.9)]
        return metrics

    counts = _counts(asyncio.run(run()))
    assert (counts["redis_errors"], counts["hits"], counts["misses"]) == (2, 1, 1)


def test_the_cache_sets_its_size_gauges_whenever_its_local_tier_changes():
    # Set where the LRU changes, not read when /metrics is collected: with several workers,
    # another worker answers /metrics and reads this one's gauges as it last set them.
    async def run():
        cache, shared, metrics = _tiered(local_size=2)
        size = [(metrics.entries._value.get(), metrics.bytes._value.get())]
        await cache.store(await cache.lookup("m", "v", KEY, PAIRS[:1]), {0: Score(0.1)})
        size.append((metrics.entries._value.get(), metrics.bytes._value.get()))
        found = await cache.lookup("m", "v", KEY, PAIRS)  # 2 misses: one evicts the other
        await cache.store(found, {1: Score(0.2), 2: Score(0.3)})
        size.append((metrics.entries._value.get(), metrics.bytes._value.get()))
        fresh, _, fresh_metrics = _tiered()
        fresh.shared = shared  # another worker, same Redis: its shared hits fill its LRU
        await fresh.lookup("m", "v", KEY, PAIRS)
        size.append((fresh_metrics.entries._value.get(), fresh_metrics.bytes._value.get()))
        return size

    e = _ENTRY_BYTES
    assert asyncio.run(run()) == [(0, 0), (1, e), (2, 2 * e), (3, 3 * e)]


def test_keys_separate_models_formats_and_groups():
    async def run():
        cache, _, _ = _tiered()
        await cache.store(await cache.lookup("m", "v", KEY, PAIRS[:1]), {0: Score(0.4)})
        for model, version, key in [
            ("m2", "v", KEY),
            ("m", "v2", KEY),
            ("m", "v", GroupKey("i", 128)),
            ("m", "v", GroupKey(None, 64)),
        ]:
            assert (await cache.lookup(model, version, key, PAIRS[:1])).misses == [0]

    asyncio.run(run())


def test_large_lookups_give_the_same_answer_off_the_event_loop():
    pairs = [("q", f"d{i}") for i in range(1500)]  # above the off-loop threshold

    async def run():
        cache, _, _ = _tiered(local_size=5000)
        found = await cache.lookup("m", "v", KEY, pairs)
        await cache.store(found, {i: Score(i / 1500) for i in found.misses})
        return await cache.lookup("m", "v", KEY, pairs)

    again = asyncio.run(run())
    assert again.misses == [] and again.scores[1499] == Score(1499 / 1500)


def test_cache_bytes_estimate_is_near_the_measured_memory():
    n = 20_000
    tracemalloc.start()
    try:
        lru: LRUCache[bytes, Score] = LRUCache(n)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            lru[hashlib.md5(str(i).encode()).digest()] = Score(i / 7, i / 3)
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    local = LocalScoreCache(n)
    for i in range(n):
        local.put(hashlib.md5(str(i).encode()).digest(), Score(i / 7, i / 3))
    assert 0.7 * measured <= local.bytes <= 1.4 * measured
