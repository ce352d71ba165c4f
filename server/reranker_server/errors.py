"""Error types, and the one place where every failure becomes a JSON ``{error, detail}`` answer.

ServiceError            (any status; ``error`` is a stable machine-readable code)
├── ModelNotFoundError   404  the request names a model this server does not serve
├── InvalidRequestError  422  the request cannot be served as sent
├── OverloadedError      429  too much work queued; retry later
└── EngineUnavailableError 503  the engine is loading or dead
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

logger = logging.getLogger("reranker_server")


class ServiceError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class ModelNotFoundError(ServiceError):
    status_code = 404
    error = "model_not_found"


class InvalidRequestError(ServiceError):
    status_code = 422
    error = "invalid_request"


class OverloadedError(ServiceError):
    status_code = 429
    error = "overloaded"


class EngineUnavailableError(ServiceError):
    status_code = 503
    error = "engine_unavailable"


def error_body(error: str, detail: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail}


#: ``request.state.error_style`` of requests in text-embeddings-inference's shape, whose clients
#: expect TEI's error body.
TEI_STYLE = "tei"
#: The discriminator tags of the ``/rerank`` body (native or TEI) and its documents (string or
#: object), with the error style of each; they are not part of a field's path.
UNION_TAGS = {
    "RerankRequest": None,
    "TeiRerankRequest": TEI_STYLE,
    "string-document": None,
    "object-document": None,
}
_TEI_ERROR_TYPES = {413: "Validation", 422: "Validation", 429: "Overloaded", 503: "Unhealthy"}


def _answer(
    request: Request,
    status: int,
    error: str,
    detail: str,
    headers: dict[str, str] | None = None,
    style: str | None = None,
) -> JSONResponse:
    """The error answer in the request's style: ``{error, detail}``, or TEI's
    ``{error: <message>, error_type}`` (with ``detail`` too) for TEI-shaped requests."""
    style = style or getattr(request.state, "error_style", None)
    if style == TEI_STYLE:
        body = {
            "error": detail,
            "error_type": _TEI_ERROR_TYPES.get(status, "Backend"),
            "detail": detail,
        }
    else:
        body = error_body(error, detail)
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(
    send: Send, status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> None:
    """The same ``{error, detail}`` answer, sent from an ASGI middleware (before routing)."""
    payload = json.dumps(error_body(error, detail)).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def _location(loc: tuple[Any, ...]) -> str:
    """("body", "documents", 2) -> "documents[2]"."""
    out = ""
    for part in loc:
        if part == "body" or part in UNION_TAGS:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list as one sentence a person can act on."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            parts.append(f"the body is not valid JSON ({reason})")
            continue
        where = _location(tuple(err.get("loc", ())))
        if err.get("type") == "string_pattern_mismatch":
            # The only pattern is the text one (request_limits.TEXT_PATTERN).
            parts.append(f"{where} is empty or blank; it must contain text")
            continue
        if err.get("type") == "string_unicode":
            parts.append(f"{where} is not valid Unicode (a lone surrogate?); send UTF-8 text")
            continue
        msg = err.get("msg", "invalid value")
        # Our own validators raise ValueError("..."); pydantic prefixes "Value error, ".
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def _style_of(errors: list[dict[str, Any]]) -> str | None:
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if len(loc) > 1 and loc[0] == "body" and UNION_TAGS.get(str(loc[1])):
            return UNION_TAGS[str(loc[1])]
    return None


def _parse_failure(exc: BaseException) -> str:
    """Why a body that FastAPI could not parse was refused (it answers a bare 400)."""
    if isinstance(exc, UnicodeDecodeError):
        return f"the body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "the body is not valid JSON here: it is nested too deeply"
    return f"the body could not be parsed ({type(exc).__name__})"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _answer(request, exc.status_code, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        detail = describe_validation_errors(errors)
        return _answer(request, 422, "invalid_request", detail, style=_style_of(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "error parsing the body": invalid UTF-8 or JSON nested too deeply.
            return _answer(request, 422, "invalid_request", _parse_failure(exc.__cause__))
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _answer(
            request,
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback for the operator; the client never sees a stack trace.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", f"{type(exc).__name__}: the server failed; see its log."),
            status_code=500,
        )
