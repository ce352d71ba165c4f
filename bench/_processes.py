"""Process helpers for the benchmarks: ``reranker_server.testing.processes``, shared with the tests.

``ServerProcess`` starts ``reranker-server`` and ``EngineProcess`` starts ``vllm serve`` (the CPU
build's module entry point), both on a free loopback port with their log in a file, and
``stop()`` ends the whole process tree (vLLM's engine core and workers included);
``metric_samples`` reads a server's /metrics.
"""

from __future__ import annotations

from pathlib import Path

from reranker_server.testing.processes import (
    EngineProcess,
    ServerProcess,
    free_port,
    metric_samples,
)

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "EngineProcess", "ServerProcess", "free_port", "metric_samples"]
