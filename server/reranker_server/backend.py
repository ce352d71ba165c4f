"""The engine adapter interface: what the service needs from whatever runs the model.

Two implementations answer the same way:

- ``InProcessBackend`` (``inprocess_backend``): a vLLM engine inside this process; the default.
- ``RemoteEngineBackend`` (``remote_backend``): one or more ``vllm serve`` processes over HTTP,
  so that several HTTP workers or replicas share one engine per GPU.

The base class owns everything but the engine's I/O: the model family (chosen once, when the
backend is made, and given the engine's tokenizer at load), the one scoring pipeline (the
family's engine order -> encode -> engine call -> read-out), start-up, warm-up and the engine's
state. It raises no HTTP errors: an engine that is gone is ``EngineGoneError``, which the service
answers with a 503.

The contract of a backend (what a new engine adapter, or a fake one in tests, implements):

- ``async _start() -> tokenizer``: bring the engine up, set ``max_length`` (the model's token
  limit) and ``batch_max_tokens`` (None if unknown), and return the model's tokenizer (a
  transformers tokenizer);
- ``async _embed(token_ids: list[list[int]]) -> list[np.ndarray]``: one vector per tokenised
  text (bi-encoders);
- ``async _classify(batch: ClassifyInput) -> list[float]``: one raw logit per
  ``batch.prompts`` entry (cross-encoders, LLM rerankers; ``segment_starts`` are the token
  types, ``cut_pairs`` the same pairs as text);
- ``_engine_alive() -> bool``: whether the engine can take work now (cheap; called per request).

``_embed`` and ``_classify`` raise ``EngineGoneError`` when the engine is gone. Optional:
``_engine_dtype``, ``unavailable_reason`` and ``aclose``.

Tokenisation and read-out run on worker threads, not on the engine's: with several batches in
flight (``ENGINE_BATCHES_IN_FLIGHT``; 2 per remote engine by default), the next batch is tokenised
and sent while the engine runs this one.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np

from .model_family import ClassifyInput, EngineCalls, Family, configured_family
from .model_fingerprint import model_fingerprint
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

    #: Whether the engine runs inside this process, so that restarting the process brings a dead
    #: engine back (``crash_only`` then exits when it dies). Engines in other processes (``vllm
    #: serve``, Ray replicas) are failed over or replaced by what runs them.
    engine_in_process = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        #: The model's family, known from its config before it loads.
        self.family_class: type[Family[Any, Any]] = configured_family(settings)
        #: The family with the engine's tokenizer, once the engine is up.
        self.family: Family[Any, Any] | None = None
        self.state = EngineState.LOADING
        self.error: str | None = None
        self.max_length = 0  # the model's limit, known once loaded
        self.batch_max_tokens: int | None = None
        self.fingerprint = ""  # of the model's files and dtype, known once loaded
        self._engine = EngineCalls(embed=self._embed, classify=self._classify)

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or connect to) the engine; ``state`` says when it is ready. Never raises."""
        try:
            # Hashing the model's files overlaps loading it.
            files = asyncio.create_task(
                asyncio.to_thread(model_fingerprint, self.settings.model, self.settings.fingerprint)
            )
            tokenizer = await self._start()
            self.family = self.family_class(self.settings, tokenizer)
            self.fingerprint = f"{await files}:{self._engine_dtype()}"
            # The first call is much slower than the rest; pay for it before reporting ready.
            key = GroupKey(self.family_class.instruction_of(None), self.max_length)
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
                self.family_class.kind.value,
                self.max_length,
            )

    @abstractmethod
    async def _start(self) -> Any:
        """Bring the engine up; set ``max_length`` and ``batch_max_tokens``; return the
        model's tokenizer."""

    @abstractmethod
    async def _embed(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        """Embed each tokenised text (bi-encoder); ``EngineGoneError`` when the engine is gone."""

    @abstractmethod
    async def _classify(self, batch: ClassifyInput) -> list[float]:
        """One raw logit per prompt of the batch; ``EngineGoneError`` when the engine is gone."""

    def _engine_dtype(self) -> str:
        """The dtype the engine runs the model at (the setting, unless the engine says)."""
        return self.settings.dtype

    @abstractmethod
    def _engine_alive(self) -> bool:
        """Whether the engine can take work now (checked on every request; must be cheap)."""

    async def aclose(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the engine (at shutdown)."""

    @property
    def prompt_version(self) -> str:
        return self.family_class.prompt_version

    @property
    def cache_model_id(self) -> str:
        """The model as score-cache keys name it: its name and its fingerprint, so that another
        model (or dtype) behind the same name never gets this one's cached scores."""
        return f"{self.model_name}@{self.fingerprint}"

    @property
    def embedding_cache_bytes(self) -> int:
        """Memory held by the family's embedding cache (the bi-encoder's; 0 until loaded)."""
        return 0 if self.family is None else self.family.embedding_cache_bytes()

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

    # ---- scoring ----------------------------------------------------------------------------

    async def _score(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        """The one pipeline: the family's engine order, encoding, engine call and read-out."""
        family = self.family
        assert family is not None
        order = family.engine_order(pairs)
        if order is not None:
            pairs = [pairs[i] for i in order]
        encoded = await asyncio.to_thread(family.encode, key, pairs)
        answer = await family.call_engine(key, encoded, self._engine)
        scores: list[Score] = await asyncio.to_thread(family.read_out, encoded, answer)
        if order is None:
            return scores
        unsorted: list[Score] = [scores[0]] * len(scores)
        for position, i in enumerate(order):
            unsorted[i] = scores[position]
        return unsorted

    async def score_batch(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        """Scores of one grouped batch, in order; ``EngineGoneError`` (saying why) when the
        engine cannot score it."""
        if not self.alive:
            raise EngineGoneError(self.unavailable_reason())
        try:
            return await self._score(key, pairs)
        except EngineGoneError as exc:
            # Dead, or (remote) every engine failed this batch while some are still in the pool.
            if not self.alive:
                raise EngineGoneError(self.unavailable_reason()) from exc
            raise


def create_backend(settings: Settings) -> Backend:
    """The remote-engine backend when engine URLs are configured, else the in-process engine."""
    if settings.engine_urls:
        from .remote_backend import RemoteEngineBackend

        return RemoteEngineBackend(settings)
    from .inprocess_backend import InProcessBackend

    return InProcessBackend(settings)
