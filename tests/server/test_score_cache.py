"""Unit tests of the score cache and its keys."""

from __future__ import annotations

from reranker_server.score_cache import Score, ScoreCache, cache_key

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
    cache = ScoreCache(2)
    cache.put(b"a", Score(0.1))
    cache.put(b"b", Score(0.2))
    assert cache.get(b"a") == Score(0.1)  # a is now the most recent
    cache.put(b"c", Score(0.3))
    assert cache.get(b"b") is None
    assert cache.get(b"a") == Score(0.1) and cache.get(b"c") == Score(0.3)
    assert len(cache) == 2


def test_size_zero_turns_caching_off():
    cache = ScoreCache(0)
    cache.put(b"a", Score(0.1))
    assert cache.get(b"a") is None and len(cache) == 0
