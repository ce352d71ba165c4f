"""Request bodies for the service and for ``vllm serve``, and a bounded load driver."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from _workloads import OnlineRequest, TrainingPass

# A call: (path, JSON body, number of pairs, a check of the answer's JSON).
Call = tuple[str, dict[str, Any], int, Callable[[Any], bool]]

VLLM_MODEL = "m"


class BenchError(RuntimeError):
    pass


@dataclass
class Timing:
    seconds: float
    pairs: int
    latencies: list[float]

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds


# ---- the service ------------------------------------------------------------------------------


def service_rerank(r: OnlineRequest) -> Call:
    body: dict[str, Any] = {"query": r.query, "documents": r.documents}
    if r.instruction is not None:
        body["instruction"] = r.instruction
    if r.max_length is not None:
        body["max_length"] = r.max_length
    n = len(r.documents)
    return "/rerank", body, n, lambda j: len(j["results"]) == n


def service_training(p: TrainingPass) -> Call:
    body = {"queries": p.queries, "documents": p.documents, "pairs": [list(x) for x in p.pairs]}
    n = len(p.pairs)
    return "/rerank_batch_simple", body, n, lambda j: len(j["scores"]) == n


# ---- vllm serve -------------------------------------------------------------------------------


def vllm_rerank(r: OnlineRequest) -> Call:
    """vLLM's /rerank. A bi-encoder's instruction is query text, so it is prefixed here; the
    closest thing to max_length is ``truncate_prompt_tokens`` (per text for a bi-encoder), kept
    from the right like the service does."""
    query = f"{r.instruction}{r.query}" if r.instruction else r.query
    body: dict[str, Any] = {"model": VLLM_MODEL, "query": query, "documents": r.documents}
    if r.max_length is not None:
        body["truncate_prompt_tokens"] = r.max_length
        body["truncation_side"] = "right"
    n = len(r.documents)
    return "/rerank", body, n, lambda j: len(j["results"]) == n


def vllm_training(p: TrainingPass) -> Call:
    """vLLM's /score with the same pairs as N->N lists (it zips queries[i] with documents[i])."""
    queries, documents = p.zipped()
    body = {"model": VLLM_MODEL, "queries": queries, "documents": documents}
    n = len(p.pairs)
    return "/score", body, n, lambda j: len(j["data"]) == n


# ---- the driver -------------------------------------------------------------------------------


async def drive(
    client: httpx.AsyncClient, base: str, calls: list[Call], concurrency: int
) -> Timing:
    """Send ``calls`` with at most ``concurrency`` in flight; every answer must be a good one."""
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    latencies: list[float] = []

    async def worker() -> None:
        while True:
            try:
                path, body, _, check = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            r = await client.post(base + path, json=body)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200 or not check(r.json()):
                raise BenchError(f"POST {path} -> {r.status_code}: {r.text[:500]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(calls)))))
    elapsed = time.perf_counter() - started
    return Timing(elapsed, sum(c[2] for c in calls), latencies)


async def measure(
    url: str,
    calls: list[Call],
    concurrency: int,
    totals: Callable[[str], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """One timed sample of ``calls`` (seconds, pairs, latencies, load average); with ``totals``
    (a reader of the server's counters) also the counters' deltas over the sample."""
    before = await asyncio.to_thread(totals, url) if totals else None
    async with make_client(concurrency) as client:
        t = await drive(client, url, calls, concurrency)
    sample: dict[str, Any] = {
        "seconds": t.seconds,
        "pairs": t.pairs,
        "latencies": t.latencies,
        "loadavg": os.getloadavg()[0],
    }
    if totals and before is not None:
        after = await asyncio.to_thread(totals, url)
        sample["metrics"] = {k: after[k] - before[k] for k in before}
    return sample


def make_client(concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(900.0),
        limits=httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency),
    )
