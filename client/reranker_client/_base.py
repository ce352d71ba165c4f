"""Everything the sync and async clients share that does no I/O.

A client call is turned into a :class:`_Plan`: a list of HTTP requests (:class:`_Call`, each
small enough for the server) and a function that puts their answers back together in the
caller's order. The I/O twins in ``_client.py`` and ``_async_client.py`` only send the calls,
sleep between retries and run calls side by side; the decisions (how to split, when to retry,
how long to wait, which error to raise, when to fall back from a batch endpoint) are made here so
both clients behave the same.
"""

from __future__ import annotations

import email.utils
import math
import operator
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

import httpx

from ._exceptions import (
    RerankerBadRequestError,
    RerankerError,
    RerankerOverloadedError,
    RerankerResponseError,
    RerankerServerError,
    RerankerTimeoutError,
    RerankerUnavailableError,
)
from ._models import (
    RerankRequest,
    RerankRequestLike,
    RerankResponse,
    RerankResult,
    ServerInfo,
    ServerLimits,
    Usage,
)
from ._types import ClockFunction, JSONObject, PairTypes, TimeoutTypes

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "ClientStats",
]

T = TypeVar("T")

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 60.0
#: Overall seconds one client call may take, retries and split requests included.
DEFAULT_DEADLINE = 300.0
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 30.0

PATH_RERANK = "/rerank"
PATH_RERANK_BATCH = "/rerank_batch"
PATH_RERANK_BATCH_SIMPLE = "/rerank_batch_simple"
PATH_HEALTH = "/health"
PATH_INFO = "/info"

#: Statuses that mean "try again later"; every other 4xx is the caller's mistake.
RETRYABLE_STATUS_CODES = frozenset({429, 502, 503, 504})
#: Statuses that mean a batch endpoint does not exist on this server (an older version).
FALLBACK_STATUS_CODES = frozenset({404, 405, 501})

# Enough for any realistic backoff ceiling; keeps 2 ** attempt from overflowing a float.
_MAX_BACKOFF_EXPONENT = 62


# --------------------------------------------------------------------------------------------
# Counters


