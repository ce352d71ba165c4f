"""Exceptions raised by the reranker clients.

Every error the clients raise is a :class:`RerankerError`; the original ``httpx`` exception (or
the error of the last attempt) is chained as ``__cause__``. The hierarchy::

    RerankerError                       base class; never raised for a 2xx answer
    ├── RerankerBadRequestError         4xx other than 429 (422 invalid request, 404, ...);
    │   │                               never retried
    │   └── RerankerAuthenticationError 401: no valid API key (``api_key=`` or RERANKER_API_KEY)
    ├── RerankerServerError             5xx that is not a transient condition (500, 501, ...);
    │                                   never retried
    ├── RerankerUnavailableError        502/503/504 or no connection (refused, reset, ...),
    │   │                               still failing once the retries are used up
    │   └── RerankerOverloadedError     429: the server shed load, still so after the retries
    ├── RerankerTimeoutError            a request timed out on every attempt, or the call's
    │                                   overall deadline ran out before it could succeed
    └── RerankerResponseError           a 2xx answer that does not match the wire format

Errors built from an answer of the server carry its ``status_code`` and the ``error`` and
``detail`` fields of its JSON error body; ``retry_after`` holds the seconds the server asked the
client to wait, when it said so.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RerankerAuthenticationError",
    "RerankerBadRequestError",
    "RerankerError",
    "RerankerOverloadedError",
    "RerankerResponseError",
    "RerankerServerError",
    "RerankerTimeoutError",
    "RerankerUnavailableError",
]


class RerankerError(Exception):
    """Base class of every error raised by the reranker clients.

    Attributes:
        message: A human-readable summary (also ``str(error)``).
        status_code: The HTTP status of the server's answer, or ``None`` when there was none
            (connection failure, timeout, deadline).
        error: The ``error`` field of the server's JSON error body, if any.
        detail: The ``detail`` field of the server's JSON error body (a string, or the list of
            validation problems for a 422), if any.
        retry_after: Seconds the server asked the client to wait (``Retry-After``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        detail: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


class RerankerBadRequestError(RerankerError):
    """The server rejected the request (4xx other than 429); retrying would not help."""


class RerankerServerError(RerankerError):
    """The server failed in a way that is not known to be transient (e.g. 500); not retried."""


class RerankerUnavailableError(RerankerError):
    """The server could not be reached or was not ready (502/503/504), even after retrying."""


class RerankerOverloadedError(RerankerUnavailableError):
    """The server answered 429 (overloaded) on every attempt."""


class RerankerTimeoutError(RerankerError):
    """A request timed out on every attempt, or the call's overall deadline ran out."""


class RerankerResponseError(RerankerError):
    """The server answered 2xx with a body that does not match the wire format."""


class RerankerAuthenticationError(RerankerBadRequestError):
    """The server refused the request for want of a valid API key (401).

    Pass the key as ``api_key=`` to the client (or the loss), or set ``RERANKER_API_KEY``.
    """
