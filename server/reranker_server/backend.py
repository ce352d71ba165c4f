"""The engine adapter: one in-process vLLM engine (pooling runner) behind an async interface.

All model work, tokenisation included, runs on one dedicated thread, so the event loop never waits
for the engine: /health and small requests are answered while a large batch is scored. vLLM runs the
model itself in its engine-core child process.

Tokenisation is done here rather than by vLLM so that truncation is exact and the same for every
family: a pair is cut to ``max_length`` tokens by shortening the document first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Any

from .batch_queue import GroupKey, Pair
from .errors import EngineUnavailableError, InvalidRequestError
from .model_family import (
    LLM_RERANKER_HF_OVERRIDES,
    PROMPT_VERSION,
    QWEN3_DEFAULT_INSTRUCTION,
    QWEN3_PREFIX,
    QWEN3_SUFFIX,
    ModelFamily,
    bi_encoder_query,
    detect_family,
    qwen3_body,
)
from .score_cache import Score
from .settings import Settings

logger = logging.getLogger("reranker_server")


class EngineState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    DEAD = "dead"
    FAILED = "failed"


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class VLLMBackend:
    """Scores (query, document) pairs with a vLLM pooling engine in this process."""

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
        self._min_length = 1
        self._llm: Any = None
        self._tokenizer: Any = None
        self._qwen3_prefix: list[int] = []
        self._qwen3_suffix: list[int] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-engine")

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the engine on the engine thread; the state says when it is ready."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load)
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

    def _load(self) -> None:
        if Path(self.settings.model).is_dir():
            # A local model needs no hub; without this, offline machines wait on network timeouts.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # On the CPU build, the KV cache is sized in GiB by this variable; pooling needs little.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=self.settings.model,
            runner="pooling",
            dtype=self.settings.dtype,
            enforce_eager=self.settings.enforce_eager,
            gpu_memory_utilization=self.settings.gpu_memory_utilization,
            trust_remote_code=self.settings.trust_remote_code,
        )
        if self.settings.max_model_len is not None:
            kwargs["max_model_len"] = self.settings.max_model_len
        if self.settings.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = self.settings.max_num_batched_tokens
        if self.family is ModelFamily.LLM_RERANKER:
            kwargs["hf_overrides"] = dict(LLM_RERANKER_HF_OVERRIDES)
        self._llm = LLM(**kwargs)
        self._tokenizer = self._llm.get_tokenizer()
        self.max_length = int(self._llm.model_config.max_model_len)
        self.batch_max_tokens = int(
            self._llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
        )
        if self.family is ModelFamily.LLM_RERANKER:
            self._qwen3_prefix = self._tokenizer(QWEN3_PREFIX, add_special_tokens=False)[
                "input_ids"
            ]
            self._qwen3_suffix = self._tokenizer(QWEN3_SUFFIX, add_special_tokens=False)[
                "input_ids"
            ]
            # Room for the template and at least a few tokens of the pair itself.
            self._min_length = len(self._qwen3_prefix) + len(self._qwen3_suffix) + 8
        elif self.family is ModelFamily.CROSS_ENCODER:
            self._min_length = 4  # [CLS] q [SEP] d [SEP] needs room for a token of each
        else:
            self._min_length = 2
        # The first call is much slower than the rest; pay for it before reporting ready.
        key = GroupKey(self.default_instruction(), self.max_length)
        self._score_sync(key, [("warm-up query", "warm-up document")])

    def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort at exit
                logger.debug("engine shutdown raised", exc_info=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        """False once the engine core process has died (vLLM's monitor thread notices)."""
        if self.state is not EngineState.READY:
            return False
        try:
            dead = self._llm.llm_engine.engine_core.resources.engine_dead
        except AttributeError:  # an in-process engine core has no such flag
            dead = False
        if dead:
            self._mark_dead("the engine core process died")
        return not dead

    def _mark_dead(self, why: str) -> None:
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
            instruction = (
                None  # a cross-encoder has no instruction input; do not split groups on it
            )
        elif self.family is ModelFamily.LLM_RERANKER and not instruction:
            instruction = QWEN3_DEFAULT_INSTRUCTION
        elif not instruction:
            instruction = None
        if max_length is None:
            max_length = self.max_length
        elif max_length > self.max_length:
            raise InvalidRequestError(
                f"max_length {max_length} is above this model's limit of {self.max_length} tokens"
            )
        elif max_length < self._min_length:
            raise InvalidRequestError(
                f"max_length {max_length} is too small for this model: it needs at least "
                f"{self._min_length} tokens for its input format"
            )
        return GroupKey(instruction, max_length)

    # ---- scoring ----------------------------------------------------------------------------

    async def score_batch(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        if not self.alive:
            raise EngineUnavailableError(self.unavailable_reason(), headers={"Retry-After": "5"})
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._score_sync, key, pairs)
        except Exception as exc:
            from vllm.v1.engine.exceptions import EngineDeadError

            if isinstance(exc, EngineDeadError) or not self.alive:
                self._mark_dead(f"the engine died while scoring ({type(exc).__name__})")
                raise EngineUnavailableError(self.unavailable_reason()) from exc
            raise

    def _score_sync(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        if self.family is ModelFamily.BI_ENCODER:
            return self._score_bi_encoder(key, pairs)
        if self.family is ModelFamily.CROSS_ENCODER:
            return self._score_cross_encoder(key, pairs)
        return self._score_llm_reranker(key, pairs)

    def _classify_raw(self, prompts: list[Any], params: list[Any]) -> list[float]:
        outputs = self._llm.classify(prompts, pooling_params=params, use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outputs]

    def _score_cross_encoder(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        from vllm.entrypoints.pooling.scoring.utils import compress_token_type_ids
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        queries = [q for q, _ in pairs]
        docs = [d for _, d in pairs]
        try:
            enc = self._tokenizer(
                queries, docs, truncation="only_second", max_length=key.max_length
            )
        except Exception:  # noqa: BLE001
            # A query longer than max_length on its own: cut both, longest first, pair by pair.
            enc = self._tokenizer(
                queries, docs, truncation="longest_first", max_length=key.max_length
            )
        prompts, params = [], []
        for i, ids in enumerate(enc["input_ids"]):
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            p = PoolingParams(use_activation=False)
            if "token_type_ids" in enc:
                # vLLM's own score path sends token types this way (as the first type-1 position).
                p.extra_kwargs = {
                    "compressed_token_type_ids": compress_token_type_ids(enc["token_type_ids"][i])
                }
            params.append(p)
        raws = self._classify_raw(prompts, params)
        return [Score(relevance=_sigmoid(r), raw=r) for r in raws]

    def _score_llm_reranker(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        instruction = key.instruction or QWEN3_DEFAULT_INSTRUCTION
        budget = key.max_length - len(self._qwen3_prefix) - len(self._qwen3_suffix)
        bodies = [qwen3_body(instruction, q, d) for q, d in pairs]
        # The document is last in the body, so cutting from the right shortens it first.
        enc = self._tokenizer(bodies, add_special_tokens=False, truncation=True, max_length=budget)
        prompts = [
            TokensPrompt(prompt_token_ids=self._qwen3_prefix + ids + self._qwen3_suffix)
            for ids in enc["input_ids"]
        ]
        params = [PoolingParams(use_activation=False) for _ in prompts]
        raws = self._classify_raw(prompts, params)
        return [Score(relevance=_sigmoid(r), raw=r) for r in raws]

    def _score_bi_encoder(self, key: GroupKey, pairs: Sequence[Pair]) -> list[Score]:
        import numpy as np
        from vllm.inputs import TokensPrompt

        # B queries x B documents cost 2B embeddings, not B^2: embed each distinct text once.
        texts: dict[str, int] = {}
        q_index, d_index = [], []
        for q, d in pairs:
            q_index.append(texts.setdefault(bi_encoder_query(key.instruction, q), len(texts)))
            d_index.append(texts.setdefault(d, len(texts)))
        enc = self._tokenizer(list(texts), truncation=True, max_length=key.max_length)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in enc["input_ids"]]
        outputs = self._llm.embed(prompts, use_tqdm=False)
        vectors = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosines = np.einsum("ij,ij->i", vectors[q_index], vectors[d_index])
        return [Score(relevance=float(c), raw=float(c)) for c in cosines]
