"""Non-2xx answers and transport failures mapped to :class:`RerankerError` subclasses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ._config import API_KEY_ENV, RETRYABLE_STATUS_CODES
from ._exceptions import (
    RerankerAuthenticationError,
    RerankerBadRequestError,
    RerankerError,
    RerankerOverloadedError,
    RerankerResponseError,
    RerankerServerError,
    RerankerTimeoutError,
    RerankerUnavailableError,
)
from ._retry import parse_retry_after


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
    if status == 401:
        message += (
            f". The server wants an API key: pass api_key=... to the client or set {API_KEY_ENV}."
        )
        cls = RerankerAuthenticationError
    elif status == 429:
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
