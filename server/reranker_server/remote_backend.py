"""The remote-engine backend: grouped batches go to ``vllm serve`` engines over HTTP.

With it, several HTTP workers (``--workers N``) or replicas share one engine per GPU, each with
the same queue, cache and metrics in front. Several batches are in flight at once (two per
engine by default), spread over the engines in turn. The pairs are tokenised here, exactly as in
process, and sent as token ids wherever the engine's API takes them, so instruction and
max_length handling are identical to the in-process backend:

- bi-encoder: ``/v1/embeddings`` with token ids, the vectors back as base64 float32;
- LLM reranker, and cross-encoders without token types: ``/classify`` with token ids;
- cross-encoders with token types (BERT-style): ``/score`` with the pair's text, cut here at the
  last token that fits, because token types cannot be sent over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from .backend import Backend, EngineGoneError
from .engine_pool import EnginePool, EngineRequestError, NoEngineError
from .model_family import ClassifyInput
from .settings import Settings

logger = logging.getLogger("reranker_server")
T = TypeVar("T")


class RemoteEngineBackend(Backend):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client = httpx.AsyncClient(
            timeout=settings.engine_timeout_s,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self.pool = EnginePool(
            settings.engine_urls,
            self._client,
            settings.engine_health_interval_s,
            settings.engine_failure_threshold,
        )
        self._engine_model: str | None = None

    async def _start(self) -> Any:
        if Path(self.settings.model).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        tokenizer = await asyncio.to_thread(
            AutoTokenizer.from_pretrained,
            self.settings.model,
            trust_remote_code=self.settings.trust_remote_code,
        )
        self.pool.start()
        # Engines may still be loading their model: wait for one (the server reports "loading").
        deadline = time.monotonic() + self.settings.engine_start_timeout_s
        while not self.pool.any_healthy:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no engine became healthy within {self.settings.engine_start_timeout_s} s: "
                    + ", ".join(e.url for e in self.pool.engines)
                )
            await asyncio.sleep(0.5)
        models = await self.pool.call(self._models)
        self._engine_model = models["id"]
        self.max_length = int(models["max_model_len"])
        if self.settings.max_model_len is not None:
            self.max_length = min(self.max_length, self.settings.max_model_len)
        return tokenizer

    @staticmethod
    async def _models(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        r = await client.get(f"{url}/v1/models")
        r.raise_for_status()
        return r.json()["data"][0]

    async def aclose(self) -> None:
        await self.pool.close()
        await self._client.aclose()

    def _engine_alive(self) -> bool:
        return self.pool.any_healthy

    def unavailable_reason(self) -> str:
        if self.state.value == "ready" and not self.pool.any_healthy:
            return "no engine is reachable: " + ", ".join(
                f"{e.url} unhealthy" for e in self.pool.engines
            )
        return super().unavailable_reason()

    async def _on_engines(self, fn: Callable[[httpx.AsyncClient, str], Awaitable[T]]) -> T:
        try:
            return await self.pool.call(fn)
        except NoEngineError as exc:
            raise EngineGoneError(str(exc)) from exc

    async def _embed(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        return await self._on_engines(lambda c, u: self._embed_call(c, u, token_ids))

    async def _classify(self, encoded: ClassifyInput) -> list[float]:
        if encoded.cut_pairs is not None:
            return await self._on_engines(lambda c, u: self._score_text(c, u, encoded))
        return await self._on_engines(lambda c, u: self._classify_call(c, u, encoded))

    async def _post(self, client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Any:
        r = await client.post(url, json={"model": self._engine_model, **body})
        if 400 <= r.status_code < 500:
            raise EngineRequestError(f"the engine refused the batch ({r.status_code}): {r.text}")
        r.raise_for_status()
        data = sorted(r.json()["data"], key=lambda d: d["index"])
        return data

    async def _embed_call(
        self, c: httpx.AsyncClient, url: str, ids: list[list[int]]
    ) -> list[np.ndarray]:
        # base64 of little-endian float32: a quarter of the JSON floats' size, and no float
        # parsing; the engine's own precision, bit for bit.
        body = {
            "input": ids,
            "encoding_format": "base64",
            "embed_dtype": "float32",
            "endianness": "little",
        }
        data = await self._post(c, f"{url}/v1/embeddings", body)
        return [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]

    async def _classify_call(
        self, c: httpx.AsyncClient, url: str, enc: ClassifyInput
    ) -> list[float]:
        body = {"input": enc.prompts, "use_activation": False}
        return [d["probs"][0] for d in await self._post(c, f"{url}/classify", body)]

    async def _score_text(self, c: httpx.AsyncClient, url: str, enc: ClassifyInput) -> list[float]:
        assert enc.cut_pairs is not None
        body = {
            "queries": [q for q, _ in enc.cut_pairs],
            "documents": [d for _, d in enc.cut_pairs],
            "use_activation": False,
        }
        return [d["score"] for d in await self._post(c, f"{url}/score", body)]
