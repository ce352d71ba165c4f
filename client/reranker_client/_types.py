"""Type aliases shared by the reranker client modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "AsyncSleepFunction",
    "ClockFunction",
    "HeaderTypes",
    "JSONObject",
    "PairTypes",
    "SleepFunction",
    "TimeoutTypes",
]

#: A decoded JSON object as it travels on the wire.
JSONObject = dict[str, Any]

#: Extra headers sent with every request.
HeaderTypes = Mapping[str, str]

#: Seconds per HTTP attempt, or ``None`` for no per-attempt limit (the call's deadline still holds).
TimeoutTypes = float | None

#: One ``(query_index, document_index)`` pair; any two-item sequence of integers (a tuple, a list,
#: a row of a NumPy integer array) is accepted.
PairTypes = Sequence[int]

SleepFunction = Callable[[float], None]
AsyncSleepFunction = Callable[[float], Awaitable[None]]
ClockFunction = Callable[[], float]
