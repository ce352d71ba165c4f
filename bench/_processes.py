"""Process helpers, reused from the test suite's tests/server_process.py.

``ServerProcess`` starts ``reranker-server`` and ``EngineProcess`` starts ``vllm serve`` (the CPU
build's module entry point), both on a free loopback port with their log in a file, and
``stop()`` ends the whole process tree (vLLM's engine core and workers included);
``metric_samples`` reads a server's /metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from server_process import (  # noqa: E402
    EngineProcess,
    ServerProcess,
    free_port,
    metric_samples,
)

__all__ = ["EngineProcess", "ServerProcess", "free_port", "metric_samples"]
