"""Crash-only start: a server whose engine cannot start or dies exits non-zero, so that restart
policies act. Real servers on the tiny cross-encoder (a corrupt copy, and one whose engine core
is killed from outside); the watch's logic alone on a fake backend."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from reranker_server.backend import EngineState
from reranker_server.crash_only import ENGINE_DIED, ENGINE_START_FAILED, CrashOnlyWatch
from reranker_server.inprocess_backend import SMALL_MACHINE_CORES, usable_cores
from server_process import ServerProcess


class FakeBackend:
    """Fake: only the state the watch reads."""

    def __init__(self, state: EngineState, alive: list[bool]) -> None:
        self.state, self.error, self._alive = state, "the engine failed to start: X: y", alive

    @property
    def alive(self) -> bool:
        return self._alive.pop(0) if self._alive else False


def _watch(backend: FakeBackend, *, watch_after_start: bool = True) -> list[int]:
    codes: list[int] = []

    async def run() -> None:
        loading = asyncio.create_task(asyncio.sleep(0))
        w = CrashOnlyWatch(
            backend,  # type: ignore[arg-type]
            watch_after_start=watch_after_start,
            interval_s=0.001,
            exit=codes.append,
        )
        await asyncio.wait_for(w.run(loading), 5)

    asyncio.run(run())
    return codes


def test_the_watch_exits_3_on_a_failed_start_and_1_when_the_engine_dies_later():
    assert _watch(FakeBackend(EngineState.FAILED, [])) == [ENGINE_START_FAILED]
    assert _watch(FakeBackend(EngineState.READY, [True, True, False])) == [ENGINE_DIED]


def test_remote_engines_are_not_watched_after_start():
    async def run() -> None:
        loading = asyncio.create_task(asyncio.sleep(0))
        w = CrashOnlyWatch(FakeBackend(EngineState.READY, []), watch_after_start=False)  # type: ignore[arg-type]
        await asyncio.wait_for(w.run(loading), 5)  # returns instead of exiting

    asyncio.run(run())


@pytest.mark.engine
def test_a_truncated_model_exits_3_with_the_reason_in_one_line(tmp_path, cross_encoder_dir):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(cross_encoder_dir, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    started = time.monotonic()
    server = ServerProcess("--model", str(corrupt), log_path=tmp_path / "corrupt.log")
    try:
        # Generous: on a loaded 2-core machine the engine core took minutes to reach the weights.
        code = server.proc.wait(timeout=600)
    finally:
        server.kill_tree()
    took = time.monotonic() - started
    log = server.log_path.read_text(errors="replace")
    assert code == ENGINE_START_FAILED, log[-3000:]
    lines = [line for line in log.splitlines() if "exiting with status 3" in line]
    assert len(lines) == 1 and "the engine failed to start" in lines[0], log[-3000:]
    # The root cause, not the engine core's "initialization failed".
    assert "model.safetensors cannot be loaded" in lines[0], lines[0]
    print(f"corrupt model: exit {code} after {took:.1f} s")


@pytest.mark.engine
def test_an_engine_killed_from_outside_makes_the_server_exit_1(tmp_path, cross_encoder_dir):
    server = ServerProcess(
        "--model", str(cross_encoder_dir), "--dtype", "float32", log_path=tmp_path / "killed.log"
    )
    try:
        server.wait_ready()
        # The CPU engine's threads (inprocess_backend.cpu_reserved_cores): all cores on a small
        # machine, vLLM's one reserved core above.
        reserved = 0 if usable_cores() <= SMALL_MACHINE_CORES else 1
        log = server.log_path.read_text(errors="replace")
        assert f"reserve_cpu_num={reserved}" in log
        # The engine runs on tcmalloc (inprocess_backend.tcmalloc_preload; the test tools install
        # libtcmalloc-minimal4): every engine process has it mapped, and vLLM's worker does not
        # warn that LD_PRELOAD has none.
        assert "libtcmalloc is not found in LD_PRELOAD" not in log
        children = server.descendants()
        assert children, "no engine process found"
        for child in children:
            maps = Path(f"/proc/{child.pid}/maps").read_text()
            assert "libtcmalloc" in maps, (child.name(), child.cmdline())
        url = server.url
        assert (
            httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200
        )
        engines = [
            p
            for p in server.descendants()
            if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()
        ]
        assert engines, "no engine core child process found"
        for p in engines:
            for victim in [*p.children(recursive=True), p]:
                victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = server.proc.wait(timeout=30)
        took = time.monotonic() - killed
        log = server.log_path.read_text(errors="replace")
        assert code == ENGINE_DIED, log[-3000:]
        assert "exiting with status 1" in log
        # No engine process is left behind by the exit.
        assert not [p for p in engines if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        print(f"killed engine: exit {code} {took:.1f} s after the kill")
    finally:
        server.kill_tree()
