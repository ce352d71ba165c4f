"""Thin Python client for the reranker HTTP service.

Two clients with the same API, :class:`RerankerClient` (synchronous, thread-based; safe to call
from code that runs inside an event loop) and :class:`AsyncRerankerClient`. Both split large
jobs into requests the server accepts, send them with bounded concurrency, retry transient
failures with backoff, fall back to ``/rerank`` on servers without the batch endpoints, and
count what they did in ``client.stats``::

    from reranker_client import RerankerClient

    with RerankerClient("http://localhost:8000") as client:
        scores = client.score_pairs(queries, documents, [(0, 3), (0, 7), (1, 2)])
        step = client.stats.reset()  # the work since the last reset

The package depends on ``httpx`` only.
"""

from ._async_client import AsyncRerankerClient
from ._client import RerankerClient
from ._config import API_KEY_ENV, DEFAULT_BASE_URL, DEFAULT_DEADLINE, DEFAULT_TIMEOUT
from ._cross_encoder import RerankerCrossEncoder
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
from ._models import (
    RerankRequest,
    RerankRequestLike,
    RerankResponse,
    RerankResult,
    ServerInfo,
    ServerLimits,
    Usage,
)
from ._stats import ClientStats

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "AsyncRerankerClient",
    "ClientStats",
    "RerankRequest",
    "RerankRequestLike",
    "RerankResponse",
    "RerankResult",
    "RerankerAuthenticationError",
    "RerankerBadRequestError",
    "RerankerClient",
    "RerankerCrossEncoder",
    "RerankerError",
    "RerankerOverloadedError",
    "RerankerResponseError",
    "RerankerServerError",
    "RerankerTimeoutError",
    "RerankerUnavailableError",
    "ServerInfo",
    "ServerLimits",
    "Usage",
]

# Present the public names as the package's own (as httpx does) in reprs and tracebacks.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("reranker_client."):
        _obj.__module__ = "reranker_client"
del _name, _obj
