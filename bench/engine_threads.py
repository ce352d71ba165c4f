"""The CPU engine's threads (issue 16): the service with 0 and 1 reserved cores, beside the
in-process library a user would run instead and ``vllm serve``, measured in one run.

For each model (bench/_models.py: ``cross_encoder``, ``bi_encoder``, ``qwen3_reranker``), on the
same pairs of real sentences (standard-library docstrings, tagged per system so that no cache
answers them):

- ``library``: in process, no server, requests one after the other (torch computes each on
  every core). Cross-encoder: sentence-transformers'
  ``CrossEncoder.predict``; bi-encoder: ``SentenceTransformer.encode`` of the texts plus cosine per
  pair; LLM reranker: transformers' forward over the formatted Qwen3-Reranker prompts, logit(yes)
  - logit(no) of the last token. Batch size 32 (8 for the LLM reranker).
- ``reserved=0`` / ``reserved=1``: this checkout's service with ``RERANKER_CPU_RESERVED_CORES``.
- ``vllm serve``: vLLM's own server at its defaults (one reserved core), ``/rerank``.

Workloads: ``online c=8`` (requests of one query x D documents, 8 in flight) and ``training``
(``/rerank_batch_simple`` of A queries x C documents; vllm serve: one ``/rerank`` per query, all
in flight). While the online workload runs, ``/health`` (vllm serve: its ``/health``) is polled
every 50 ms; its p50/p95/max latency is reported.

Usage: ``nice -n 5 .venv/bin/python bench/engine_threads.py [--models ...] [--out FILE.json]``
(about 20 minutes for the three models on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import path, serve_args  # noqa: E402
from _processes import EngineProcess, ServerProcess  # noqa: E402
from reranker_server.llm_reranker import (  # noqa: E402
    QWEN3_DEFAULT_INSTRUCTION,
    QWEN3_PREFIX,
    QWEN3_SUFFIX,
    qwen3_body,
)
from soak import real_sentences  # noqa: E402


@dataclass
class Plan:
    online_requests: int
    online_docs: int
    anchors: int
    candidates: int
    batch_size: int


PLANS = {
    "cross_encoder": Plan(48, 40, 32, 32, 32),
    "bi_encoder": Plan(48, 40, 32, 32, 32),
    "qwen3_reranker": Plan(16, 10, 8, 12, 8),
}
CONCURRENCY = 8


class Texts:
    """Real sentences, each tagged with the system's name so that caches never answer."""

    def __init__(self, sentences: list[str], tag: str) -> None:
        self.sentences, self.tag, self.i = sentences, tag, 0

    def __call__(self) -> str:
        self.i += 1
        return f"{self.sentences[self.i % len(self.sentences)]} [{self.tag} {self.i}]"


def workloads(plan: Plan, texts: Texts) -> tuple[list[tuple[str, list[str]]], tuple[list, list]]:
    online = [
        (texts(), [texts() for _ in range(plan.online_docs)]) for _ in range(plan.online_requests)
    ]
    training = ([texts() for _ in range(plan.anchors)], [texts() for _ in range(plan.candidates)])
    return online, training


# ---------------------------------------------------------------- in-process library baselines


