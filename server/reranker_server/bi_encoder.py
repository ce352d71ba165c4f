"""The bi-encoder family: an embedding model; score = cosine(query vector, document vector).

B queries x B documents cost 2B embeddings, not B^2: each distinct text of a batch is embedded
once, and a text embedded before comes from the embedding cache (``embedding_cache``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .embedding_cache import EmbeddingCache
from .model_family import EngineCalls, Family, ModelFamily
from .scoring import GroupKey, Pair, Score
from .settings import Settings


def bi_encoder_query(instruction: str | None, query: str) -> str:
    """The text embedded for a query: the instruction, if any, prefixed as it is."""
    return f"{instruction}{query}" if instruction else query


@dataclass
class TextRows:
    """A batch as texts: each distinct text once (``texts``), and per pair the index of its
    query (``query_rows``) and of its document (``document_rows``)."""

    texts: list[str] = field(default_factory=list)
    query_rows: list[int] = field(default_factory=list)
    document_rows: list[int] = field(default_factory=list)


class BiEncoder(Family[TextRows, list[np.ndarray]]):
    """Cosine similarity of two embeddings; the instruction (none by default) prefixes the query."""

    kind = ModelFamily.BI_ENCODER
    prompt_version = "bi-1"
    score_range = "cosine similarity in [-1, 1]"

    def __init__(self, settings: Settings, tokenizer: Any) -> None:
        super().__init__(settings, tokenizer)
        self.embeddings = EmbeddingCache(
            settings.embedding_cache_size, int(settings.embedding_cache_mb * 2**20)
        )

    def embedding_cache_bytes(self) -> int:
        return self.embeddings.bytes

    def _encode(self, key: GroupKey, pairs: Sequence[Pair]) -> TextRows:
        rows: dict[str, int] = {}
        out = TextRows()
        for q, d in pairs:
            out.query_rows.append(rows.setdefault(bi_encoder_query(key.instruction, q), len(rows)))
            out.document_rows.append(rows.setdefault(d, len(rows)))
        out.texts = list(rows)
        return out

    async def call_engine(
        self, key: GroupKey, encoded: TextRows, engine: EngineCalls
    ) -> list[np.ndarray]:
        """Embeddings of every text of the batch; only those not cached go to the engine."""
        cached, missing = self.embeddings.lookup(key.max_length, encoded.texts)
        fresh: list[np.ndarray] = []
        if missing:
            ids = await asyncio.to_thread(
                self.tokenize_texts, key.max_length, [encoded.texts[i] for i in missing]
            )
            fresh = await engine.embed(ids)
        return self.embeddings.fill(key.max_length, encoded.texts, cached, missing, fresh)

    def read_out(self, encoded: TextRows, answer: list[np.ndarray]) -> list[Score]:
        vectors = np.asarray(answer, dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosines = np.einsum("ij,ij->i", vectors[encoded.query_rows], vectors[encoded.document_rows])
        return [Score(relevance=float(c), raw=float(c)) for c in cosines]