@dataclass
class ClientStats:
    """Counters of what a client has done, for logging.

    ``client.stats`` is updated as calls progress and may be read at any time; use
    :meth:`snapshot` for a consistent copy, subtract two snapshots for the work done in between,
    or :meth:`reset` to take the counts and start again from zero (e.g. once per training step).
    Updates are made under a lock, so the counters are exact even when the sync client is used
    from many threads.

    Attributes:
        requests: HTTP requests sent, retries and ``/info`` / ``/health`` included.
        pairs_sent: Query-document pairs in scoring requests the server answered; a pair whose
            request was retried is counted once.
        cache_hits: Pairs the server answered from its cache (from its ``usage``).
        retries: Attempts repeated after a transient failure.
        fallbacks: Batch requests that were sent as individual ``/rerank`` calls instead,
            because the server lacks the batch endpoint.
    """

    requests: int = 0
    pairs_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    fallbacks: int = 0
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain ``dict`` (e.g. for a metrics logger)."""
        with self._lock:
            return self._counts()

    def snapshot(self) -> ClientStats:
        """Return a consistent copy of the counters."""
        with self._lock:
            return ClientStats(**self._counts())

    def reset(self) -> ClientStats:
        """Set every counter to zero and return their values from just before."""
        with self._lock:
            before = ClientStats(**self._counts())
            for name in self._names():
                setattr(self, name, 0)
        return before

    def __sub__(self, other: ClientStats) -> ClientStats:
        mine, theirs = self.as_dict(), other.as_dict()
        return ClientStats(**{name: mine[name] - theirs[name] for name in mine})

    def _add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def _counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self._names()}

    @staticmethod
    def _names() -> list[str]:
        return [f.name for f in fields(ClientStats) if f.init]


# --------------------------------------------------------------------------------------------
# Retry policy


@dataclass(frozen=True)
class _RetryPolicy:
    max_retries: int
    backoff_base: float
    backoff_max: float

    def backoff(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        # Full jitter: clients that failed together (an overload, a restart) must not come back
        # together, or they recreate the overload on every retry.
        ceiling = min(
            self.backoff_max, self.backoff_base * 2.0 ** min(attempt, _MAX_BACKOFF_EXPONENT)
        )
        delay = rand() * ceiling
        if retry_after is not None:
            # The server knows when it will have room again; waiting less is wasted work for it.
            delay = max(delay, retry_after)
        return delay


def _is_retryable(error: RerankerError) -> bool:
    return isinstance(error, (RerankerUnavailableError, RerankerTimeoutError))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


# --------------------------------------------------------------------------------------------
# Errors and response decoding


def _format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        # FastAPI/pydantic validation errors: keep the location, it says which field was wrong.
        problems = []
        for item in detail:
            if isinstance(item, Mapping) and "msg" in item:
                location = ".".join(str(part) for part in item.get("loc", ()))
                problems.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
            else:
                problems.append(str(item))
        return "; ".join(problems)
    return "" if detail is None else str(detail)


def _error_fields(response: httpx.Response) -> tuple[str | None, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = body.get("error")
        return (None if error is None else str(error)), body.get("detail")
    # Not our server's JSON (e.g. a proxy's HTML page): keep enough text to diagnose it.
    return response.reason_phrase or None, response.text[:500] or None


def error_from_response(response: httpx.Response, method: str, path: str) -> RerankerError:
    """Map a non-2xx answer to the most specific :class:`RerankerError`."""
    status = response.status_code
    error, detail = _error_fields(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    summary = ": ".join(part for part in (error, _format_detail(detail)) if part)
    message = f"{method} {path} -> {status}" + (f" {summary}" if summary else "")
    cls: type[RerankerError]
    if status == 429:
        cls = RerankerOverloadedError
    elif status in RETRYABLE_STATUS_CODES:
        cls = RerankerUnavailableError
    elif 400 <= status < 500:
        cls = RerankerBadRequestError
    elif 500 <= status < 600:
        cls = RerankerServerError
    else:
        cls = RerankerResponseError
    return cls(message, status_code=status, error=error, detail=detail, retry_after=retry_after)


def error_from_transport(exc: httpx.TransportError, method: str, path: str) -> RerankerError:
    """Map an ``httpx`` transport failure to a :class:`RerankerError` chained to it."""
    cls: type[RerankerError]
    if isinstance(exc, httpx.TimeoutException):
        cls, what = RerankerTimeoutError, "timed out"
    elif isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        # RemoteProtocolError is what a server restarting mid-response looks like.
        cls, what = RerankerUnavailableError, "connection failed"
    else:
        cls, what = RerankerError, "could not be sent"
    error = cls(f"{method} {path} {what}: {type(exc).__name__}: {exc}")
    # The error may only be raised after further attempts; keep the cause with it until then.
    error.__cause__ = exc
    return error


def decode_json(response: httpx.Response, method: str, path: str) -> Any:
    """Decode a 2xx answer's JSON body."""
    try:
        return response.json()
    except ValueError as exc:
        raise RerankerResponseError(
            f"{method} {path} -> {response.status_code}: body is not JSON: {exc}",
            status_code=response.status_code,
        ) from exc


def _malformed(path: str, problem: str) -> RerankerResponseError:
    return RerankerResponseError(f"POST {path}: response does not match the wire format: {problem}")


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _parse_usage(data: Any) -> Usage:
    if data is None:
        return Usage()
    return Usage(pairs=_as_int(data.get("pairs", 0)), cache_hits=_as_int(data.get("cache_hits", 0)))