def library_scorer(model: str, model_dir: Path, batch_size: int):
    """A function scoring a list of (query, document) pairs in process, as a user would."""
    import torch

    if model == "cross_encoder":
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(model_dir), device="cpu")
        return lambda pairs: ce.predict(pairs, batch_size=batch_size, show_progress_bar=False)
    if model == "bi_encoder":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir), device="cpu")

        def bi(pairs):
            texts = sorted({t for p in pairs for t in p})
            emb = st.encode(texts, batch_size=batch_size, normalize_embeddings=True)
            at = {t: i for i, t in enumerate(texts)}
            q = emb[[at[a] for a, _ in pairs]]
            d = emb[[at[b] for _, b in pairs]]
            return (q * d).sum(axis=1)

        return bi
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")

    def llm(pairs):
        prompts = [
            QWEN3_PREFIX + qwen3_body(QWEN3_DEFAULT_INSTRUCTION, q, d) + QWEN3_SUFFIX
            for q, d in pairs
        ]
        out = []
        with torch.inference_mode():
            for i in range(0, len(prompts), batch_size):
                enc = tok(
                    prompts[i : i + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=512,
                    add_special_tokens=False,
                    return_tensors="pt",
                    return_token_type_ids=False,
                )
                logits = lm(**enc).logits[:, -1, :]
                out.extend((logits[:, yes] - logits[:, no]).tolist())
        return np.asarray(out)

    return llm


def measure_library(score, online, training) -> dict[str, Any]:
    warm = [(online[0][0], d) for d in online[0][1][:4]]
    score(warm)
    out: dict[str, Any] = {}
    # Online: the same requests one after the other, as one process serves them (threads would
    # only oversubscribe torch's own intra-op threads on these cores).
    started = time.perf_counter()
    for query, docs in online:
        score([(query, d) for d in docs])
    seconds = time.perf_counter() - started
    out["online_pairs_per_s"] = sum(len(d) for _, d in online) / seconds
    queries, docs = training
    pairs = [(q, d) for q in queries for d in docs]
    started = time.perf_counter()
    score(pairs)
    out["training_pairs_per_s"] = len(pairs) / (time.perf_counter() - started)
    return out


# ---------------------------------------------------------------- servers


class HealthProbe:
    """Polls ``/health`` every 50 ms from its own thread; latencies in seconds."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                started = time.perf_counter()
                c.get(f"{self.url}/health")
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def measure_server(url: str, vllm_model: str | None, online, training, concurrency) -> dict:
    def rerank(c: httpx.Client, q: str, docs: list[str]) -> None:
        body: dict[str, Any] = {"query": q, "documents": docs}
        if vllm_model:
            body["model"] = vllm_model
        c.post(f"{url}/rerank", json=body).raise_for_status()

    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(timeout=900)
        return local.c

    with httpx.Client(timeout=900) as c:  # warm-up
        rerank(c, "warm-up query", [f"warm-up document {i}" for i in range(8)])
    out: dict[str, Any] = {}
    with ThreadPoolExecutor(concurrency) as pool, HealthProbe(url) as probe:
        started = time.perf_counter()
        list(pool.map(lambda r: rerank(client(), *r), online))
        seconds = time.perf_counter() - started
    out["online_pairs_per_s"] = sum(len(d) for _, d in online) / seconds
    h = probe.latencies
    out["health_ms"] = {
        "n": len(h),
        "p50": 1000 * statistics.median(h),
        "p95": 1000 * _pct(h, 0.95),
        "max": 1000 * max(h),
    }
    queries, docs = training
    started = time.perf_counter()
    if vllm_model:  # no pairs-by-index call: one /rerank per query, all in flight
        with ThreadPoolExecutor(len(queries)) as pool:
            list(pool.map(lambda q: rerank(client(), q, docs), queries))
    else:
        body = {
            "queries": queries,
            "documents": docs,
            "pairs": [[i, j] for i in range(len(queries)) for j in range(len(docs))],
        }
        with httpx.Client(timeout=900) as c:
            c.post(f"{url}/rerank_batch_simple", json=body).raise_for_status()
    out["training_pairs_per_s"] = len(queries) * len(docs) / (time.perf_counter() - started)
    return out


def run_model(model: str, sentences: list[str], logs: Path, systems: list[str]) -> dict:
    plan, model_dir = PLANS[model], path(model)
    results: dict[str, Any] = {}
    for system in systems:
        online, training = workloads(plan, Texts(sentences, f"{system} {model}"))
        print(f"[{time.strftime('%H:%M:%S')}] {model}: {system}", flush=True)
        if system == "library":
            score = library_scorer(model, model_dir, plan.batch_size)
            results[system] = measure_library(score, online, training)
            del score
            continue
        log = logs / f"{model}-{system.replace(' ', '_').replace('=', '')}.log"
        if system == "vllm serve":
            proc: ServerProcess = EngineProcess(str(model_dir), *serve_args(model), log_path=log)
        else:
            reserved = system.split("=")[1]
            env = {"RERANKER_CPU_RESERVED_CORES": reserved}
            proc = ServerProcess(
                "--model", str(model_dir), "--dtype", "float32", log_path=log, env=env
            )
        try:
            proc.wait_ready(timeout=900)
            name = None
            if system == "vllm serve":
                name = httpx.get(f"{proc.url}/v1/models").json()["data"][0]["id"]
            results[system] = measure_server(proc.url, name, online, training, CONCURRENCY)
            reserve_line = [
                line.strip()
                for line in log.read_text(errors="replace").splitlines()
                if "reserve_cpu_num=" in line
            ]
            results[system]["engine_log"] = reserve_line[:1]
        finally:
            proc.stop()
        print(f"    {json.dumps(results[system])}", flush=True)
    return results


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | system | online c=8 pairs/s | training pairs/s | /health p50 / p95 / max ms"
        " | online vs library | training vs library |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, systems in results.items():
        lib = systems.get("library", {})
        for system, r in systems.items():
            h = r.get("health_ms")
            health = f"{h['p50']:.0f} / {h['p95']:.0f} / {h['max']:.0f}" if h else "-"
            ratios = [
                f"{r[k] / lib[k]:.2f}x" if lib.get(k) else "-"
                for k in ("online_pairs_per_s", "training_pairs_per_s")
            ]
            lines.append(
                f"| {model} | {system} | {r['online_pairs_per_s']:.0f} |"
                f" {r['training_pairs_per_s']:.0f} | {health} | {ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(PLANS))
    ap.add_argument(
        "--systems",
        nargs="+",
        default=["library", "reserved=0", "reserved=1", "vllm serve"],
    )
    ap.add_argument("--out", type=Path, default=Path("docs/engine-threads.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sentences = real_sentences(5000)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            results[model] = run_model(model, sentences, Path(tmp), args.systems)
    table = report(results)
    print(table)
    meta = {"cores": len(os.sched_getaffinity(0)), "concurrency": CONCURRENCY}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
