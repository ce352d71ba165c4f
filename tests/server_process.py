"""The process helpers, re-exported from ``reranker_server.testing.processes`` (their home)."""

from reranker_server.testing.processes import (
    EngineProcess,
    RedisProcess,
    ServerProcess,
    free_port,
    metric_samples,
    start_engines,
)

__all__ = [
    "EngineProcess",
    "RedisProcess",
    "ServerProcess",
    "free_port",
    "metric_samples",
    "start_engines",
]
