"""Decoding and checking the JSON answers of the service."""

from __future__ import annotations

from typing import Any

import httpx

from ._config import PATH_HEALTH, PATH_INFO, PATH_RERANK, PATH_RERANK_BATCH_SIMPLE
from ._exceptions import RerankerResponseError
from ._models import RerankResponse, RerankResult, ServerInfo, ServerLimits, Usage
from ._types import JSONObject


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


def _document_text(document: Any) -> str | None:
    # Servers since the Cohere-compatible API echo `{"text": ...}`; earlier ones a bare string.
    if isinstance(document, dict):
        return str(document["text"])
    return document


def parse_rerank_response(data: Any, n_documents: int, path: str = PATH_RERANK) -> RerankResponse:
    """Parse one rerank answer for a request that carried ``n_documents`` documents."""
    try:
        results = [
            RerankResult(
                index=_as_int(item["index"]),
                relevance_score=_as_float(item["relevance_score"]),
                raw_score=None if item.get("raw_score") is None else _as_float(item["raw_score"]),
                document=_document_text(item.get("document")),
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
