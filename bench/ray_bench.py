"""Throughput of the Ray Serve app with 1 and 2 engine replicas, beside the ENGINE_URLS pool.

    nice -n 10 python bench/ray_bench.py [--requests 24] [--concurrency 4] [--batch-max-pairs N]
        [--out FILE.json]

One workload for every system: training-style ``/rerank_batch_simple`` requests on real text
(the docstrings of the standard library's public functions: the query is the function's name
as a question, the documents are docstrings), every text distinct so that no cache answers it,
and the service's caches off. all-MiniLM-L6-v2 in float32, as the tests run it. Systems:

- ``inprocess``: ``reranker-server`` with its engine in process (what one machine runs today);
- ``pool-2``: ``reranker-server`` with ``ENGINE_URLS`` of two ``vllm serve`` engines (today's
  home-made balancer);
- ``ray-1`` / ``ray-2``: the Ray Serve app (one ingress replica) on a two-node loopback cluster
  with one, then two engine replicas, one per node.

On a 2-core machine two engines share the same two cores: read the ratios as the overhead of
each path, not as scaling. The figures go to stdout and, with ``--out``, to a JSON file.
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _processes import EngineProcess, ServerProcess
from reranker_server.settings import Settings
from reranker_server.testing.ray_cluster import LoopbackRayCluster, wait_until

_MODULES = (
    "os", "json", "re", "collections", "itertools", "functools", "pathlib", "shutil", "string",
    "textwrap", "datetime", "statistics", "random", "inspect", "typing", "asyncio", "subprocess",
    "socket", "http.client", "urllib.parse", "email.utils", "logging", "argparse", "csv", "zipfile",
    "tarfile", "gzip", "base64", "hashlib", "heapq", "bisect", "copy", "pickle", "sqlite3",
)  # fmt: skip
_CACHES_OFF = {"cache_size": 0, "embedding_cache_size": 0}


def real_text() -> list[tuple[str, str]]:
    """(question, docstring) for each documented public function of the modules above."""
    import importlib

    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name in _MODULES:
        module = importlib.import_module(name)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or not callable(obj):
                continue
            doc = inspect.getdoc(obj) or ""
            doc = " ".join(doc.split())[:600]
            if len(doc) < 40 or doc in seen:
                continue
            seen.add(doc)
            out.append((f"What does {name}.{attr} do?", doc))
    return out


def workload(n_requests: int, per_request: int = 16, negatives: int = 4) -> list[dict[str, Any]]:
    """Requests of ``per_request`` queries and documents; each query is paired with its own
    docstring and ``negatives`` others of the same request."""
    items = real_text()
    need = n_requests * per_request
    if len(items) < need:
        raise SystemExit(f"only {len(items)} documented functions, {need} needed")
    bodies = []
    for r in range(n_requests):
        chunk = items[r * per_request : (r + 1) * per_request]
        pairs = [
            [q, (q + k) % per_request] for q in range(per_request) for k in range(negatives + 1)
        ]
        bodies.append(
            {"queries": [q for q, _ in chunk], "documents": [d for _, d in chunk], "pairs": pairs}
        )
    return bodies


def measure(url: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Send every body at ``concurrency``; pairs per second over the whole run."""

    def send(body: dict[str, Any]) -> int:
        r = client.post("/rerank_batch_simple", json=body)
        r.raise_for_status()
        return len(r.json()["scores"])

    with httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            pairs = sum(pool.map(send, bodies))
        seconds = time.perf_counter() - started
    return {"pairs": pairs, "seconds": round(seconds, 2), "pairs_per_s": round(pairs / seconds, 1)}


def run_system(url: str, warm: list[dict[str, Any]], bodies: list[dict[str, Any]], c: int) -> Any:
    measure(url, warm, c)  # the first calls are much slower (warm-up)
    return measure(url, bodies, c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument(
        "--batch-max-pairs", type=int, help="pairs per engine batch (default: the service's)"
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    all_bodies = workload(args.requests + 4)
    warm, bodies = all_bodies[:4], all_bodies[4:]
    logs = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    results: dict[str, Any] = {}
    flags = ["--dtype", "float32"]
    service_settings: dict[str, Any] = dict(_CACHES_OFF)
    if args.batch_max_pairs:
        service_settings["batch_max_pairs"] = args.batch_max_pairs
    env = {f"RERANKER_{k.upper()}": str(v) for k, v in service_settings.items()}

    server = ServerProcess(*flags, log_path=logs / "inprocess.log", env=env)
    try:
        server.wait_ready()
        results["inprocess"] = run_system(server.url, warm, bodies, args.concurrency)
    finally:
        server.stop()
    print("inprocess", results["inprocess"], flush=True)

    from tiny_models import MINILM_DIR

    engines = [EngineProcess(str(MINILM_DIR), log_path=logs / f"engine{i}.log") for i in (0, 1)]
    try:
        for e in engines:
            e.wait_ready()
        urls = [a for e in engines for a in ("--engine-url", e.url)]
        server = ServerProcess(
            "--model", str(MINILM_DIR), *urls, log_path=logs / "pool.log", env=env
        )
        try:
            server.wait_ready()
            results["pool-2"] = run_system(server.url, warm, bodies, args.concurrency)
        finally:
            server.stop()
    finally:
        for e in engines:
            e.stop()
    print("pool-2", results["pool-2"], flush=True)

    import ray
    from ray import serve
    from reranker_server.ray_serve import EngineDeployment, RerankerIngress

    cluster = LoopbackRayCluster(logs)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": cluster.http_port})
        url = f"http://127.0.0.1:{cluster.http_port}"
        settings = {"dtype": "float32", "engine_batches_in_flight": 4, **service_settings}
        for n in (1, 2):
            engine = EngineDeployment.options(
                num_replicas=n,
                ray_actor_options={"num_cpus": 1, "resources": {"engine_slot": 1}},
            ).bind(settings)
            serve.run(RerankerIngress.bind(engine, settings), name="reranker", route_prefix="/")

            def healthy() -> bool:
                try:
                    return httpx.get(f"{url}/health", timeout=10).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(healthy, 300, "the Ray app")
            results[f"ray-{n}"] = run_system(url, warm, bodies, args.concurrency)
            print(f"ray-{n}", results[f"ray-{n}"], flush=True)
        serve.shutdown()
        ray.shutdown()
    finally:
        cluster.stop()

    base = results["inprocess"]["pairs_per_s"]
    for r in results.values():
        r["vs_inprocess"] = round(r["pairs_per_s"] / base, 2)
    report = {
        "workload": {
            "requests": len(bodies),
            "pairs_per_request": len(bodies[0]["pairs"]),
            "texts_per_request": 2 * len(bodies[0]["queries"]),
            "concurrency": args.concurrency,
            "batch_max_pairs": service_settings.get(
                "batch_max_pairs", Settings.model_fields["batch_max_pairs"].default
            ),
            "text": "standard-library docstrings (real text), every text distinct, caches off",
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
