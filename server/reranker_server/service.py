"""One request's life: resolve it, ask the cache, queue the misses, answer in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from .backend import Backend, EngineGoneError
from .batch_queue import BatchQueue
from .errors import EngineUnavailableError
from .metrics import Metrics
from .request_resolution import RequestResolver, ResolvedRerank
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
from .score_cache import TieredScoreCache
from .scoring import GroupKey, Pair, Score
from .settings import Settings


class RerankService:
    """The endpoints' work: the resolver settles a request, the cache answers what it can, the
    queue batches the rest for the backend, and the answer is built in the request's order."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        resolver: RequestResolver,
        cache: TieredScoreCache,
        queue: BatchQueue[Score],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.resolver = resolver
        self.cache = cache
        self.queue = queue
        self.metrics = metrics

    # ---- endpoints --------------------------------------------------------------------------

    async def rerank(
        self, req: RerankRequest, documents_field: str = "documents"
    ) -> RerankResponse:
        """``documents_field`` names the documents in errors, as the sender's shape does."""
        return await self._rerank_one(self.resolver.rerank(req, documents_field))

    async def rerank_batch(self, req: RerankBatchRequest) -> RerankBatchResponse:
        resolved = self.resolver.rerank_batch(req)
        # All requests are queued before any is awaited, so the queue can group their pairs.
        results = await asyncio.gather(*(self._rerank_one(r) for r in resolved))
        return RerankBatchResponse(results=list(results))

    async def rerank_batch_simple(self, req: RerankBatchSimpleRequest) -> RerankBatchSimpleResponse:
        resolved = self.resolver.pairs(req)
        scores, hits = await self.score(resolved.key, resolved.pairs, resolved.priority)
        return RerankBatchSimpleResponse(
            model=self.backend.model_name,
            scores=[s.relevance for s in scores],
            usage=Usage(pairs=len(resolved.pairs), cache_hits=hits),
        )

    # ---- the shared path --------------------------------------------------------------------

    async def score(
        self, key: GroupKey, pairs: Sequence[Pair], priority: int = 0
    ) -> tuple[list[Score], int]:
        """Scores for resolved ``pairs`` in order, and how many came from the cache; the misses
        are queued at ``priority`` (lower first)."""
        backend = self.backend
        found = await self.cache.lookup(backend.cache_model_id, backend.prompt_version, key, pairs)
        scores = found.scores
        if found.misses:
            futures = self.queue.submit(key, [pairs[i] for i in found.misses], priority)
            # asyncio.wait, unlike gather, never cancels the futures if this caller goes away:
            # other callers may be sharing them.
            await asyncio.wait(set(futures))
            fresh: dict[int, Score] = {}
            for i, fut in zip(found.misses, futures):
                try:
                    score = fut.result()  # raises the engine's error for this caller
                except EngineGoneError as exc:
                    raise EngineUnavailableError(str(exc), headers={"Retry-After": "5"}) from exc
                scores[i] = score
                fresh[i] = score
            await self.cache.store(found, fresh)
        return [s for s in scores if s is not None], found.hits

    async def _rerank_one(self, resolved: ResolvedRerank) -> RerankResponse:
        req, texts, key = resolved.request, resolved.texts, resolved.key
        # Tokens are counted (for usage) while the pairs are scored, not after.
        (scores, hits), tokens = await asyncio.gather(
            self.score(key, resolved.pairs, resolved.priority),
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
        family = self.backend.family
        if family is None:
            return 0

        def count() -> int:
            # Through the family: its lock keeps this from racing a batch's tokenisation on the
            # fast tokenizer's shared truncation state.
            lengths = [len(x) for x in family.tokenize_texts(key.max_length, [query, *texts])]
            return lengths[0] * len(texts) + sum(lengths[1:])

        # Off the event loop: a large request's texts take a while to tokenise.
        return await asyncio.to_thread(count)
