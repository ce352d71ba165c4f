"""Plans: a client call split into requests the server accepts, and its answers put back together.

A client call is turned into a :class:`_Plan`: a list of HTTP requests (:class:`_Call`, each small
enough for the server) and a function that puts their answers back together in the caller's order.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from ._config import PATH_RERANK, PATH_RERANK_BATCH, PATH_RERANK_BATCH_SIMPLE
from ._models import RerankRequest, RerankRequestLike, RerankResponse, Usage
from ._parsing import _malformed, parse_rerank_response, parse_scores
from ._types import JSONObject, PairTypes

T = TypeVar("T")


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
    pairs: Sequence[Sequence[int]],
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
    pairs: Sequence[Sequence[int]],
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
    pairs: Sequence[Sequence[int]],
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


class _ArrayPairs(Sequence[Any]):
    """An ``(n, 2)`` integer array of pairs, turned into Python lists one slice at a time.

    Training steps pass millions of pairs; materialising them all as Python tuples at once
    costs more memory and time than the requests that carry them.
    """

    def __init__(self, array: Any) -> None:
        self._array = array

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __getitem__(self, index: Any) -> Any:
        return self._array[index].tolist()


def _array_pairs(pairs: Any, n_queries: int, n_documents: int) -> _ArrayPairs | None:
    """The fast path of :func:`normalize_pairs` for NumPy/torch integer arrays (else ``None``)."""
    shape = getattr(pairs, "shape", None)
    kind = getattr(getattr(pairs, "dtype", None), "kind", None)
    if shape is None or kind not in ("i", "u") or len(shape) != 2 or shape[1] != 2:
        return None
    if shape[0]:
        q_min, d_min = pairs.min(axis=0).tolist()
        q_max, d_max = pairs.max(axis=0).tolist()
        if q_min < 0 or d_min < 0 or q_max >= n_queries or d_max >= n_documents:
            raise ValueError(
                f"pairs hold indices out of range for {n_queries} queries and "
                f"{n_documents} documents (queries {q_min}..{q_max}, documents {d_min}..{d_max})"
            )
    return _ArrayPairs(pairs)


def normalize_pairs(
    pairs: Iterable[PairTypes], n_queries: int, n_documents: int
) -> Sequence[Sequence[int]]:
    """Check ``(query_index, document_index)`` pairs and turn them into pairs of ``int``.

    An ``(n, 2)`` NumPy integer array is checked at once and converted slice by slice.
    """
    fast = _array_pairs(pairs, n_queries, n_documents)
    if fast is not None:
        return fast
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
