"""A/B of the bi-encoder embedding cache on the training workload (64 anchors x 64 candidates,
fresh texts each repetition): the service with the cache on, and with it off
(RERANKER_EMBEDDING_CACHE_SIZE=0), measured in one run. Prints pairs/s and the ratio.

    .venv/bin/python bench/embedding_cache_ab.py [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from reranker_server.testing.processes import ServerProcess


def fresh_pass(url: str, n: int = 64) -> float:
    tag = uuid.uuid4().hex[:8]
    queries = [f"{tag} question number {i} about a subject" for i in range(n)]
    documents = [f"{tag} passage {j} that answers something else entirely" for j in range(n)]
    pairs = [[i, j] for i in range(n) for j in range(n)]
    started = time.perf_counter()
    r = httpx.post(
        f"{url}/rerank_batch_simple",
        timeout=600,
        json={"queries": queries, "documents": documents, "pairs": pairs},
    )
    r.raise_for_status()
    return len(pairs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in (("cache on", "100000"), ("cache off", "0")):
            server = ServerProcess(
                "--dtype",
                "float32",
                log_path=Path(tmp) / f"{size}.log",
                env={"RERANKER_EMBEDDING_CACHE_SIZE": size},
            )
            try:
                server.wait_ready()
                fresh_pass(server.url, 8)  # warm-up
                results[label] = statistics.median(fresh_pass(server.url) for _ in range(args.reps))
            finally:
                server.stop()
    for label, rate in results.items():
        print(f"{label:10s} {rate:8.1f} pairs/s  (64 x 64 fresh pass, median of {args.reps})")
    print(f"ratio on/off: {results['cache on'] / results['cache off']:.2f}x")


if __name__ == "__main__":
    main()