def parse_rerank_response(data: Any, n_documents: int, path: str = PATH_RERANK) -> RerankResponse:
    """Parse one rerank answer for a request that carried ``n_documents`` documents."""
    try:
        results = [
            RerankResult(
                index=_as_int(item["index"]),
                relevance_score=_as_float(item["relevance_score"]),
                raw_score=None if item.get("raw_score") is None else _as_float(item["raw_score"]),
                document=item.get("document"),
            )
            for item in data["results"]
        ]
        response = RerankResponse(
            model=str(data["model"]), results=results, usage=_parse_usage(data.get("usage"))
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise _malformed(path, repr(exc)) from exc
    for result in results:
        if not 0 <= result.index < n_documents:
            raise _malformed(path, f"result index {result.index} out of range({n_documents})")
    return response


def parse_scores(data: Any, n_pairs: int) -> tuple[list[float], Usage]:
    """Parse a ``/rerank_batch_simple`` answer for ``n_pairs`` pairs."""
    path = PATH_RERANK_BATCH_SIMPLE
    try:
        scores = [_as_float(score) for score in data["scores"]]
        usage = _parse_usage(data.get("usage"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise _malformed(path, repr(exc)) from exc
    if len(scores) != n_pairs:
        raise _malformed(path, f"{len(scores)} scores for {n_pairs} pairs")
    return scores, usage


def parse_info(data: Any) -> ServerInfo:
    """Parse a ``GET /info`` answer."""
    try:
        limits = data["limits"]
        return ServerInfo(
            model=str(data["model"]),
            family=str(data["family"]),
            version=str(data["version"]),
            limits=ServerLimits(
                max_pairs_per_request=_as_int(limits["max_pairs_per_request"]),
                max_length=_as_int(limits["max_length"]),
                batch_max_pairs=_as_int(limits["batch_max_pairs"]),
                # None where the engine does not report its token budget (remote engines).
                batch_max_tokens=(
                    None
                    if limits.get("batch_max_tokens") is None
                    else _as_int(limits["batch_max_tokens"])
                ),
                batch_max_wait_ms=_as_float(limits["batch_max_wait_ms"]),
            ),
            raw=dict(data),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise RerankerResponseError(
            f"GET {PATH_INFO}: response does not match the wire format: {exc!r}"
        ) from exc


def parse_health(data: Any) -> JSONObject:
    """Check that a ``GET /health`` answer is a JSON object and return it."""
    if not isinstance(data, dict):
        raise RerankerResponseError(f"GET {PATH_HEALTH}: expected a JSON object, got {data!r}")
    return data


# --------------------------------------------------------------------------------------------
# Plans: splitting a call into requests and putting the answers back together


class _NeedsFallback:
    """Marks the answer of a batch call that has to be redone with individual ``/rerank`` calls."""


NEEDS_FALLBACK = _NeedsFallback()


@dataclass
class _Fallback:
    calls: list[_Call]
    combine: Callable[[list[Any]], Any]


@dataclass
class _Call:
    """One HTTP request of a plan.

    ``parse`` turns the decoded answer into (value for the plan, usage); ``fallback``, set on
    batch calls, replaces the call by individual ``/rerank`` calls when the endpoint is missing.
    """

    path: str
    body: JSONObject
    pairs: int
    parse: Callable[[Any], tuple[Any, Usage]]
    fallback: Callable[[], _Fallback] | None = None


@dataclass
class _Plan(Generic[T]):
    calls: list[_Call]
    assemble: Callable[[list[Any]], T]


def _rerank_call(request: RerankRequest) -> _Call:
    n_documents = len(request.documents)

    def parse(data: Any) -> tuple[RerankResponse, Usage]:
        response = parse_rerank_response(data, n_documents)
        return response, response.usage

    return _Call(PATH_RERANK, request.to_dict(), n_documents, parse)


def _split_request(request: RerankRequest, batch_size: int) -> list[tuple[int, RerankRequest]]:
    """Split a request's documents into parts of at most ``batch_size``, with their offsets."""
    documents = list(request.documents)
    if len(documents) <= batch_size:
        return [(0, replace(request, documents=documents))]
    parts = []
    for start in range(0, len(documents), batch_size):
        chunk = documents[start : start + batch_size]
        # The overall top n is among the union of every part's top n, so parts may be trimmed
        # too; a top_n not below the part's size would only risk a 422 for no gain.
        top_n = request.top_n if request.top_n is not None and request.top_n < len(chunk) else None
        parts.append((start, replace(request, documents=chunk, top_n=top_n)))
    return parts


def _merge_parts(request: RerankRequest, parts: list[tuple[int, RerankResponse]]) -> RerankResponse:
    """Merge the answers for the parts of one split request, as if it had been sent whole."""
    if len(parts) == 1 and parts[0][0] == 0:
        return parts[0][1]
    results = [
        replace(result, index=result.index + offset)
        for offset, response in parts
        for result in response.results
    ]
    results.sort(key=lambda result: (-result.relevance_score, result.index))
    if request.top_n is not None:
        results = results[: request.top_n]
    usage = sum((response.usage for _, response in parts), Usage())
    return RerankResponse(model=parts[0][1].model, results=results, usage=usage)


def _pack(sizes: Sequence[int], limit: int) -> list[range]:
    """Group consecutive items into runs whose sizes add up to at most ``limit``."""
    runs: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            runs.append(range(start, i))
            start, total = i, 0
        total += size
    if sizes:
        runs.append(range(start, len(sizes)))
    return runs


def plan_rerank(request: RerankRequest, batch_size: int) -> _Plan[RerankResponse]:
    """Plan ``rerank``: one ``/rerank`` call per part of at most ``batch_size`` documents."""
    parts = _split_request(request, batch_size)
    offsets = [offset for offset, _ in parts]

    def assemble(responses: list[Any]) -> RerankResponse:
        return _merge_parts(request, list(zip(offsets, responses, strict=True)))

    return _Plan([_rerank_call(part) for _, part in parts], assemble)


def _rerank_batch_call(requests: list[RerankRequest]) -> _Call:
    sizes = [len(request.documents) for request in requests]

    def parse(data: Any) -> tuple[list[RerankResponse], Usage]:
        try:
            items = data["results"]
            count = len(items)
        except (KeyError, TypeError) as exc:
            raise _malformed(PATH_RERANK_BATCH, repr(exc)) from exc
        if count != len(requests):
            raise _malformed(PATH_RERANK_BATCH, f"{count} results for {len(requests)} requests")
        responses = [
            parse_rerank_response(item, size, PATH_RERANK_BATCH)
            for item, size in zip(items, sizes, strict=True)
        ]
        return responses, sum((response.usage for response in responses), Usage())

    def fallback() -> _Fallback:
        return _Fallback([_rerank_call(request) for request in requests], list)

    body = {"requests": [request.to_dict() for request in requests]}
    return _Call(PATH_RERANK_BATCH, body, sum(sizes), parse, fallback)


def plan_rerank_batch(
    requests: list[RerankRequest], batch_size: int
) -> _Plan[list[RerankResponse]]:
    """Plan ``rerank_batch``: ``/rerank_batch`` calls of at most ``batch_size`` pairs each.

    A request with more documents than ``batch_size`` is split first and merged back afterwards,
    so every call stays within the limit.
    """
    parts = [
        (owner, offset, part)
        for owner, request in enumerate(requests)
        for offset, part in _split_request(request, batch_size)
    ]
    runs = _pack([len(part.documents) for _, _, part in parts], batch_size)
    calls = [_rerank_batch_call([parts[i][2] for i in run]) for run in runs]

    def assemble(answers: list[Any]) -> list[RerankResponse]:
        flat = [response for answer in answers for response in answer]
        grouped: list[list[tuple[int, RerankResponse]]] = [[] for _ in requests]
        for (owner, offset, _), response in zip(parts, flat, strict=True):
            grouped[owner].append((offset, response))
        return [
            _merge_parts(request, group) for request, group in zip(requests, grouped, strict=True)
        ]

    return _Plan(calls, assemble)


def _score_fallback(
    queries: Sequence[str],
    documents: Sequence[str],
    pairs: list[tuple[int, int]],
    instruction: str | None,
    max_length: int | None,
) -> _Fallback:
    # One /rerank per distinct query, with the distinct documents it is paired with.
    groups: dict[str, dict[str, int]] = {}
    for q, d in pairs:
        docs = groups.setdefault(queries[q], {})
        docs.setdefault(documents[d], len(docs))
    calls = [
        _rerank_call(
            RerankRequest(
                query=query, documents=list(docs), instruction=instruction, max_length=max_length
            )
        )
        for query, docs in groups.items()
    ]

    def combine(responses: list[Any]) -> list[float]:
        scores: dict[str, list[float]] = {}
        for (query, docs), response in zip(groups.items(), responses, strict=True):
            by_index = {result.index: result.relevance_score for result in response.results}
            if len(by_index) != len(docs):
                raise _malformed(PATH_RERANK, f"{len(by_index)} results for {len(docs)} documents")
            scores[query] = [by_index[i] for i in range(len(docs))]
        return [scores[queries[q]][groups[queries[q]][documents[d]]] for q, d in pairs]

    return _Fallback(calls, combine)


def _score_call(
    queries: Sequence[str],
    documents: Sequence[str],
    pairs: list[tuple[int, int]],
    instruction: str | None,
    max_length: int | None,
) -> _Call:
    # Only the texts these pairs use, each once (keyed by text, so duplicates collapse too).
    local_queries: dict[str, int] = {}
    local_documents: dict[str, int] = {}
    local_pairs = [
        [
            local_queries.setdefault(queries[q], len(local_queries)),
            local_documents.setdefault(documents[d], len(local_documents)),
        ]
        for q, d in pairs
    ]
    body = {
        "instruction": instruction,
        "max_length": max_length,
        "queries": list(local_queries),
        "documents": list(local_documents),
        "pairs": local_pairs,
    }

    def parse(data: Any) -> tuple[list[float], Usage]:
        return parse_scores(data, len(pairs))

    def fallback() -> _Fallback:
        return _score_fallback(queries, documents, pairs, instruction, max_length)

    return _Call(PATH_RERANK_BATCH_SIMPLE, body, len(pairs), parse, fallback)


def plan_score_pairs(
    queries: Sequence[str],
    documents: Sequence[str],
    pairs: list[tuple[int, int]],
    *,
    instruction: str | None,
    max_length: int | None,
    batch_size: int,
) -> _Plan[list[float]]:
    """Plan ``score_pairs``: ``/rerank_batch_simple`` calls of at most ``batch_size`` pairs."""
    calls = [
        _score_call(queries, documents, pairs[start : start + batch_size], instruction, max_length)
        for start in range(0, len(pairs), batch_size)
    ]

    def assemble(answers: list[Any]) -> list[float]:
        return [score for answer in answers for score in answer]

    return _Plan(calls, assemble)


def normalize_pairs(
    pairs: Iterable[PairTypes], n_queries: int, n_documents: int
) -> list[tuple[int, int]]:
    """Check ``(query_index, document_index)`` pairs and turn them into tuples of ``int``."""
    normalized = []
    for k, pair in enumerate(pairs):
        try:
            q, d = pair
            # operator.index takes NumPy integers (not JSON-serialisable) and refuses floats.
            q, d = operator.index(q), operator.index(d)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"pairs[{k}] must be two integers (query_index, document_index), got {pair!r}"
            ) from exc
        if not (0 <= q < n_queries and 0 <= d < n_documents):
            raise ValueError(
                f"pairs[{k}] = ({q}, {d}) is out of range for {n_queries} queries "
                f"and {n_documents} documents"
            )
        normalized.append((q, d))
    return normalized


def coerce_requests(requests: Iterable[RerankRequestLike]) -> list[RerankRequest]:
    """Accept :class:`RerankRequest` objects or mappings with the same keys."""
    coerced = []
    for request in requests:
        if isinstance(request, RerankRequest):
            coerced.append(request)
        elif isinstance(request, Mapping):
            coerced.append(RerankRequest.from_dict(request))
        else:
            raise TypeError(f"expected a RerankRequest or a mapping, got {type(request).__name__}")
    return coerced


# --------------------------------------------------------------------------------------------
# The shared client base


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
        size = info.limits.max_pairs_per_request
        if size < 1:
            raise RerankerResponseError(f"GET {PATH_INFO}: max_pairs_per_request is {size}")
        self._batch_size = size
        return size
