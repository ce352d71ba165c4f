"""The bi-encoder's text-embedding cache.

A bi-encoder scores a pair from two independent embeddings, so a text met again (a training step's
64 candidates in each of 16 engine batches, or the next step's repeated anchors) need not be
embedded again. Keyed by (max_length, text), where the text already carries the instruction
prefix. An embedding does not depend on what else was in its engine batch (tested to 1e-5), so
a cached vector is the vector the engine would compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cachetools import LRUCache


class EmbeddingCache:
    def __init__(self, maxsize: int) -> None:
        self._lru: LRUCache[tuple[int, str], np.ndarray] | None = (
            LRUCache(maxsize) if maxsize > 0 else None
        )

    def lookup(
        self, max_length: int, texts: Sequence[str]
    ) -> tuple[list[np.ndarray | None], list[int]]:
        """The cached vector of each text (None if absent) and the positions still to embed."""
        if self._lru is None:
            return [None] * len(texts), list(range(len(texts)))
        vectors = [self._lru.get((max_length, t)) for t in texts]
        return vectors, [i for i, v in enumerate(vectors) if v is None]

    def fill(
        self,
        max_length: int,
        texts: Sequence[str],
        vectors: list[np.ndarray | None],
        missing: Sequence[int],
        fresh: Sequence[Sequence[float]],
    ) -> list[np.ndarray]:
        """Put the freshly embedded ``missing`` texts into ``vectors`` and the cache."""
        for i, embedding in zip(missing, fresh, strict=True):
            vector = np.asarray(embedding, dtype=np.float32)  # the engine's own precision
            vectors[i] = vector
            if self._lru is not None:
                self._lru[(max_length, texts[i])] = vector
        return [v for v in vectors if v is not None]

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)
