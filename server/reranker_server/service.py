"""One request's life: check limits, look up the cache, queue the misses, answer in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .backend import Backend, EngineState
from .batch_queue import BatchQueue
from .compat import document_texts, requested_max_length
from .errors import EngineUnavailableError, InvalidRequestError, ModelNotFoundError
from .metrics import Metrics
from .request_limits import check_text_lengths
from .schemas import (
    RerankBatchRequest,
    RerankBatchResponse,
    RerankBatchSimpleRequest,
    RerankBatchSimpleResponse,
    RerankDocumentOut,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    Usage,
)
from .score_cache import ScoreCache, cache_key
from .scoring import GroupKey, Pair, Score
from .settings import Settings
from .shared_cache import SharedScoreCache

# Hashing and looking up this many pairs takes ~7 ms here (100 000 take 0.7 s): above it, the
# work goes to a thread so that /health and small requests are not held up behind it.
_OFF_LOOP_PAIRS = 1000
R = TypeVar("R")


async def _off_loop_if_large(n: int, fn: Callable[..., R], *args: Any) -> R:
    if n >= _OFF_LOOP_PAIRS:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


class RerankService:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        cache: ScoreCache,
        queue: BatchQueue[Score],
        metrics: Metrics,
        shared: SharedScoreCache | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.backend = backend
        self.cache = cache
        self.queue = queue
        self.metrics = metrics

    # ---- endpoints --------------------------------------------------------------------------

    async def rerank(self, req: RerankRequest) -> RerankResponse:
        self._check_model(req.model)
        self._check_pair_count(len(req.documents))
        texts = self._texts_of(req)
        key = self._group_key(req.instruction, self._max_length_of(req))
        return await self._rerank_one(req, texts, key)

    async def rerank_batch(self, req: RerankBatchRequest) -> RerankBatchResponse:
        self._check_model(req.model)
        self._check_pair_count(sum(len(r.documents) for r in req.requests))
        texts, keys = [], []
        for i, r in enumerate(req.requests):
            try:
                self._check_model(r.model)
                texts.append(self._texts_of(r))
                keys.append(self._group_key(r.instruction, self._max_length_of(r)))
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"requests[{i}]: {exc.detail}") from exc
        # All requests are queued before any is awaited, so the queue can group their pairs.
        results = await asyncio.gather(
            *(self._rerank_one(r, t, k) for r, t, k in zip(req.requests, texts, keys))
        )
        return RerankBatchResponse(results=list(results))

    async def rerank_batch_simple(self, req: RerankBatchSimpleRequest) -> RerankBatchSimpleResponse:
        self._check_model(req.model)
        self._check_pair_count(len(req.pairs))
        check_text_lengths(
            [("queries", req.queries), ("documents", req.documents)],
            self.settings.max_text_chars,
        )
        nq, nd = len(req.queries), len(req.documents)
        for i, (qi, dj) in enumerate(req.pairs):
            if not (0 <= qi < nq and 0 <= dj < nd):
                raise InvalidRequestError(
                    f"pairs[{i}] = [{qi}, {dj}] is out of range: there are {nq} queries and "
                    f"{nd} documents (indexes start at 0)"
                )
        key = self._group_key(req.instruction, req.max_length)
        pairs = [(req.queries[qi], req.documents[dj]) for qi, dj in req.pairs]
        scores, hits = await self.score(key, pairs, req.priority or 0)
        return RerankBatchSimpleResponse(
            model=self.backend.model_name,
            scores=[s.relevance for s in scores],
            usage=Usage(pairs=len(pairs), cache_hits=hits),
        )

    # ---- the shared path --------------------------------------------------------------------

    async def score(
        self, key: GroupKey, pairs: Sequence[Pair], priority: int = 0
    ) -> tuple[list[Score], int]:
        """Scores for ``pairs`` in order, and how many came from the cache; the misses are
        queued at ``priority`` (lower first)."""
        self._require_engine()
        keys, scores = await _off_loop_if_large(len(pairs), self._local_lookup, key, pairs)
        misses = [i for i, s in enumerate(scores) if s is None]
        if misses and self.shared is not None:
            found = await self.shared.get_many([keys[i] for i in misses])
            still_missing = []
            for i, score in zip(misses, found):
                if score is None:
                    still_missing.append(i)
                else:
                    scores[i] = score
                    self.cache.put(keys[i], score)
            self.metrics.redis_hits.inc(len(misses) - len(still_missing))
            misses = still_missing
        hits = len(pairs) - len(misses)
        self.metrics.pairs_requested.inc(len(pairs))
        self.metrics.cache_hits.inc(hits)
        self.metrics.cache_misses.inc(len(misses))
        if misses:
            futures = self.queue.submit(key, [pairs[i] for i in misses], priority)
            # asyncio.wait, unlike gather, never cancels the futures if this caller goes away:
            # other callers may be sharing them.
            await asyncio.wait(set(futures))
            fresh: dict[bytes, Score] = {}
            for i, fut in zip(misses, futures):
                score = fut.result()  # raises the engine's error for this caller
                scores[i] = score
                fresh[keys[i]] = score
            await _off_loop_if_large(len(fresh), self._local_store, fresh)
            self.metrics.cache_entries.set(len(self.cache))
            if self.shared is not None:
                await self.shared.put_many(list(fresh.items()))
        return [s for s in scores if s is not None], hits

    def _local_lookup(
        self, key: GroupKey, pairs: Sequence[Pair]
    ) -> tuple[list[bytes], list[Score | None]]:
        model, version = self.backend.cache_model_id, self.backend.prompt_version
        keys = [cache_key(model, version, key.instruction, key.max_length, q, d) for q, d in pairs]
        return keys, [self.cache.get(k) for k in keys]

    def _local_store(self, fresh: dict[bytes, Score]) -> None:
        for k, score in fresh.items():
            self.cache.put(k, score)

    async def _rerank_one(
        self, req: RerankRequest, texts: list[str], key: GroupKey
    ) -> RerankResponse:
        # Tokens are counted (for usage) while the pairs are scored, not after.
        (scores, hits), tokens = await asyncio.gather(
            self.score(key, [(req.query, t) for t in texts], req.priority or 0),
            self._count_tokens(key, req.query, texts),
        )
        order = sorted(range(len(scores)), key=lambda i: (-scores[i].relevance, i))
        if req.top_n:  # null and 0 both mean every document
            order = order[: req.top_n]
        results = [
            RerankResult(
                index=i,
                relevance_score=scores[i].relevance,
                raw_score=scores[i].raw,
                document=self._echo(req, texts, i) if req.return_documents else None,
            )
            for i in order
        ]
        return RerankResponse(
            id=f"rerank-{uuid.uuid4().hex}",
            model=self.backend.model_name,
            results=results,
            usage=RerankUsage(
                pairs=len(scores), cache_hits=hits, prompt_tokens=tokens, total_tokens=tokens
            ),
        )

    @staticmethod
    def _echo(req: RerankRequest, texts: list[str], i: int) -> RerankDocumentOut:
        """The document as sent: an object keeps its other fields (as Cohere answers), and
        gets the text it was ranked on if it had none."""
        doc = req.documents[i]
        if isinstance(doc, str):
            return RerankDocumentOut(text=doc)
        return RerankDocumentOut(**{**(doc.model_extra or {}), "text": doc.text or texts[i]})

    async def _count_tokens(self, key: GroupKey, query: str, texts: list[str]) -> int:
        encoder = self.backend.encoder
        if encoder is None:
            return 0

        def count() -> int:
            # Through the encoder: its lock keeps this from racing a batch's tokenisation on the
            # fast tokenizer's shared truncation state.
            lengths = [len(x) for x in encoder.tokenize_texts(key.max_length, [query, *texts])]
            return lengths[0] * len(texts) + sum(lengths[1:])

        # Off the event loop: a large request's texts take a while to tokenise.
        return await asyncio.to_thread(count)

    # ---- checks -----------------------------------------------------------------------------

    def _require_engine(self) -> None:
        if not self.backend.alive:
            retry = "5" if self.backend.state is EngineState.LOADING else "30"
            raise EngineUnavailableError(
                self.backend.unavailable_reason(), headers={"Retry-After": retry}
            )

    def _group_key(self, instruction: str | None, max_length: int | None) -> GroupKey:
        self._require_engine()  # the model's limits are known only once it is loaded
        return self.backend.group_key(instruction, max_length)

    def _check_model(self, name: str | None) -> None:
        """A request may name the model (Cohere, Jina and vLLM clients do); it must be this one."""
        if name is None:
            return
        served = self.backend.model_name
        accepted = {served, self.settings.model, *self.settings.model_aliases}
        if name not in accepted:
            aliases = self.settings.model_aliases
            also = f" (or its aliases {', '.join(aliases)})" if aliases else ""
            raise ModelNotFoundError(
                f"the model {name!r} is not served here: this server serves {served!r}{also}; "
                "send that name, or none (RERANKER_MODEL_ALIASES adds names)"
            )

    def _max_length_of(self, req: RerankRequest) -> int | None:
        self._require_engine()  # the model's limits are known only once it is loaded
        encoder = self.backend.encoder
        lowest = encoder.min_length if encoder is not None else 1
        return requested_max_length(req, lowest, self.backend.max_length)

    def _texts_of(self, req: RerankRequest) -> list[str]:
        texts = document_texts(req)
        check_text_lengths(
            [("query", req.query), ("documents", texts)], self.settings.max_text_chars
        )
        return texts

    def _check_pair_count(self, n: int) -> None:
        limit = self.settings.max_pairs_per_request
        if n > limit:
            raise InvalidRequestError(
                f"the request has {n} pairs, more than this server's limit of {limit} per "
                "request; split it into smaller requests (reranker_client does this for you)"
            )
