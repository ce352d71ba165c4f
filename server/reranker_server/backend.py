"""The engine adapter interface: what the service needs from whatever runs the model.

Two implementations answer the same way:

- ``InProcessBackend`` (``inprocess_backend``): a vLLM engine inside this process; the default.
- ``RemoteEngineBackend`` (``remote_backend``): one or more ``vllm serve`` processes over HTTP,
  so that several HTTP workers or replicas share one engine per GPU.

The base class owns everything but the engine calls: tokenisation (``PairEncoder``, so truncation
and prompt format are the same everywhere), the bi-encoder's embedding cache, batch order and the
read-out. A backend supplies ``_embed`` and ``_classify`` only.

Tokenisation and read-out run on worker threads, not on the engine's: with several batches in
flight (``ENGINE_BATCHES_IN_FLIGHT``), the next batch is tokenised while the engine runs this one.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum

import numpy as np

from .embedding_cache import EmbeddingCache
from .errors import EngineUnavailableError, InvalidRequestError
from .model_family import PROMPT_VERSION, QWEN3_DEFAULT_INSTRUCTION, ModelFamily, detect_family
from .model_fingerprint import model_fingerprint
from .pair_encoding import EncodedPairs, PairEncoder
from .scoring import GroupKey, Pair, Score
from .settings import Settings

logger = logging.getLogger("reranker_server")


class EngineState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    DEAD = "dead"
    FAILED = "failed"


class EngineGoneError(Exception):
    """The engine cannot score any more (its process died, or no engine is reachable)."""


class Backend(ABC):
    """Scores batches of pairs that share one (instruction, max_length)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.family = (
            detect_family(settings.model)
            if settings.model_family == "auto"
            else ModelFamily(settings.model_family)
        )
        self.prompt_version = PROMPT_VERSION[self.family]
        self.state = EngineState.LOADING
        self.error: str | None = None
        self.max_length = 0  # the model's limit, known once loaded
        self.batch_max_tokens: int | None = None
        self.encoder: PairEncoder | None = None
        self.fingerprint = ""  # of the model's files and dtype, known once loaded
        self.embeddings = EmbeddingCache(
            settings.embedding_cache_size, int(settings.embedding_cache_mb * 2**20)
        )

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or connect to) the engine; ``state`` says when it is ready. Never raises."""
        try:
            # Hashing the model's files overlaps loading it.
            files = asyncio.create_task(
                asyncio.to_thread(model_fingerprint, self.settings.model, self.settings.fingerprint)
            )
            await self._start()
            self.fingerprint = f"{await files}:{self._engine_dtype()}"
            # The first call is much slower than the rest; pay for it before reporting ready.
            key = GroupKey(self.default_instruction(), self.max_length)
            await self._score(key, [("warm-up query", "warm-up document")])
        except Exception as exc:  # noqa: BLE001 - reported through /health, not raised
            logger.exception("the engine failed to start")
            self.error = f"the engine failed to start: {type(exc).__name__}: {exc}"
            self.state = EngineState.FAILED
        else:
            self.state = EngineState.READY
            logger.info(
                "engine ready: %s (%s), max_length %d",
                self.model_name,
                self.family.value,
                self.max_length,
            )

    @abstractmethod
    async def _start(self) -> None:
        """Bring the engine up; set ``encoder``, ``max_length`` and ``batch_max_tokens``."""

    @abstractmethod
    async def _embed(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        """Embed each tokenised text (bi-encoder); ``EngineGoneError`` when the engine is gone."""

    @abstractmethod
    async def _classify(self, encoded: EncodedPairs) -> list[float]:
        """One raw logit per encoded pair; ``EngineGoneError`` when the engine is gone."""

    def _engine_dtype(self) -> str:
        """The dtype the engine runs the model at (the setting, unless the engine says)."""
        return self.settings.dtype

    @abstractmethod
    def _engine_alive(self) -> bool:
        """Whether the engine can take work now (checked on every request; must be cheap)."""

    async def aclose(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the engine (at shutdown)."""

    @property
    def cache_model_id(self) -> str:
        """The model as score-cache keys name it: its name and its fingerprint, so that another
        model (or dtype) behind the same name never gets this one's cached scores."""
        return f"{self.model_name}@{self.fingerprint}"

    # ---- state ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.state is EngineState.READY and self._engine_alive()

    def mark_dead(self, why: str) -> None:
        if self.state is not EngineState.DEAD:
            logger.error("engine dead: %s", why)
        self.state = EngineState.DEAD
        self.error = f"{why}; restart the server"

    def unavailable_reason(self) -> str:
        if self.state is EngineState.LOADING:
            return "the engine is still loading the model; retry in a few seconds"
        return self.error or f"the engine is {self.state.value}"

    # ---- request resolution -----------------------------------------------------------------

    def default_instruction(self) -> str | None:
        return QWEN3_DEFAULT_INSTRUCTION if self.family is ModelFamily.LLM_RERANKER else None

    def group_key(self, instruction: str | None, max_length: int | None) -> GroupKey:
        """The effective (instruction, max_length) of a request; 422 when max_length cannot be."""
        if self.family is ModelFamily.CROSS_ENCODER:
            # A cross-encoder has no instruction input: do not split groups on it.
            instruction = None
        elif self.family is ModelFamily.LLM_RERANKER and not instruction:
            instruction = QWEN3_DEFAULT_INSTRUCTION
        elif not instruction:
            instruction = None
        min_length = self.encoder.min_length if self.encoder else 1
        if max_length is None:
            max_length = self.max_length
        elif max_length > self.max_length:
            raise InvalidRequestError(
                f"max_length {max_length} is above this model's limit of {self.max_length} tokens"
            )
        elif max_length < min_length:
            raise InvalidRequestError(
                f"max_length {max_length} is too small for this model: it needs at least "
                f"{min_length} tokens for its input format"
            )
        return GroupKey(instruction, max_length)

    # ---- scoring ----------------------------------------------------------------------------

    async def _score(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        assert self.encoder is not None
        order = self._engine_order(pairs)
        if order is not None:
            pairs = [pairs[i] for i in order]
        encoded = await asyncio.to_thread(self.encoder.encode, key, pairs)
        if self.family is ModelFamily.BI_ENCODER:
            cached, missing = self.embeddings.lookup(key.max_length, encoded.texts)
            fresh: list[np.ndarray] = []
            if missing:
                ids = await asyncio.to_thread(
                    self.encoder.tokenize_texts,
                    key.max_length,
                    [encoded.texts[i] for i in missing],
                )
                fresh = await self._embed(ids)
            filled = self.embeddings.fill(key.max_length, encoded.texts, cached, missing, fresh)
            scores = await asyncio.to_thread(PairEncoder.scores_from_embeddings, encoded, filled)
        else:
            scores = PairEncoder.scores_from_logits(await self._classify(encoded))
        if order is None:
            return scores
        unsorted: list[Score] = [scores[0]] * len(scores)
        for position, i in enumerate(order):
            unsorted[i] = scores[position]
        return unsorted

    def _engine_order(self, pairs: Sequence[Pair]) -> list[int] | None:
        """LLM rerankers: the pairs of one query side by side, so that the engine's prefix cache
        computes the shared system prompt, instruction and query once for all of them (vLLM
        reuses cached blocks within one engine step, too). Other families: as they came."""
        if self.family is not ModelFamily.LLM_RERANKER:
            return None
        return sorted(range(len(pairs)), key=lambda i: pairs[i][0])

    async def score_batch(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        if not self.alive:
            raise EngineUnavailableError(self.unavailable_reason(), headers={"Retry-After": "5"})
        try:
            return await self._score(key, pairs)
        except EngineGoneError as exc:
            # Dead, or (remote) every engine failed this batch while some are still in the pool.
            reason = self.unavailable_reason() if not self.alive else str(exc)
            raise EngineUnavailableError(reason, headers={"Retry-After": "5"}) from exc


def create_backend(settings: Settings) -> Backend:
    """The remote-engine backend when engine URLs are configured, else the in-process engine."""
    if settings.engine_urls:
        from .remote_backend import RemoteEngineBackend

        return RemoteEngineBackend(settings)
    from .inprocess_backend import InProcessBackend

    return InProcessBackend(settings)
