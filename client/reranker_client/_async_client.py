"""The asynchronous reranker client."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
from ._types import AsyncSleepFunction, HeaderTypes, JSONObject, PairTypes, TimeoutTypes

__all__ = ["AsyncRerankerClient"]

T = TypeVar("T")


class AsyncRerankerClient(_BaseRerankerClient):
    """Asynchronous client of the reranker service, the twin of :class:`RerankerClient`.

    Built on :class:`httpx.AsyncClient`; split requests run as tasks, at most
    ``max_concurrency`` in flight at once over the client's whole life. Use it from one event
    loop. The arguments, splitting, retries and errors are those of :class:`RerankerClient`.

    Example::

        async with AsyncRerankerClient("http://localhost:8000") as client:
            scores = await client.score_pairs(["q"], ["d1", "d2"], [(0, 0), (0, 1)])
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
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            headers=auth_headers(headers, api_key),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max(max_concurrency, 100),
                max_keepalive_connections=max(max_concurrency, 20),
            ),
        )
        self._sleep: AsyncSleepFunction = asyncio.sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._info_lock = asyncio.Lock()

    # ----------------------------------------------------------------------------------------
    # Public API

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        max_length: int | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
    ) -> RerankResponse:
        """Rank ``documents`` by relevance to ``query``; see :meth:`RerankerClient.rerank`."""
        request = RerankRequest(
            query=query,
            documents=list(documents),
            instruction=instruction,
            max_length=max_length,
            top_n=top_n,
            return_documents=return_documents,
        )
        state = self._new_call()
        return await self._execute(
            plan_rerank(request, await self._resolve_batch_size(state)), state
        )

    async def rerank_batch(self, requests: Iterable[RerankRequestLike]) -> list[RerankResponse]:
        """Rerank several queries; see :meth:`RerankerClient.rerank_batch`."""
        coerced = coerce_requests(requests)
        if not coerced:
            return []
        state = self._new_call()
        return await self._execute(
            plan_rerank_batch(coerced, await self._resolve_batch_size(state)), state
        )

    async def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        pairs: Iterable[PairTypes],
        *,
        instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[float]:
        """Score ``(query_index, document_index)`` pairs in pair order; see
        :meth:`RerankerClient.score_pairs`."""
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
            batch_size=await self._resolve_batch_size(state),
        )
        return await self._execute(plan, state)

    async def health(self) -> JSONObject:
        """Return the server's health document; one attempt, see :meth:`RerankerClient.health`."""
        data = await self._send("GET", PATH_HEALTH, None, self._new_call(), retry=False)
        return parse_health(data)

    async def info(self) -> ServerInfo:
        """Return the served model and the server's limits (``GET /info``)."""
        return parse_info(await self._send("GET", PATH_INFO, None, self._new_call()))

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRerankerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------------------------------
    # I/O

    async def _resolve_batch_size(self, state: _CallState) -> int:
        if self._batch_size is None:
            async with self._info_lock:
                if self._batch_size is None:
                    data = await self._send("GET", PATH_INFO, None, state)
                    return self._batch_size_from(parse_info(data))
        assert self._batch_size is not None
        return self._batch_size

    async def _execute(self, plan: _Plan[T], state: _CallState) -> T:
        answers = await self._gather(
            [functools.partial(self._send_call, c, state) for c in plan.calls]
        )
        fallback = self._plan_fallbacks(plan.calls, answers)
        if fallback is not None:
            sub_answers = await self._gather(
                [functools.partial(self._send_call, c, state) for c in fallback.calls]
            )
            answers = fallback.assemble(sub_answers)
        return plan.assemble(answers)

    async def _send_call(self, call: _Call, state: _CallState) -> Any:
        if self._known_unsupported(call):
            return NEEDS_FALLBACK
        try:
            data = await self._send("POST", call.path, call.body, state)
        except RerankerError as exc:
            if self._falls_back(call, exc):
                return NEEDS_FALLBACK
            raise
        return self._accept(call, data)

    async def _send(
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
                response = await self._http.request(method, path, json=body, timeout=timeout)
            except httpx.TransportError as exc:
                error = error_from_transport(exc, method, path)
            else:
                if response.is_success:
                    return decode_json(response, method, path)
                error = error_from_response(response, method, path)
            await self._sleep(self._retry_delay(attempt, error, state, retry=retry))
            attempt += 1

    async def _gather(self, tasks: list[Callable[[], Awaitable[T]]]) -> list[T]:
        async def bounded(task: Callable[[], Awaitable[T]]) -> T:
            async with self._semaphore:
                return await task()

        if len(tasks) == 1:
            return [await bounded(tasks[0])]
        running = [asyncio.ensure_future(bounded(task)) for task in tasks]
        try:
            return list(await asyncio.gather(*running))
        except BaseException:
            # Fail fast, and leave no orphan task behind to fail unobserved later.
            for future in running:
                future.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
