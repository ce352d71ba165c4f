"""The synchronous reranker client."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ._base import _BaseRerankerClient, _CallState
from ._config import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    PATH_HEALTH,
    PATH_INFO,
    auth_headers,
)
from ._error_mapping import error_from_response, error_from_transport
from ._exceptions import RerankerError
from ._models import RerankRequest, RerankRequestLike, RerankResponse, ServerInfo
from ._parsing import decode_json, parse_health, parse_info
from ._planning import (
    NEEDS_FALLBACK,
    _Call,
    _Plan,
    coerce_requests,
    normalize_pairs,
    plan_rerank,
    plan_rerank_batch,
    plan_score_pairs,
)
from ._types import HeaderTypes, JSONObject, PairTypes, SleepFunction, TimeoutTypes

__all__ = ["RerankerClient"]

T = TypeVar("T")


class RerankerClient(_BaseRerankerClient):
    """Synchronous client of the reranker service.

    Built on :class:`httpx.Client` and threads only, so it can be called from a plain script as
    well as from code running inside an event loop (a Jupyter cell, a coroutine): it never
    starts or nests an event loop. One client may be shared by many threads.

    Large calls are split into requests of at most ``reranker_batch_size`` pairs, sent at most
    ``max_concurrency`` at a time (over the client's whole life, not per call) and reassembled in
    the caller's order. Transient failures (connection errors, timeouts, 429, 502, 503, 504) are
    retried with exponential backoff and full jitter, honouring ``Retry-After``, at most
    ``max_retries`` times per request and within ``deadline`` seconds per call.

    Args:
        base_url: Where the service listens.
        timeout: Seconds per HTTP attempt (``None``: only the deadline limits an attempt).
        reranker_batch_size: Most pairs per request; by default ``DEFAULT_BATCH_PAIRS`` (4096)
            or the server's ``limits.max_pairs_per_request`` (read from ``/info`` on first
            need) if that is lower.
        max_concurrency: Most requests in flight at once.
        max_retries: Most retries of one request after transient failures.
        deadline: Overall seconds one call may take, retries included; ``None`` means
            ``DEFAULT_DEADLINE`` (300 s), ``math.inf`` means no limit.
        backoff_base: Ceiling of the first backoff, in seconds; it doubles on every retry.
        backoff_max: Largest backoff ceiling, in seconds (``Retry-After`` may ask for more).
        headers: Extra headers sent with every request.
        api_key: The service's API key, sent as ``Authorization: Bearer <key>``; by default
            ``RERANKER_API_KEY`` from the environment (no header when neither is set). A 401
            answer raises :class:`RerankerAuthenticationError`.
        transport: The ``httpx`` transport to use, e.g. :class:`httpx.MockTransport` in tests.

    Example::

        with RerankerClient("http://localhost:8000") as client:
            response = client.rerank("what is a cat?", ["a small feline", "a large truck"])
            best = response.results[0].index
    """

    def __init__(
        self,
        base_url: str | httpx.URL = DEFAULT_BASE_URL,
        *,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        reranker_batch_size: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        deadline: float | None = None,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        headers: HeaderTypes | None = None,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            timeout=timeout,
            reranker_batch_size=reranker_batch_size,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            deadline=deadline,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers=auth_headers(headers, api_key),
            transport=transport,
            # Keep a connection per worker alive between calls, however many workers there are.
            limits=httpx.Limits(
                max_connections=max(max_concurrency, 100),
                max_keepalive_connections=max(max_concurrency, 20),
            ),
        )
        self._sleep: SleepFunction = time.sleep
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._info_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------
    # Public API

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        max_length: int | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
    ) -> RerankResponse:
        """Rank ``documents`` by relevance to ``query``.

        More documents than ``reranker_batch_size`` are sent in several requests; the results
        are merged, sorted by ``relevance_score`` (best first), their ``index`` refers to the
        position in ``documents``, ``top_n`` applies to the merged list and ``usage`` is summed.
        """
        request = RerankRequest(
            query=query,
            documents=list(documents),
            instruction=instruction,
            max_length=max_length,
            top_n=top_n,
            return_documents=return_documents,
        )
        state = self._new_call()
        return self._execute(plan_rerank(request, self._resolve_batch_size(state)), state)

    def rerank_batch(self, requests: Iterable[RerankRequestLike]) -> list[RerankResponse]:
        """Rerank several queries, each with its own documents; answers in request order.

        ``requests`` holds :class:`RerankRequest` objects or mappings with the same keys. They
        are sent to ``/rerank_batch`` in chunks of at most ``reranker_batch_size`` pairs (a
        request larger than that is split and merged back as in :meth:`rerank`).
        """
        coerced = coerce_requests(requests)
        if not coerced:
            return []
        state = self._new_call()
        return self._execute(plan_rerank_batch(coerced, self._resolve_batch_size(state)), state)

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        pairs: Iterable[PairTypes],
        *,
        instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[float]:
        """Score ``(query_index, document_index)`` pairs; one score per pair, in pair order.

        This is the training-time call: texts are sent once per request and referred to by
        index (``/rerank_batch_simple``); each request carries only the texts its pairs use.
        """
        normalized = normalize_pairs(pairs, len(queries), len(documents))
        if not normalized:
            return []
        state = self._new_call()
        plan = plan_score_pairs(
            queries,
            documents,
            normalized,
            instruction=instruction,
            max_length=max_length,
            batch_size=self._resolve_batch_size(state),
        )
        return self._execute(plan, state)

    def health(self) -> JSONObject:
        """Return the server's health document (``{"status": "ok", ...}``).

        Makes a single attempt, as a probe should report the present state: a server that is
        not ready (503) raises :class:`RerankerUnavailableError` at once.
        """
        return parse_health(self._send("GET", PATH_HEALTH, None, self._new_call(), retry=False))

    def info(self) -> ServerInfo:
        """Return the served model and the server's limits (``GET /info``)."""
        return parse_info(self._send("GET", PATH_INFO, None, self._new_call()))

    def close(self) -> None:
        """Close the connections and the worker threads."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> RerankerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    # I/O

    def _resolve_batch_size(self, state: _CallState) -> int:
        if self._batch_size is None:
            with self._info_lock:
                if self._batch_size is None:
                    return self._batch_size_from(
                        parse_info(self._send("GET", PATH_INFO, None, state))
                    )
        assert self._batch_size is not None
        return self._batch_size

    def _execute(self, plan: _Plan[T], state: _CallState) -> T:
        answers = self._gather(
            [functools.partial(self._send_call, c, state) for c in plan.calls], state
        )
        fallback = self._plan_fallbacks(plan.calls, answers)
        if fallback is not None:
            sub_answers = self._gather(
                [functools.partial(self._send_call, c, state) for c in fallback.calls], state
            )
            answers = fallback.assemble(sub_answers)
        return plan.assemble(answers)

    def _send_call(self, call: _Call, state: _CallState) -> Any:
        if self._known_unsupported(call):
            return NEEDS_FALLBACK
        try:
            data = self._send("POST", call.path, call.body, state)
        except RerankerError as exc:
            if self._falls_back(call, exc):
                return NEEDS_FALLBACK
            raise
        return self._accept(call, data)

    def _send(
        self,
        method: str,
        path: str,
        body: JSONObject | None,
        state: _CallState,
        *,
        retry: bool = True,
    ) -> Any:
        attempt = 0
        while True:
            timeout = self._start_attempt(state)
            try:
                response = self._http.request(method, path, json=body, timeout=timeout)
            except httpx.TransportError as exc:
                error = error_from_transport(exc, method, path)
            else:
                if response.is_success:
                    return decode_json(response, method, path)
                error = error_from_response(response, method, path)
            self._sleep(self._retry_delay(attempt, error, state, retry=retry))
            attempt += 1

    def _gather(self, tasks: list[Callable[[], T]], state: _CallState) -> list[T]:
        if len(tasks) <= 1 or self._max_concurrency == 1:
            return [task() for task in tasks]
        pool = self._get_pool()
        futures: list[Future[T]] = [pool.submit(task) for task in tasks]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            # Fail fast: requests not started are dropped, running ones stop at their next
            # attempt instead of holding the caller through their backoff.
            state.cancelled = True
            for future in pending:
                future.cancel()
            failed.result()
        return [future.result() for future in futures]

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                # One pool per client, so max_concurrency bounds all calls together, even
                # calls made from several threads at once.
                self._pool = ThreadPoolExecutor(
                    max_workers=self._max_concurrency, thread_name_prefix="reranker-client"
                )
            return self._pool
