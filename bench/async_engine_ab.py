"""A/B: vLLM's AsyncLLM (continuous batching) against the offline ``LLM`` on one thread.

Run: ``.venv/bin/python bench/async_engine_ab.py [--models cross_encoder bi_encoder] [--quick]``

The in-process backend today calls the offline ``LLM`` on a dedicated thread, so engine batches
run one after the other. ``AsyncLLM`` takes each prompt as its own request and its scheduler mixes
every request in flight into the next engine step. Both engines get the same pre-tokenised
batches (``TokensPrompt``, so tokenisation is outside the measurement), same settings, one engine
at a time in its own subprocess:

- ``k=1``: one batch at a time (the latency of one batch, and the throughput of a serial caller);
- ``k=4``: four batches in flight (what a pipelined server would do), while a probe sends a small
  batch (``--probe`` prompts) every 0.3 s: its latency is what an online request sees while
  training batches are running.

Classify: the cross-encoder (``compressed_token_type_ids`` passed per prompt, as vLLM's own score
path does) or the Qwen3 reranker; embed: the bi-encoder. Prints pairs/s, batch latency p50/p95 and
the probe's p50/p95 for each model, engine and level, and the ratio async / thread.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _models as M  # noqa: E402
import _workloads as W  # noqa: E402

MARK = "@result@ "
TASK = {"cross_encoder": "classify", "qwen3_reranker": "classify", "bi_encoder": "embed"}
ENGINE_SETTINGS: dict[str, Any] = dict(
    runner="pooling", dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3
)


# ---- inputs ------------------------------------------------------------------------------------


def make_batches(
    model: str, tokenizer: Any, count: int, size: int, seed: int
) -> list[list[tuple[list[int], int | None]]]:
    """``count`` batches of ``size`` prompts: (token ids, where segment B starts or None)."""
    rng = random.Random(seed)
    batches = []
    for b in range(count):
        query = f"b{b} " + " ".join(rng.choices(W._WORDS, k=rng.randint(5, 12)))
        docs = [" ".join(rng.choices(W._WORDS, k=rng.randint(15, 50))) for _ in range(size)]
        if model == "cross_encoder":
            enc = tokenizer([query] * size, docs, truncation="only_second", max_length=256)
            batches.append(
                [
                    (ids, types.index(1))
                    for ids, types in zip(enc["input_ids"], enc["token_type_ids"])
                ]
            )
        elif model == "qwen3_reranker":
            from prefix_cache_probe import INSTRUCTION, PREFIX, SUFFIX

            texts = [
                f"{PREFIX}<Instruct>: {INSTRUCTION}\n<Query>: {query}\n<Document>: {d}{SUFFIX}"
                for d in docs
            ]
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            batches.append([(x, None) for x in ids])
        else:
            texts = [query, *docs[1:]]
            batches.append([(x, None) for x in tokenizer(texts, truncation=True)["input_ids"]])
    return batches


def pooling_params(task: Any, segment_start: int | None) -> Any:
    from vllm.pooling_params import PoolingParams

    # task must be set for AsyncLLM: left None, a classify model's request silently becomes
    # "token_classify" (v1/engine/input_processor.py). The offline LLM sets it itself.
    p = PoolingParams(task=task, use_activation=False if task == "classify" else None)
    if segment_start is not None:
        p.extra_kwargs = {"compressed_token_type_ids": segment_start}
    return p


# ---- the two engines ---------------------------------------------------------------------------


class ThreadEngine:
    """What server/reranker_server/inprocess_backend.py does: offline LLM, one thread."""

    def __init__(self, model: str) -> None:
        from vllm import LLM

        self.task = TASK[model]
        self.llm = LLM(model=str(M.path(model)), **ENGINE_SETTINGS, **M.engine_kwargs(model))
        self.tokenizer = self.llm.get_tokenizer()
        self.pool = ThreadPoolExecutor(max_workers=1)

    def _run(self, batch: list[tuple[list[int], int | None]]) -> list[float]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in batch]
        params = [pooling_params(self.task, start) for _, start in batch]
        if self.task == "classify":
            outs = self.llm.classify(prompts, pooling_params=params, use_tqdm=False)
            return [o.outputs.probs[0] for o in outs]
        vectors = self.llm.embed(prompts, pooling_params=params, use_tqdm=False)
        return [v.outputs.embedding[0] for v in vectors]

    async def run(self, batch: list[tuple[list[int], int | None]]) -> list[float]:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, batch)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


class AsyncEngine:
    """vLLM's AsyncLLM: one request per prompt, batched by vLLM's scheduler."""

    def __init__(self, model: str) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.task = TASK[model]
        args = AsyncEngineArgs(
            model=str(M.path(model)), **ENGINE_SETTINGS, **M.engine_kwargs(model)
        )
        self.llm = AsyncLLM.from_engine_args(args)
        self.tokenizer = self.llm.get_tokenizer()
        self.ids = itertools.count()

    async def _one(self, ids: list[int], segment_start: int | None) -> float:
        from vllm.inputs import TokensPrompt

        final = None
        async for out in self.llm.encode(
            TokensPrompt(prompt_token_ids=ids),
            pooling_params(self.task, segment_start),
            request_id=f"ab-{next(self.ids)}",
        ):
            final = out  # FINAL_ONLY: one output, finished=True
        assert final is not None and final.finished
        # classify: data = [logit] (use_activation=False); embed: data = the vector.
        return float(final.outputs.data[0])

    async def run(self, batch: list[tuple[list[int], int | None]]) -> list[float]:
        return list(await asyncio.gather(*(self._one(ids, start) for ids, start in batch)))

    def close(self) -> None:
        self.llm.shutdown()


# ---- measurement -------------------------------------------------------------------------------


async def drive(
    run: Callable[[Any], Awaitable[list[float]]],
    batches: list[Any],
    k: int,
    probe: list[Any] | None,
) -> dict[str, Any]:
    queue = list(batches)
    latencies: list[float] = []
    probe_lat: list[float] = []
    done = asyncio.Event()

    async def worker() -> None:
        while queue:
            batch = queue.pop()
            t = time.perf_counter()
            await run(batch)
            latencies.append(time.perf_counter() - t)

    async def prober() -> None:
        assert probe is not None
        while not done.is_set():
            t = time.perf_counter()
            await run(probe)
            probe_lat.append(time.perf_counter() - t)
            try:
                await asyncio.wait_for(done.wait(), 0.3)
            except asyncio.TimeoutError:
                pass

    started = time.perf_counter()
    probe_task = asyncio.create_task(prober()) if probe else None
    await asyncio.gather(*(worker() for _ in range(k)))
    wall = time.perf_counter() - started
    done.set()
    if probe_task:
        await probe_task
    return {
        "k": k,
        "pairs": sum(map(len, batches)),
        "seconds": wall,
        "batch_latencies": latencies,
        "probe_latencies": probe_lat,
    }


async def measure(engine: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    batches = make_batches(args.model, engine.tokenizer, args.batches * 3, args.size, args.seed)
    probe = make_batches(args.model, engine.tokenizer, 1, args.probe, args.seed + 1)[0]
    reference = await engine.run(batches[0])  # warm-up, and the values to compare
    await engine.run(probe)
    results = []
    for i, (k, with_probe) in enumerate(((1, False), (4, True))):
        chunk = batches[i * args.batches : (i + 1) * args.batches]
        results.append(await drive(engine.run, chunk, k, probe if with_probe else None))
    results[0]["first_values"] = reference[:4]
    return results


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    started = time.perf_counter()

    async def main() -> list[dict[str, Any]]:
        engine = AsyncEngine(args.model) if args.engine == "async" else ThreadEngine(args.model)
        start_s = time.perf_counter() - started
        try:
            out = await measure(engine, args)
        finally:
            engine.close()
        out[0]["start_s"] = start_s
        return out

    print(MARK + json.dumps(asyncio.run(main())), flush=True)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["cross_encoder", "bi_encoder"])
    ap.add_argument("--engines", nargs="+", default=["thread", "async"])
    ap.add_argument("--batches", type=int, default=12, help="batches per level")
    ap.add_argument("--size", type=int, default=64, help="prompts per batch")
    ap.add_argument("--probe", type=int, default=4, help="prompts in the probe batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        child(args)
        return
    table: dict[str, dict[str, Any]] = {}
    for model in args.models:
        M.path(model)
        for engine in args.engines:
            cmd = [sys.executable, __file__, "--model", model, "--engine", engine]
            cmd += ["--batches", str(args.batches), "--size", str(args.size)]
            cmd += ["--probe", str(args.probe), "--seed", str(args.seed)]
            load = os.getloadavg()[0]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [x for x in proc.stdout.splitlines() if x.startswith(MARK)]
            if proc.returncode != 0 or not lines:
                sys.exit(f"{model}/{engine}: exit {proc.returncode}\n{proc.stderr[-4000:]}")
            levels = json.loads(lines[0][len(MARK) :])
            table[f"{model}|{engine}"] = {"load_before": load, "levels": levels}
            for lv in levels:
                print(
                    f"{model:15} {engine:6} k={lv['k']} {lv['pairs'] / lv['seconds']:7.1f} pairs/s "
                    f"batch p50 {1000 * statistics.median(lv['batch_latencies']):6.0f} ms "
                    f"p95 {1000 * _pct(lv['batch_latencies'], 0.95):6.0f} ms"
                    + (
                        f" | probe({args.probe}) p50 "
                        f"{1000 * statistics.median(lv['probe_latencies']):5.0f} ms p95 "
                        f"{1000 * _pct(lv['probe_latencies'], 0.95):5.0f} ms"
                        if lv["probe_latencies"]
                        else ""
                    )
                    + f"  (load {load:.1f})",
                    flush=True,
                )
        if {"thread", "async"} <= set(args.engines):
            t, a = table[f"{model}|thread"]["levels"], table[f"{model}|async"]["levels"]
            ratios = [
                (x["pairs"] / x["seconds"]) / (y["pairs"] / y["seconds"]) for x, y in zip(a, t)
            ]
            same = max(abs(u - v) for u, v in zip(a[0]["first_values"], t[0]["first_values"]))
            print(
                f"{model}: async/thread throughput k=1 {ratios[0]:.2f}x, k=4 {ratios[1]:.2f}x; "
                f"max |value diff| {same:.1e}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
