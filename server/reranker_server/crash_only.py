"""Crash-only start: a server whose engine cannot run exits, so that restart policies act.

An engine that fails to start (a bad or truncated model, a missing library, too little memory)
gets one log line with its root cause and the process exits with ``ENGINE_START_FAILED`` (3),
the way ``vllm serve`` exits non-zero. An in-process engine that dies after start (its core
process killed, or hung past ``ENGINE_BATCH_TIMEOUT_S``) exits with ``ENGINE_DIED`` (1).
Kubernetes, Docker's restart policy and systemd then restart the server; a process that stayed
up answering 503 would never be restarted, since /livez kept answering 200.

``RERANKER_STAY_UP_WITHOUT_ENGINE=true`` keeps the old behaviour: stay up, /health answers 503
with the reason. Engines in other processes (``ENGINE_URLS``, Ray replicas, a test's fake) are
not watched after start (``Backend.engine_in_process``): restarting this process would not bring
them back; the pool fails over between them, Ray replaces its replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from .backend import Backend, EngineState

logger = logging.getLogger("reranker_server")

ENGINE_START_FAILED = 3
ENGINE_DIED = 1


def _kill_children() -> None:
    """SIGKILL this process's descendants: a hung engine core would outlive the exit."""
    try:
        import psutil  # type: ignore[import-untyped]

        for child in psutil.Process().children(recursive=True):
            try:
                child.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


def _exit(code: int) -> None:
    _kill_children()
    logging.shutdown()  # flush the line that says why
    os._exit(code)


class CrashOnlyWatch:
    """Watches the engine from the app's lifespan and exits the process when it cannot serve."""

    def __init__(
        self,
        backend: Backend,
        *,
        watch_after_start: bool,
        interval_s: float = 1.0,
        exit: Callable[[int], None] = _exit,
    ) -> None:
        self.backend = backend
        self.watch_after_start = watch_after_start
        self.interval_s = interval_s
        self._exit = exit  # injectable so that in-process tests see the code instead of dying

    async def run(self, loading: asyncio.Task[None]) -> None:
        """Wait for the engine to load (``Backend.start`` never raises), then watch it."""
        await loading
        b = self.backend
        if b.state is EngineState.FAILED:
            logger.critical(
                "%s; exiting with status %d (RERANKER_STAY_UP_WITHOUT_ENGINE=true stays up)",
                b.error,
                ENGINE_START_FAILED,
            )
            self._exit(ENGINE_START_FAILED)
            return
        if not self.watch_after_start:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            if not b.alive:  # checks the engine core's liveness; marks it dead with the reason
                logger.critical(
                    "engine dead: %s; exiting with status %d "
                    "(RERANKER_STAY_UP_WITHOUT_ENGINE=true stays up)",
                    b.error or b.state.value,
                    ENGINE_DIED,
                )
                self._exit(ENGINE_DIED)
                return
