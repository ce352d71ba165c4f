"""The state and decisions the sync and async clients share (everything but the I/O).

The I/O twins in ``_client.py`` and ``_async_client.py`` only send a call's :class:`_Plan`, sleep
between retries and run requests side by side; the decisions (how to split, when to retry, how long
to wait, which error to raise, when to fall back from a batch endpoint) are made here and in the
modules it imports, so both clients behave the same.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._config import DEFAULT_BATCH_PAIRS, DEFAULT_DEADLINE, FALLBACK_STATUS_CODES, PATH_INFO
from ._exceptions import RerankerError, RerankerResponseError, RerankerTimeoutError
from ._models import ServerInfo
from ._planning import NEEDS_FALLBACK, _Call, _Plan
from ._retry import _is_retryable, _RetryPolicy
from ._stats import ClientStats
from ._types import ClockFunction, TimeoutTypes


class _CallCancelled(Exception):
    """A sibling request of the same call failed; the remaining ones stop early."""


@dataclass
class _CallState:
    """What the requests of one client call share."""

    deadline_at: float
    cancelled: bool = False


class _BaseRerankerClient:
    """State and decisions shared by :class:`RerankerClient` and :class:`AsyncRerankerClient`.

    ``_sleep``, ``_clock`` and ``_random`` are instance attributes so tests (or callers with
    special needs) can replace them: the twins sleep with ``self._sleep`` between retries.
    """

    _clock: ClockFunction
    _random: Callable[[], float]
    #: The ``httpx.Client`` or ``httpx.AsyncClient``, created by the I/O twin.
    _http: Any

    def __init__(
        self,
        *,
        timeout: TimeoutTypes,
        reranker_batch_size: int | None,
        max_concurrency: int,
        max_retries: int,
        deadline: float | None,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None, got {timeout}")
        if reranker_batch_size is not None and reranker_batch_size < 1:
            raise ValueError(f"reranker_batch_size must be >= 1, got {reranker_batch_size}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if deadline is not None and deadline <= 0:
            raise ValueError(f"deadline must be positive or None, got {deadline}")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")
        self.stats = ClientStats()
        self._timeout = timeout
        self._batch_size = reranker_batch_size
        self._max_concurrency = max_concurrency
        self._retry_policy = _RetryPolicy(max_retries, backoff_base, backoff_max)
        self._deadline = DEFAULT_DEADLINE if deadline is None else float(deadline)
        self._unsupported_paths: set[str] = set()
        self._clock = time.monotonic
        self._random = random.random

    @property
    def base_url(self) -> str:
        """Where the service listens."""
        return str(self._http.base_url).rstrip("/")

    @property
    def reranker_batch_size(self) -> int | None:
        """Most pairs per request; ``None`` until read from the server's ``/info``."""
        return self._batch_size

    @property
    def unsupported_endpoints(self) -> frozenset[str]:
        """Batch endpoints this server lacks; calls to them go to ``/rerank`` instead."""
        return frozenset(self._unsupported_paths)

    def _new_call(self) -> _CallState:
        return _CallState(deadline_at=self._clock() + self._deadline)

    def _start_attempt(self, state: _CallState) -> float | None:
        """Check the call may go on, count the request, and return its timeout."""
        if state.cancelled:
            raise _CallCancelled
        remaining = state.deadline_at - self._clock()
        if remaining <= 0:
            raise RerankerTimeoutError(f"deadline of {self._deadline:g}s exceeded")
        self.stats._add(requests=1)
        if self._timeout is None:
            return None if math.isinf(remaining) else remaining
        return min(self._timeout, remaining)

    def _retry_delay(
        self, attempt: int, error: RerankerError, state: _CallState, *, retry: bool = True
    ) -> float:
        """Return how long to sleep before retrying after ``error``, or raise to give up."""
        policy = self._retry_policy
        if not retry or not _is_retryable(error) or attempt >= policy.max_retries:
            raise error
        delay = policy.backoff(attempt, error.retry_after, self._random)
        if self._clock() + delay >= state.deadline_at:
            raise RerankerTimeoutError(
                f"deadline of {self._deadline:g}s exceeded after {attempt + 1} attempts; "
                f"last error: {error}",
                status_code=error.status_code,
                error=error.error,
                detail=error.detail,
            ) from error
        self.stats._add(retries=1)
        return delay

    def _accept(self, call: _Call, data: Any) -> Any:
        value, usage = call.parse(data)
        self.stats._add(pairs_sent=call.pairs, cache_hits=usage.cache_hits)
        return value

    def _known_unsupported(self, call: _Call) -> bool:
        return call.fallback is not None and call.path in self._unsupported_paths

    def _falls_back(self, call: _Call, error: RerankerError) -> bool:
        """Whether ``error`` says the call's batch endpoint is missing (remembered if so)."""
        if call.fallback is None or error.status_code not in FALLBACK_STATUS_CODES:
            return False
        self._unsupported_paths.add(call.path)
        return True

    def _plan_fallbacks(self, calls: list[_Call], answers: list[Any]) -> _Plan[list[Any]] | None:
        """Plan the ``/rerank`` calls replacing the batch calls that need a fallback.

        The returned plan's ``assemble`` gives ``answers`` with the gaps filled in.
        """
        todo = [i for i, answer in enumerate(answers) if answer is NEEDS_FALLBACK]
        if not todo:
            return None
        fallbacks = []
        for i in todo:
            make_fallback = calls[i].fallback
            assert make_fallback is not None  # only batch calls answer NEEDS_FALLBACK
            fallbacks.append(make_fallback())
        self.stats._add(fallbacks=len(todo))

        def assemble(sub_answers: list[Any]) -> list[Any]:
            filled = list(answers)
            position = 0
            for i, fallback in zip(todo, fallbacks, strict=True):
                count = len(fallback.calls)
                filled[i] = fallback.combine(sub_answers[position : position + count])
                position += count
            return filled

        return _Plan([call for fallback in fallbacks for call in fallback.calls], assemble)

    def _batch_size_from(self, info: ServerInfo) -> int:
        limit = info.limits.max_pairs_per_request
        if limit < 1:
            raise RerankerResponseError(f"GET {PATH_INFO}: max_pairs_per_request is {limit}")
        # The server's limit is what it tolerates, not what is fast: a request that large is one
        # long wait with nothing in flight beside it. Smaller requests keep several in flight.
        size = min(limit, DEFAULT_BATCH_PAIRS)
        self._batch_size = size
        return size
