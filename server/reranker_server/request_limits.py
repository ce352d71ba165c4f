"""Input limits: the request body size (413) and the length of each text (422).

Both are settings (``RERANKER_MAX_REQUEST_BYTES``, ``RERANKER_MAX_TEXT_CHARS``). The text limit
and the model's max_length bounds are also written into the OpenAPI schema, so that a
schema-driven client knows what is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import InvalidRequestError, send_error

#: The pattern of every text field in the schema: at least one character that is not a space.
#: Spelt out because "\S" differs between Python (which counts \x1c-\x1f and \x85 as space)
#: and the ECMA regexes of JSON Schema, which a schema-driven client follows.
TEXT_PATTERN = r"[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


class BodySizeLimitMiddleware:
    """Refuses bodies above ``max_bytes`` with 413 before anything parses them.

    The body is read here, whether or not a Content-Length was sent (chunked uploads have
    none), so a body is never held in memory beyond the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # waits for the client's disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int | None) -> None:
        what = f"{size} bytes" if size is not None else "more bytes than that"
        await send_error(
            send,
            413,
            "request_too_large",
            f"the request body has {what}; this server takes at most {self.max_bytes} bytes "
            "(RERANKER_MAX_REQUEST_BYTES); split the request (reranker_client does this for you)",
        )


def check_text_lengths(fields: Iterable[tuple[str, str | Sequence[str]]], max_chars: int) -> None:
    """422 for the first text longer than ``max_chars``; ``fields`` are (name, text or texts)."""
    for name, value in fields:
        texts = [value] if isinstance(value, str) else value
        for i, text in enumerate(texts):
            if len(text) > max_chars:
                where = name if isinstance(value, str) else f"{name}[{i}]"
                raise InvalidRequestError(
                    f"{where} has {len(text)} characters, more than this server's limit of "
                    f"{max_chars} (RERANKER_MAX_TEXT_CHARS); the model reads only its first "
                    "max_length tokens anyway, so cut it before sending"
                )


def _each_object(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    """Call ``visit`` on every JSON object in an OpenAPI schema, depth first."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _each_object(value, visit)
    elif isinstance(node, list):
        for value in node:
            _each_object(value, visit)


def state_text_limit(schema: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """Add ``maxLength`` to every text field of an OpenAPI schema (they carry TEXT_PATTERN)."""

    def visit(node: dict[str, Any]) -> None:
        if node.get("type") == "string" and node.get("pattern") == TEXT_PATTERN:
            node["maxLength"] = max_chars

    _each_object(schema, visit)
    return schema


def state_max_length(schema: dict[str, Any], minimum: int, maximum: int) -> dict[str, Any]:
    """Bound every ``max_length`` field of an OpenAPI schema by the loaded model's limits."""

    def visit(node: dict[str, Any]) -> None:
        bounds = node.get("properties", {}).get("max_length", {})
        for option in bounds.get("anyOf", [bounds]):
            if option.get("type") == "integer":
                option["minimum"], option["maximum"] = minimum, maximum

    _each_object(schema, visit)
    return schema
