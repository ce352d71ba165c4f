"""The score cache: a cachetools LRU of pair scores, keyed by MD5 of an unambiguous encoding."""

from __future__ import annotations

import hashlib
import threading

from cachetools import LRUCache

from .scoring import Score


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


class ScoreCache:
    """A bounded LRU of scores. ``maxsize=0`` turns caching off (every lookup misses)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lru: LRUCache[bytes, Score] | None = LRUCache(maxsize) if maxsize > 0 else None
        # uvicorn serves from one event loop, but the lock keeps the LRU's linked list safe if
        # the cache is ever touched from an executor thread.
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

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)
