"""Error types, and the one place where every failure becomes a JSON ``{error, detail}`` answer.

ServiceError            (any status; ``error`` is a stable machine-readable code)
├── InvalidRequestError  422  the request cannot be served as sent
├── OverloadedError      429  too much work queued; retry later
└── EngineUnavailableError 503  the engine is loading or dead
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("reranker_server")


class ServiceError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


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


def _location(loc: tuple[Any, ...]) -> str:
    """("body", "documents", 2) -> "documents[2]"."""
    out = ""
    for part in loc:
        if part == "body":
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
        msg = err.get("msg", "invalid value")
        # Our own validators raise ValueError("..."); pydantic prefixes "Value error, ".
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.error, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("invalid_request", describe_validation_errors(list(exc.errors()))),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(
            error_body(codes.get(exc.status_code, "http_error"), exc.detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback for the operator; the client never sees a stack trace.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", f"{type(exc).__name__}: the server failed; see its log."),
            status_code=500,
        )
