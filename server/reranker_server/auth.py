"""API keys: who may call the service.

Keys come from ``RERANKER_API_KEY`` (comma-separated) and ``RERANKER_API_KEY_FILE`` (one per
line, for secrets mounted as files). With no key configured, authentication is off. Clients send
``Authorization: Bearer <key>``, the header that the Cohere SDK, vLLM and TEI clients send.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import send_error
from .settings import Settings

#: Probes must answer without a key: a Kubernetes probe or a load balancer carries none.
OPEN_PATHS = frozenset({"/health", "/livez"})


class ApiKeyFileError(SystemExit):
    """The key file cannot be used. A SystemExit, so the server stops at start-up with this
    message instead of a traceback, rather than run without the authentication it was asked for."""


def read_key_file(path: str) -> list[str]:
    """The keys in a key file: one per line; blank lines and ``#`` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiKeyFileError(
            f"reranker-server: cannot read RERANKER_API_KEY_FILE {path}: {exc}"
        ) from exc
    keys = [line.strip() for line in lines]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise ApiKeyFileError(
            f"reranker-server: RERANKER_API_KEY_FILE {path} holds no key (one per line)"
        )
    return keys


def configured_keys(settings: Settings) -> list[str]:
    """Every accepted key; empty means authentication is off."""
    keys = list(settings.api_key)
    if settings.api_key_file is not None:
        keys += read_key_file(str(settings.api_key_file))
    return keys


def open_paths(settings: Settings) -> frozenset[str]:
    """The paths that answer without a key."""
    return OPEN_PATHS if settings.metrics_require_key else OPEN_PATHS | {"/metrics"}


class ApiKeys:
    """The accepted keys, compared in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the keys."""
        if authorization is None:
            return False
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        token = token.strip()
        # Every key is compared, whatever matched, so timing says nothing about which or how many.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(token, key)
        return matched


class ApiKeyMiddleware:
    """Answers 401 to requests without an accepted key, except on the open paths."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, open_paths: frozenset[str]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization")
        if self.keys.accepts(authorization):
            await self.app(scope, receive, send)
            return
        detail = (
            "missing API key: send the header `Authorization: Bearer <key>`"
            if authorization is None
            else "the API key is not valid (send `Authorization: Bearer <key>`)"
        )
        await send_error(send, 401, "unauthorized", detail, {"www-authenticate": "Bearer"})


def document_auth(schema: dict[str, Any], open_paths: Iterable[str]) -> dict[str, Any]:
    """State the bearer key in an OpenAPI schema: every operation needs it, and may answer 401,
    but the open ones."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["apiKey"] = {"type": "http", "scheme": "bearer"}
    schema["security"] = [{"apiKey": []}]
    unauthorized = {
        "description": "Missing or invalid API key",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if path in open_paths:
                operation["security"] = []
            else:
                operation.setdefault("responses", {}).setdefault("401", unauthorized)
    return schema
