"""The bi-encoder's text-embedding cache.

A bi-encoder scores a pair from two independent embeddings, so a text met again (a training step's
64 candidates in each of 16 engine batches, or the next step's repeated anchors) need not be
embedded again. Keyed by (max_length, text), where the text already carries the instruction
prefix. An embedding does not depend on what else was in its engine batch (tested to 1e-5), so
a cached vector is the vector the engine would compute.

Bounded by bytes (vectors and texts), not only by entries: a vector's size is the model's
dimension, from 384 floats to several thousand, so an entry count alone says little about memory.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from cachetools import LRUCache

_Key = tuple[int, str]


def _entry_bytes(value: tuple[np.ndarray, int]) -> int:
    vector, text_bytes = value
    return vector.nbytes + text_bytes


class EmbeddingCache:
    """An LRU of text embeddings within ``max_bytes`` and ``max_entries``; either 0 = off."""

    def __init__(self, max_entries: int, max_bytes: int = 1 << 30) -> None:
        self.max_entries = max_entries
        self._lru: LRUCache[_Key, tuple[np.ndarray, int]] | None = (
            LRUCache(max_bytes, getsizeof=_entry_bytes)
            if max_entries > 0 and max_bytes > 0
            else None
        )

    @property
    def bytes(self) -> int:
        """The memory held, as counted against the bound."""
        return 0 if self._lru is None else int(self._lru.currsize)

    def lookup(
        self, max_length: int, texts: Sequence[str]
    ) -> tuple[list[np.ndarray | None], list[int]]:
        """The cached vector of each text (None if absent) and the positions still to embed."""
        if self._lru is None:
            return [None] * len(texts), list(range(len(texts)))
        vectors = []
        for t in texts:
            hit = self._lru.get((max_length, t))
            vectors.append(None if hit is None else hit[0])
        return vectors, [i for i, v in enumerate(vectors) if v is None]

    def fill(
        self,
        max_length: int,
        texts: Sequence[str],
        vectors: list[np.ndarray | None],
        missing: Sequence[int],
        fresh: Sequence[np.ndarray],
    ) -> list[np.ndarray]:
        """Put the freshly embedded ``missing`` texts into ``vectors`` and the cache."""
        for i, embedding in zip(missing, fresh, strict=True):
            vector = np.asarray(embedding, dtype=np.float32)  # the engine's own precision
            vectors[i] = vector
            if self._lru is not None:
                text = texts[i]
                try:
                    self._lru[(max_length, text)] = (vector, sys.getsizeof(text))
                except ValueError:  # one vector larger than the whole bound: not kept
                    pass
                while len(self._lru) > self.max_entries:
                    self._lru.popitem()
        return [v for v in vectors if v is not None]

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)
