"""The engine deployment of the Ray Serve app: one vLLM engine per replica.

Each replica holds an ``InProcessBackend``'s engine and scores the grouped, already tokenised
batches that an ingress replica's queue cuts (``RayEngineBackend`` sends them through a
``DeploymentHandle``, with no HTTP hop). Tokenisation, the caches and the read-out stay in the
ingress, so a replica does only what needs the model: embed token ids, or classify them.

Ray places replicas by ``ray_actor_options`` (``num_gpus: 1`` on GPUs, CPUs here), bounds the
batches in flight per replica with ``max_ongoing_requests``, and replaces a replica whose
``check_health`` fails (its engine core died) or whose process is gone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .inprocess_backend import InProcessBackend
from .model_family import ClassifyInput
from .settings import Settings


class EngineReplica:
    """One vLLM engine; the methods are what ``RayEngineBackend`` calls through its handle."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._backend = InProcessBackend(Settings(**settings))
        # Loading before the constructor returns: Ray counts the replica as running (and routes
        # to it) only once it can score.
        self._backend._load()

    def info(self) -> dict[str, Any]:
        """The engine's limits, as the ingress's backend needs them at start-up."""
        b = self._backend
        return {
            "max_length": b.max_length,
            "batch_max_tokens": b.batch_max_tokens,
            "dtype": b._engine_dtype(),
        }

    async def embed(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        """Embed each tokenised text (bi-encoder)."""
        return await self._backend._embed(token_ids)

    async def classify(self, encoded: ClassifyInput) -> list[float]:
        """One raw logit per encoded pair (cross-encoder, LLM reranker)."""
        return await self._backend._classify(encoded)

    def check_health(self) -> None:
        """Ray Serve's health check: raising makes Ray replace this replica."""
        if not self._backend._engine_alive():
            raise RuntimeError("the engine core process died")
