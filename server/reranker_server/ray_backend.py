"""The Ray backend: grouped batches go to engine replicas through a Ray Serve ``DeploymentHandle``.

The ingress replicas of the Ray Serve app (``ray_serve``) run today's FastAPI app with this
backend. Tokenisation, the embedding cache and the read-out stay here, in the base class, exactly
as in process; only ``_embed`` and ``_classify`` cross to an engine replica (``ray_engine``), as
token ids, with no HTTP hop. Ray picks the replica and bounds the batches in flight on each.

Faults: a batch whose replica dies under it (``RayActorError``) is sent again, to whichever
replica Ray picks next; scoring is a pure function of the batch, so the retry answers each pair
exactly once. While no engine replica is running (all dead, Ray starting their replacements),
the service answers 503 with Retry-After and ``/health`` says how many replicas are starting.

Overrides of ``Backend``: ``_start``, ``_embed``, ``_classify``, ``_engine_dtype``,
``_engine_alive``, ``unavailable_reason`` and ``aclose``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend, EngineGoneError, EngineState
from .model_family import ClassifyInput
from .settings import Settings

logger = logging.getLogger("reranker_server")

# Ray's state of the engine deployment is polled this often; a replica that died is seen within
# about one interval (plus Ray's own health-check period).
_STATUS_INTERVAL_S = 1.0


class RayEngineBackend(Backend):
    """Scores batches on the engine replicas of a Ray Serve app."""

    def __init__(
        self,
        settings: Settings,
        engine: Any,
        *,
        app_name: str,
        deployment_name: str,
        max_attempts: int = 4,
    ) -> None:
        super().__init__(settings)
        self._handle = engine  # a ray.serve.handle.DeploymentHandle of EngineReplica
        self._app_name = app_name
        self._deployment_name = deployment_name
        self._max_attempts = max_attempts
        self.replica_states: dict[str, int] = {}
        self._dtype = settings.dtype
        self._watch: asyncio.Task[None] | None = None

    # ---- engine replicas --------------------------------------------------------------------

    @property
    def replicas_running(self) -> int:
        return self.replica_states.get("RUNNING", 0)

    def _read_states(self) -> dict[str, int]:
        from ray import serve

        app = serve.status().applications.get(self._app_name)
        deployment = app.deployments.get(self._deployment_name) if app else None
        if deployment is None:
            return {}
        return {str(getattr(k, "value", k)): int(v) for k, v in deployment.replica_states.items()}

    async def _watch_replicas(self) -> None:
        while True:
            try:
                self.replica_states = await asyncio.to_thread(self._read_states)
            except Exception:  # noqa: BLE001 - the controller restarting; keep the last count
                logger.warning("could not read the engine deployment's status", exc_info=True)
            await asyncio.sleep(_STATUS_INTERVAL_S)

    async def _call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on an engine replica, again on another when its replica dies."""
        from ray.exceptions import RayActorError

        errors: list[str] = []
        for attempt in range(self._max_attempts):
            if self._ready and not self._engine_alive():
                raise EngineGoneError(self.unavailable_reason())
            response = getattr(self._handle, method).remote(*args)
            pending = asyncio.ensure_future(response)
            try:
                # Ray queues a call while no replica runs; give up on it once Ray says none does.
                while not pending.done():
                    await asyncio.wait({pending}, timeout=_STATUS_INTERVAL_S)
                    if not pending.done() and not self._engine_alive() and self._ready:
                        response.cancel()
                        raise EngineGoneError(self.unavailable_reason())
                return pending.result()
            except RayActorError as exc:
                errors.append(type(exc).__name__)
                logger.warning(
                    "engine replica lost during %s (attempt %d); retrying on another",
                    method,
                    attempt + 1,
                )
                await asyncio.sleep(0.2 * (attempt + 1))
        raise EngineGoneError(f"the engine replicas failed the batch ({', '.join(errors)})")

    # ---- Backend ----------------------------------------------------------------------------

    async def _start(self) -> Any:
        if Path(self.settings.model).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        tokenizer = await asyncio.to_thread(
            AutoTokenizer.from_pretrained,
            self.settings.model,
            trust_remote_code=self.settings.trust_remote_code,
        )
        self._watch = asyncio.create_task(self._watch_replicas(), name="engine-replicas")
        # Waits (in Ray's queue) for the first engine replica to finish loading its model.
        info = await self._handle.info.remote()
        self.max_length = int(info["max_length"])
        self.batch_max_tokens = info["batch_max_tokens"]
        self._dtype = str(info["dtype"])
        return tokenizer

    @property
    def _ready(self) -> bool:
        # While loading (the warm-up batch included) the first replica may not be counted yet.
        return self.state is EngineState.READY

    def _engine_dtype(self) -> str:
        return self._dtype

    def _engine_alive(self) -> bool:
        return self.replicas_running > 0

    def unavailable_reason(self) -> str:
        if self.state is EngineState.READY and self.replicas_running == 0:
            others = ", ".join(f"{n} {s.lower()}" for s, n in self.replica_states.items() if n)
            return "no engine replica is running" + (f" ({others})" if others else "")
        return super().unavailable_reason()

    async def _embed(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        return await self._call("embed", token_ids)  # type: ignore[no-any-return]

    async def _classify(self, encoded: ClassifyInput) -> list[float]:
        return await self._call("classify", encoded)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
