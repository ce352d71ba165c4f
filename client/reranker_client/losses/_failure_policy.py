"""What a reranker-guided loss does when the service fails: start-up check, on_reranker_error.

A training run must not die an hour in because an engine reloads (``503`` for minutes), nor
train silently without its guide. The loss checks the service once when it is built, and each
step's call follows one policy: raise, wait the outage out (within a budget), or skip the step
(with a warning, counted, and only up to a share of the steps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .._client import RerankerClient
from .._exceptions import RerankerAuthenticationError, RerankerError

logger = logging.getLogger(__name__)

OnError = Literal["raise", "wait", "skip"]
T = TypeVar("T")

#: Steps before ``max_skipped_share`` is enforced: one early failure is not yet a share.
_MIN_STEPS_FOR_SHARE = 10
#: Longest pause between two attempts of a waiting step, in seconds.
_MAX_PAUSE = 30.0


def public_url(url: str) -> str:
    """``url`` without credentials, query or fragment (what may go into logs and model cards)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_service(client: RerankerClient) -> dict[str, str]:
    """Check ``/health`` and ``/info``; return the guide's model, family and version.

    Raises:
        RerankerAuthenticationError: The service refuses the key (its message says how to pass
            one); waiting would not help, so it is not reported as "not ready".
        RuntimeError: The service is not reachable or not ready; the message says how to fix it.
    """
    url = public_url(client.base_url)
    try:
        client.health()
        info = client.info()
    except RerankerAuthenticationError:
        raise
    except RerankerError as exc:
        raise RuntimeError(
            f"The reranker service at {url} is not ready: {exc}. Start it (reranker-server), "
            "wait until GET /health answers 200, check the URL and the API key "
            "(api_key=... or RERANKER_API_KEY), or pass check_reranker=False to skip this check."
        ) from exc
    return {"model": info.model, "family": info.family, "version": info.version}


class FailurePolicy:
    """Runs one step's reranker call under ``on_reranker_error`` and counts what happened."""

    def __init__(self, on_error: OnError, wait_timeout: float, max_skipped_share: float) -> None:
        if on_error not in ("raise", "wait", "skip"):
            raise ValueError(
                f"on_reranker_error must be 'raise', 'wait' or 'skip', got {on_error!r}."
            )
        if wait_timeout <= 0:
            raise ValueError(f"reranker_wait_timeout must be positive, got {wait_timeout}.")
        if not 0.0 <= max_skipped_share <= 1.0:
            raise ValueError(f"max_skipped_share must be in [0, 1], got {max_skipped_share}.")
        self.on_error: OnError = on_error
        self.wait_timeout = wait_timeout
        self.max_skipped_share = max_skipped_share
        self.steps = 0
        self.skipped = 0
        #: Failures and seconds waited in the latest step (before its successful call, or until it
        #: was skipped).
        self.last_failures = 0
        self.last_waited = 0.0
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    def run(self, call: Callable[..., T], *args: Any, training: bool, **kwargs: Any) -> T | None:
        """``call(*args, **kwargs)``, or ``None`` when the step is skipped."""
        if training:
            self.steps += 1
        self.last_failures, self.last_waited = 0, 0.0
        started = self._clock()
        pause = 1.0
        while True:
            try:
                return call(*args, **kwargs)
            except RerankerError as exc:
                self.last_failures += 1
                if self.on_error == "raise":
                    raise
                if self.on_error == "skip":
                    # The failed call's time was spent waiting for the reranker too.
                    self.last_waited = self._clock() - started
                    self._skip(exc, training)
                    return None
                waited = self._clock() - started
                if waited + pause > self.wait_timeout:
                    raise RuntimeError(
                        f"The reranker kept failing for {waited:.0f}s, longer than "
                        f"reranker_wait_timeout={self.wait_timeout:.0f}s: {exc}"
                    ) from exc
                logger.warning("Reranker call failed (%s); retrying in %.0fs", exc, pause)
                self._sleep(pause)
                self.last_waited = self._clock() - started
                pause = min(pause * 2.0, _MAX_PAUSE)

    def _skip(self, exc: RerankerError, training: bool) -> None:
        if not training:
            raise exc
        self.skipped += 1
        share = self.skipped / self.steps
        logger.warning(
            "Reranker call failed (%s); step skipped (%d of %d steps so far).",
            exc,
            self.skipped,
            self.steps,
        )
        if self.steps >= _MIN_STEPS_FOR_SHARE and share > self.max_skipped_share:
            raise RuntimeError(
                f"{self.skipped} of {self.steps} steps were skipped because the reranker failed, "
                f"more than max_skipped_share={self.max_skipped_share:.0%}; last error: {exc}"
            ) from exc
