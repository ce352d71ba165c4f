"""Unit tests of the bi-encoder's embedding cache (pure logic, no engine)."""

from __future__ import annotations

import numpy as np
from reranker_server.embedding_cache import EmbeddingCache


def test_only_missing_texts_are_embedded_and_then_found():
    cache = EmbeddingCache(10)
    vectors, missing = cache.lookup(128, ["a", "b"])
    assert missing == [0, 1] and vectors == [None, None]
    filled = cache.fill(128, ["a", "b"], vectors, missing, [[1.0, 0.0], [0.0, 1.0]])
    assert [v.tolist() for v in filled] == [[1.0, 0.0], [0.0, 1.0]]
    vectors, missing = cache.lookup(128, ["b", "c", "a"])
    assert missing == [1]
    filled = cache.fill(128, ["b", "c", "a"], vectors, missing, [[0.5, 0.5]])
    assert [v.tolist() for v in filled] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]


def test_max_length_is_part_of_the_key():
    cache = EmbeddingCache(10)
    v, m = cache.lookup(128, ["a"])
    cache.fill(128, ["a"], v, m, [[1.0]])
    assert cache.lookup(64, ["a"])[1] == [0]


def test_vectors_keep_the_engines_float32_values():
    cache = EmbeddingCache(10)
    value = float(np.float32(0.1234567))
    v, m = cache.lookup(8, ["t"])
    cache.fill(8, ["t"], v, m, [[value]])
    assert cache.lookup(8, ["t"])[0][0][0] == value


def test_size_zero_turns_it_off():
    cache = EmbeddingCache(0)
    v, m = cache.lookup(8, ["t"])
    cache.fill(8, ["t"], v, m, [[1.0]])
    assert cache.lookup(8, ["t"])[1] == [0] and len(cache) == 0


def test_bounded_by_bytes_the_least_recently_used_go_first():
    vector_bytes = 384 * 4
    cache = EmbeddingCache(1000, max_bytes=3 * vector_bytes + 300)  # room for three
    texts = ["one", "two", "three", "four"]
    for t in texts[:3]:
        v, m = cache.lookup(8, [t])
        cache.fill(8, [t], v, m, [np.ones(384, dtype=np.float32)])
    cache.lookup(8, ["one"])  # recently used: kept
    v, m = cache.lookup(8, ["four"])
    cache.fill(8, ["four"], v, m, [np.ones(384, dtype=np.float32)])
    assert len(cache) == 3 and cache.bytes <= 3 * vector_bytes + 300
    assert cache.lookup(8, texts)[1] == [1]  # "two" was evicted


def test_the_entry_bound_still_applies():
    cache = EmbeddingCache(2)
    for t in ["a", "b", "c"]:
        v, m = cache.lookup(8, [t])
        cache.fill(8, [t], v, m, [[1.0]])
    assert len(cache) == 2 and cache.lookup(8, ["a", "b", "c"])[1] == [0]
