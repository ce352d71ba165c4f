"""How (query, document) pairs become engine inputs, and engine outputs become scores.

Tokenisation happens here, not in vLLM, so that truncation is exact and identical for every
backend: a pair is cut to ``max_length`` tokens by shortening the document first.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .model_family import (
    QWEN3_DEFAULT_INSTRUCTION,
    QWEN3_PREFIX,
    QWEN3_SUFFIX,
    ModelFamily,
    bi_encoder_query,
    qwen3_body,
)
from .scoring import GroupKey, Pair, Score


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass
class EncodedPairs:
    """A batch ready for an engine.

    Cross-encoder and LLM reranker: one token sequence per pair (``prompts``). A cross-encoder
    whose tokenizer has token types also gets ``segment_starts`` (where the document segment
    begins) and ``cut_pairs`` (the pair cut to fit, as text, for engines that take text only).
    Bi-encoder: each distinct text once (``texts``; tokenise with ``tokenize_texts``, only those
    not cached), and per pair the index of its query (``query_rows``) and document
    (``document_rows``).
    """

    prompts: list[list[int]]
    texts: list[str] = field(default_factory=list)
    segment_starts: list[int] | None = None
    cut_pairs: list[Pair] | None = None
    query_rows: list[int] = field(default_factory=list)
    document_rows: list[int] = field(default_factory=list)


class PairEncoder:
    """Turns pairs into token ids for one model family with that model's tokenizer."""

    def __init__(self, family: ModelFamily, tokenizer: Any) -> None:
        self.family = family
        self.tokenizer = tokenizer
        # A fast tokenizer's truncation settings are state of the one Rust object, set on each
        # call: two batches tokenised at once on two threads would race on them.
        self._lock = threading.Lock()
        self._prefix: list[int] = []
        self._suffix: list[int] = []
        if family is ModelFamily.LLM_RERANKER:
            self._prefix = tokenizer(QWEN3_PREFIX, add_special_tokens=False)["input_ids"]
            self._suffix = tokenizer(QWEN3_SUFFIX, add_special_tokens=False)["input_ids"]
            # Room for the template and at least a few tokens of the pair itself.
            self.min_length = len(self._prefix) + len(self._suffix) + 8
        elif family is ModelFamily.CROSS_ENCODER:
            self.min_length = 4  # [CLS] q [SEP] d [SEP] with a token of each
        else:
            self.min_length = 2

    def encode(self, key: GroupKey, pairs: Sequence[Pair]) -> EncodedPairs:
        """The batch's engine input; each pair encoded on its own terms (thread-safe)."""
        with self._lock:
            return self._encode(key, pairs)

    def _encode(self, key: GroupKey, pairs: Sequence[Pair]) -> EncodedPairs:
        if self.family is ModelFamily.CROSS_ENCODER:
            return self._cross_encoder(key, pairs)
        if self.family is ModelFamily.LLM_RERANKER:
            return self._llm_reranker(key, pairs)
        return self._bi_encoder(key, pairs)

    def _cross_encoder(self, key: GroupKey, pairs: Sequence[Pair]) -> EncodedPairs:
        # Without padding, a pair's tokens from a batch call are its tokens alone; only the
        # truncation fallback must be decided pair by pair, or one long query would re-cut
        # every batch-mate (and its score would depend on its batch).
        try:
            encoded = [self._cross_encoder_call(pairs, "only_second", key.max_length)]
        except Exception:  # noqa: BLE001 - the tokenizer's "cannot truncate" is a bare Exception
            encoded = [self._cross_encoder_pair(pair, key.max_length) for pair in pairs]
        rows = [(enc, i) for enc in encoded for i in range(len(enc["input_ids"]))]
        out = EncodedPairs(prompts=[list(enc["input_ids"][i]) for enc, i in rows])
        if "token_type_ids" in encoded[0]:
            out.segment_starts = [_first_one(enc["token_type_ids"][i]) for enc, i in rows]
            out.cut_pairs = [
                _cut_pair(pair, enc.sequence_ids(i), enc["offset_mapping"][i])
                for pair, (enc, i) in zip(pairs, rows, strict=True)
            ]
        return out

    def _cross_encoder_call(self, pairs: Sequence[Pair], truncation: str, max_length: int) -> Any:
        return self.tokenizer(
            [q for q, _ in pairs],
            [d for _, d in pairs],
            truncation=truncation,
            max_length=max_length,
            return_offsets_mapping=True,
        )

    def _cross_encoder_pair(self, pair: Pair, max_length: int) -> Any:
        """One pair alone: the document is cut first; a query longer than max_length on its
        own is cut too (longest first), which changes no other pair."""
        try:
            return self._cross_encoder_call([pair], "only_second", max_length)
        except Exception:  # noqa: BLE001
            return self._cross_encoder_call([pair], "longest_first", max_length)

    def _llm_reranker(self, key: GroupKey, pairs: Sequence[Pair]) -> EncodedPairs:
        instruction = key.instruction or QWEN3_DEFAULT_INSTRUCTION
        budget = key.max_length - len(self._prefix) - len(self._suffix)
        bodies = [qwen3_body(instruction, q, d) for q, d in pairs]
        # The document is last in the body, so cutting from the right shortens it first.
        enc = self.tokenizer(bodies, add_special_tokens=False, truncation=True, max_length=budget)
        return EncodedPairs(prompts=[self._prefix + ids + self._suffix for ids in enc["input_ids"]])

    def _bi_encoder(self, key: GroupKey, pairs: Sequence[Pair]) -> EncodedPairs:
        # B queries x B documents cost 2B embeddings, not B^2: each distinct text once.
        rows: dict[str, int] = {}
        out = EncodedPairs(prompts=[])
        for q, d in pairs:
            out.query_rows.append(rows.setdefault(bi_encoder_query(key.instruction, q), len(rows)))
            out.document_rows.append(rows.setdefault(d, len(rows)))
        out.texts = list(rows)
        return out

    def tokenize_texts(self, max_length: int, texts: Sequence[str]) -> list[list[int]]:
        """Each text on its own, cut to max_length tokens (bi-encoder input; usage counts)."""
        if not texts:
            return []
        with self._lock:
            enc = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        return list(enc["input_ids"])

    # ---- read-out ---------------------------------------------------------------------------

    @staticmethod
    def scores_from_logits(logits: Sequence[float]) -> list[Score]:
        """Cross-encoder logit, or the LLM reranker's logit(yes) - logit(no)."""
        return [Score(relevance=sigmoid(x), raw=float(x)) for x in logits]

    @staticmethod
    def scores_from_embeddings(encoded: EncodedPairs, embeddings: Sequence[Any]) -> list[Score]:
        import numpy as np

        vectors = np.asarray(embeddings, dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosines = np.einsum("ij,ij->i", vectors[encoded.query_rows], vectors[encoded.document_rows])
        return [Score(relevance=float(c), raw=float(c)) for c in cosines]


def _first_one(token_types: Sequence[int]) -> int:
    """Where the second segment starts (vLLM's compressed form of token type ids)."""
    for i, t in enumerate(token_types):
        if t == 1:
            return i
    return len(token_types)


def _cut_pair(pair: Pair, sequence_ids: list[int | None], offsets: list[tuple[int, int]]) -> Pair:
    """The pair's texts cut at the end of the last token each kept, so that an engine which
    tokenises text itself sees (nearly always exactly) the same tokens without truncating."""
    ends = {0: 0, 1: 0}
    for seq, (_, end) in zip(sequence_ids, offsets):
        if seq is not None:
            ends[seq] = max(ends[seq], end)
    return pair[0][: ends[0]], pair[1][: ends[1]]
