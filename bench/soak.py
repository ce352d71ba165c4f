"""Soak: does the server's memory stop growing under mixed traffic with fresh texts?

Starts the service on the embedded MiniLM (small cache bounds, so that they fill within the run),
then for ``--minutes`` sends online requests (``/v1/rerank``, one query x 20 documents) and
training calls (``/rerank_batch_simple``, 16 queries x 16 documents, 256 pairs) at once, every text
new: real sentences (docstrings of the standard library) with a counter, so that the caches never
stop filling. Every ``--every`` seconds it samples the RSS of the server process and of vLLM's
engine (every descendant process, summed, separately) and the caches' sizes from /metrics. Writes
a CSV, a plot (matplotlib, if installed) and prints the growth in each half of the run.

Run: ``nice -n 10 python bench/soak.py --minutes 10 --out docs/soak``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import inspect
import itertools
import pydoc
import random
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _processes import ServerProcess  # noqa: E402


def real_sentences(limit: int = 20_000) -> list[str]:
    """Sentences from the standard library's docstrings: real English nobody here wrote."""
    out: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this"}:
            continue
        try:
            module = pydoc.safeimport(name)
        except Exception:  # noqa: BLE001 - some modules do not import here
            continue
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) if callable(obj) else None
            for s in re.split(r"(?<=[.!?])\s+", doc or ""):
                s = " ".join(s.split())
                if 30 <= len(s) <= 300:
                    out.append(s)
        if len(out) >= limit:
            break
    return out


class Fresh:
    """An endless supply of texts never sent before: a real sentence and a counter."""

    def __init__(self, sentences: list[str], seed: int = 0) -> None:
        self.sentences, self.rng, self.n = sentences, random.Random(seed), itertools.count()

    def __call__(self) -> str:
        return f"{self.rng.choice(self.sentences)} ({next(self.n)})"


def _rss(server: ServerProcess) -> dict[str, float]:
    """RSS in MiB: the server process; the engine, every descendant summed (vLLM's engine core and
    the workers it spawns: the in-process backend's own process holds no weights); and the
    engine's shared memory (``RssShmem``: tensors handed between its processes)."""
    main = psutil.Process(server.proc.pid)
    engine = shmem = 0.0
    for p in main.children(recursive=True):
        try:
            engine += p.memory_info().rss
            status = Path(f"/proc/{p.pid}/status").read_text()
            found = re.search(r"RssShmem:\s+(\d+) kB", status)
            shmem += int(found.group(1)) * 1024 if found else 0
        except (psutil.Error, OSError):
            pass
    mib = 2**20
    return {
        "server_rss_mb": round(main.memory_info().rss / mib, 1),
        "engine_rss_mb": round(engine / mib, 1),
        "engine_shmem_mb": round(shmem / mib, 1),
    }


def _cache_metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("reranker_") and "cache" in line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                found[name] = float(value)
            except ValueError:
                pass
    return found


async def _online(client: httpx.AsyncClient, fresh: Fresh, stop: float, counts: dict) -> None:
    while time.monotonic() < stop:
        r = await client.post(
            "/v1/rerank", json={"query": fresh(), "documents": [fresh() for _ in range(20)]}
        )
        counts["online" if r.status_code == 200 else f"online {r.status_code}"] += 1


async def _training(client: httpx.AsyncClient, fresh: Fresh, stop: float, counts: dict) -> None:
    while time.monotonic() < stop:
        queries, docs = [fresh() for _ in range(16)], [fresh() for _ in range(16)]
        pairs = [[q, d] for q in range(16) for d in range(16)]
        r = await client.post(
            "/rerank_batch_simple", json={"queries": queries, "documents": docs, "pairs": pairs}
        )
        counts["training" if r.status_code == 200 else f"training {r.status_code}"] += 1


async def _traffic(url: str, fresh: Fresh, seconds: float, counts: dict) -> None:
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(
            *(_online(client, fresh, stop, counts) for _ in range(4)),
            _training(client, fresh, stop, counts),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--cache-size", type=int, default=50_000, help="RERANKER_CACHE_SIZE")
    ap.add_argument("--embedding-cache-mb", type=float, default=64.0)
    ap.add_argument("--out", type=Path, default=Path("docs/soak"))
    ap.add_argument("--plot", type=Path, help="only redraw the plot from this CSV")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the server and its engine (repeatable), e.g. "
        "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 or MALLOC_ARENA_MAX=2",
    )
    args = ap.parse_args()
    if args.plot:
        with args.plot.open() as f:
            plot(list(csv.DictReader(f)), args.plot.with_suffix(".png"))
        return
    sentences = real_sentences()
    print(f"{len(sentences)} real sentences from the standard library's docstrings")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env = {
        "RERANKER_CACHE_SIZE": str(args.cache_size),
        "RERANKER_EMBEDDING_CACHE_MB": str(args.embedding_cache_mb),
    }
    env.update(kv.split("=", 1) for kv in args.env)
    log = args.out.with_suffix(".server.log")
    server = ServerProcess("--dtype", "float32", log_path=log, env=env)
    rows: list[dict[str, float]] = []
    counts: Counter[str] = Counter()
    try:
        server.wait_ready(timeout=900)
        fresh = Fresh(sentences)
        asyncio.run(_traffic(server.url, fresh, 20, counts))  # warm-up, not sampled
        t0 = time.monotonic()
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rows.append(
                    {
                        "t_s": round(time.monotonic() - t0, 1),
                        **_rss(server),
                        "texts_sent": next(fresh.n),
                        **_cache_metrics(server.url),
                    }
                )
                done.wait(args.every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        asyncio.run(_traffic(server.url, fresh, args.minutes * 60, counts))
        done.set()
        sampler.join()
    finally:
        server.stop()
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "t_s", k))
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    print("requests:", dict(counts))
    half = len(rows) // 2
    for key in ("server_rss_mb", "engine_rss_mb", "engine_shmem_mb"):
        first, mid, last = rows[0][key], rows[half][key], rows[-1][key]
        print(
            f"{key}: start {first:.0f}, middle {mid:.0f}, end {last:.0f} MiB;"
            f" growth first half {mid - first:+.0f}, second half {last - mid:+.0f} MiB"
        )
    last = rows[-1]
    for key, value in sorted(last.items()):
        if "cache" in key:
            print(f"{key} at the end: {value:,.0f}")
    print(
        f"bounds: score cache {args.cache_size:,} entries,"
        f" embedding cache {args.embedding_cache_mb:.0f} MB, engine KV space"
        " VLLM_CPU_KVCACHE_SPACE=1 GiB"
    )
    plot(rows, args.out.with_suffix(".png"))


def plot(rows: list[dict[str, float]], path: Path) -> None:
    """RSS over time; ``--plot CSV`` redraws it from a run's CSV (in a venv with matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (redraw it later with --plot CSV)")
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    t = [float(r["t_s"]) / 60 for r in rows]
    ax.plot(t, [float(r["server_rss_mb"]) for r in rows], label="server RSS")
    ax.plot(t, [float(r["engine_rss_mb"]) for r in rows], label="engine RSS (core + workers)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("RSS under mixed online + training traffic, fresh texts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
