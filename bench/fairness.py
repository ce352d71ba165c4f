"""Online latency next to a same-group training stream (issue 16), and what training loses.

For each system (this checkout's service, ``main``'s service, ``vllm serve``) on one model:

- online ``/rerank`` of 2 documents, sent with the defaults: p50/p95 idle, then while four
  training clients keep requests of 512 pairs queued (one query x 512 fresh documents each, the
  default instruction and max_length, so the same group as the online requests);
- training pairs/s alone and with the online requests going.

For the service, the engine batches done in each window are read from its ``/metrics``, so the
online latency is also given in *batch intervals* (the training-alone window's seconds per
batch): the unit the queue's policy is about, and one that the machine's load moves less.

A system ``after+NAME=VALUE[+NAME=VALUE]`` is this checkout's service with those environment
variables (e.g. ``after+RERANKER_ENGINE_BATCHES_IN_FLIGHT=1``), to compare settings in one run.

Everything is measured in one run, one system after the other, warmed up; run it with ``nice``.
Usage: ``nice -n 10 python bench/fairness.py --model cross_encoder --systems after,main,vllm``.
Prints the figures and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _models import MODELS, path, serve_args
from _processes import ROOT, EngineProcess, ServerProcess, metric_samples

TRAINING_CLIENTS = 4
TRAINING_PAIRS = 512
MAIN_CHECKOUT = Path("/work/main")


class Target:
    """How to send the two kinds of request to one system."""

    def __init__(self, url: str, vllm: bool, model: str) -> None:
        self.url, self.vllm, self.model = url, vllm, model

    def online(self, client: httpx.Client, i: int) -> float:
        body: dict[str, Any] = {
            "query": f"online question {i} {uuid.uuid4().hex}",
            "documents": ["the first candidate answer", "the second candidate answer"],
        }
        if self.vllm:
            body["model"] = self.model
        started = time.monotonic()
        r = client.post(f"{self.url}/rerank", json=body)
        r.raise_for_status()
        return time.monotonic() - started

    def training(self, client: httpx.Client) -> int:
        tag = uuid.uuid4().hex
        docs = [f"candidate passage {i} for step {tag}" for i in range(TRAINING_PAIRS)]
        if self.vllm:  # vLLM has no pairs-by-index call: one query x the documents
            body = {"model": self.model, "query": f"training query {tag}", "documents": docs}
            client.post(f"{self.url}/rerank", json=body).raise_for_status()
        else:
            body = {
                "queries": [f"training query {tag}"],
                "documents": docs,
                "pairs": [[0, i] for i in range(TRAINING_PAIRS)],
            }
            client.post(f"{self.url}/rerank_batch_simple", json=body).raise_for_status()
        return TRAINING_PAIRS


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def engine_batches(t: Target) -> float | None:
    """Engine batches the service has run (None for ``vllm serve``, which has no such count)."""
    return None if t.vllm else metric_samples(t.url)[("reranker_engine_batch_pairs_count", ())]


def measure(t: Target, n_online: int, alone_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(timeout=600) as c:
        for i in range(3):  # warm-up
            t.online(c, -i)
        t.training(c)
        idle = [t.online(c, i) for i in range(n_online)]
    out["idle_p50_s"], out["idle_p95_s"] = statistics.median(idle), _pct(idle, 0.95)

    done: list[tuple[float, int]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=600) as c:
            while not stop.is_set():
                n = t.training(c)
                done.append((time.monotonic(), n))

    threads = [threading.Thread(target=client) for _ in range(TRAINING_CLIENTS)]
    for th in threads:
        th.start()
    try:
        time.sleep(alone_s / 2)  # the stream is flowing
        a0, n0 = time.monotonic(), engine_batches(t)
        time.sleep(alone_s)
        a1, n1 = time.monotonic(), engine_batches(t)
        loaded = []
        with httpx.Client(timeout=600) as c:
            for i in range(n_online):
                loaded.append(t.online(c, 1000 + i))
                time.sleep(0.2)
        b1 = time.monotonic()
    finally:
        stop.set()
        for th in threads:
            th.join()
    alone = sum(n for at, n in done if a0 <= at < a1) / (a1 - a0)
    mixed = sum(n for at, n in done if a1 <= at < b1) / (b1 - a1)
    out["loaded_p50_s"], out["loaded_p95_s"] = statistics.median(loaded), _pct(loaded, 0.95)
    out["loaded_s"] = loaded
    out["training_pairs_per_s_alone"] = alone
    out["training_pairs_per_s_with_online"] = mixed
    if n0 is not None and n1 is not None and n1 > n0:
        interval = (a1 - a0) / (n1 - n0)
        out["batch_interval_s"] = interval
        out["loaded_max_batches"] = max(loaded) / interval
        out["loaded_p50_batches"] = out["loaded_p50_s"] / interval
    return out


def run_system(system: str, model: str, tmp: Path, n_online: int, alone_s: float) -> dict:
    model_dir = path(model)
    log = tmp / f"{system}-{model}.log"
    if system == "vllm":
        proc: ServerProcess = EngineProcess(str(model_dir), *serve_args(model), log_path=log)
    else:
        name, *settings = system.split("+")
        code = ROOT if name == "after" else MAIN_CHECKOUT
        env = {"PYTHONPATH": f"{code / 'server'}:{code / 'client'}"}
        env.update(kv.split("=", 1) for kv in settings)  # type: ignore[arg-type]
        proc = ServerProcess("--model", str(model_dir), "--dtype", "float32", log_path=log, env=env)
    try:
        proc.wait_ready(timeout=900)
        served = str(model_dir)
        if system == "vllm":
            served = httpx.get(f"{proc.url}/v1/models").json()["data"][0]["id"]
        return measure(Target(proc.url, system == "vllm", served), n_online, alone_s)
    finally:
        proc.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, default="cross_encoder")
    p.add_argument("--systems", default="after,main,vllm")
    p.add_argument("--online", type=int, default=6, help="online requests per phase")
    p.add_argument("--alone-s", type=float, default=15.0, help="training-alone window")
    p.add_argument("--out", type=Path, default=Path("fairness.json"))
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, Any] = {"model": a.model, "cpus": os.cpu_count(), "systems": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for system in a.systems.split(","):
            r = run_system(system, a.model, Path(tmp), a.online, a.alone_s)
            results["systems"][system] = r
            print(
                f"{a.model} {system}: online idle p50 {r['idle_p50_s']:.3f} s "
                f"p95 {r['idle_p95_s']:.3f} s; under training p50 {r['loaded_p50_s']:.3f} s "
                f"p95 {r['loaded_p95_s']:.3f} s; training {r['training_pairs_per_s_alone']:.1f} "
                f"pairs/s alone, {r['training_pairs_per_s_with_online']:.1f} with online"
                + (
                    f"; batch interval {r['batch_interval_s']:.3f} s, online under training "
                    f"p50 {r['loaded_p50_batches']:.2f} max {r['loaded_max_batches']:.2f} batches"
                    if "batch_interval_s" in r
                    else ""
                ),
                flush=True,
            )
            a.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
