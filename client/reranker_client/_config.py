"""Defaults, endpoint paths and request headers of the clients."""

from __future__ import annotations

import os

import httpx

from ._types import HeaderTypes

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 60.0
#: Overall seconds one client call may take, retries and split requests included.
DEFAULT_DEADLINE = 300.0
DEFAULT_MAX_CONCURRENCY = 4
#: Most pairs per request unless ``reranker_batch_size`` says otherwise (or the server allows
#: fewer): a few seconds of engine work on a CPU, so that ``DEFAULT_MAX_CONCURRENCY`` requests
#: stay in flight and a retry repeats little.
DEFAULT_BATCH_PAIRS = 4096
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 30.0

#: Environment variable the clients read the API key from when ``api_key`` is not given.
API_KEY_ENV = "RERANKER_API_KEY"

PATH_RERANK = "/rerank"
PATH_RERANK_BATCH = "/rerank_batch"
PATH_RERANK_BATCH_SIMPLE = "/rerank_batch_simple"
PATH_HEALTH = "/health"
PATH_INFO = "/info"

#: Statuses that mean "try again later"; every other 4xx is the caller's mistake.
RETRYABLE_STATUS_CODES = frozenset({429, 502, 503, 504})
#: Statuses that mean a batch endpoint does not exist on this server (an older version).
FALLBACK_STATUS_CODES = frozenset({404, 405, 501})


def auth_headers(headers: HeaderTypes | None, api_key: str | None) -> httpx.Headers:
    """``headers`` plus ``Authorization: Bearer <key>`` (``api_key``, else ``RERANKER_API_KEY``)."""
    merged = httpx.Headers(headers)
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if key:
        merged["Authorization"] = f"Bearer {key}"
    return merged
