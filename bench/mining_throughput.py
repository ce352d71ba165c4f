"""Pairs per second rescoring hard-negative candidates: the service vs ``CrossEncoder.predict``.

``util.mine_hard_negatives(..., cross_encoder=...)`` calls ``predict`` once per anchor with its
candidates. This bench replays that on real text (``--data``, a jsonl from
``bench/real_text_pairs.py``): ``--anchors`` anchors, each with ``--candidates`` other rows'
positives, scored

- through :class:`reranker_client.RerankerCrossEncoder` on ``reranker-server`` (one call per
  anchor, as the mining makes them, and once as a single call of all pairs);
- by sentence-transformers' ``CrossEncoder.predict`` in this process, on the same model.

The model is MiniLM-L6 under a one-label head (``bench/_models.py``: the shape and cost of
cross-encoder/ms-marco-MiniLM-L-6-v2). Both are warmed up first; the figures come from one run,
so compare the ratio, not the absolute numbers, on a shared machine.

Run: ``nice -n 10 .venv/bin/python bench/mining_throughput.py --data /work/data-20/test.jsonl``
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import _models
from _processes import ServerProcess
from reranker_client import RerankerCrossEncoder


def mining_calls(
    path: Path, anchors: int, candidates: int, seed: int
) -> list[list[tuple[str, str]]]:
    """One list of (anchor, candidate) pairs per anchor, as the mining's rescoring sends them."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rng = random.Random(seed)
    picked = rng.sample(rows, min(anchors, len(rows)))
    positives = [r["positive"] for r in rows]
    return [[(r["anchor"], d) for d in rng.sample(positives, candidates)] for r in picked]


def rate(pairs: int, seconds: float) -> str:
    return f"{pairs / seconds:7.1f} pairs/s ({pairs} pairs in {seconds:.1f} s)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--anchors", type=int, default=40)
    parser.add_argument("--candidates", type=int, default=31)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    calls = mining_calls(args.data, args.anchors, args.candidates, args.seed)
    flat = [p for call in calls for p in call]
    model_dir = _models.cross_encoder()

    from sentence_transformers import CrossEncoder

    local = CrossEncoder(str(model_dir), device="cpu")
    local.predict(calls[0])  # warm-up
    start = time.perf_counter()
    for call in calls:
        local.predict(call, batch_size=32)
    local_s = time.perf_counter() - start

    server = ServerProcess(
        "--model", str(model_dir), "--dtype", "float32", log_path=Path("/tmp/mining-bench.log")
    )
    try:
        server.wait_ready()
        # cache_size=0 so every timed pair is scored; the server's own cache is bypassed by
        # scoring a fresh set of pairs in each timed pass.
        with RerankerCrossEncoder(server.url, cache_size=0) as adapter:
            adapter.predict(calls[0])  # warm-up
            start = time.perf_counter()
            for call in calls:
                adapter.predict(call)
            per_anchor_s = time.perf_counter() - start
            fresh = [(q, d + " ") for q, d in flat]  # distinct texts: no server cache hits
            start = time.perf_counter()
            adapter.predict(fresh)
            one_call_s = time.perf_counter() - start
    finally:
        server.stop()

    print(f"in process, CrossEncoder.predict per anchor: {rate(len(flat), local_s)}")
    print(f"service, RerankerCrossEncoder per anchor:    {rate(len(flat), per_anchor_s)}")
    print(f"service, RerankerCrossEncoder one call:      {rate(len(flat), one_call_s)}")
    print(f"ratio service/in-process (per anchor): {local_s / per_anchor_s:.2f}")
    print(f"ratio service/in-process (one call):   {local_s / one_call_s:.2f}")


if __name__ == "__main__":
    main()
