"""The Docker engine the docker tests run on: Debian's docker.io (``deploy/install-test-tools.sh``).

When no engine answers, one is started here for the session (as root) with a data root of its own,
and stopped and deleted afterwards. An engine that was already running is used as it is and left
running. Its storage driver is overlay2 where the kernel can mount an overlay on the data root, and
vfs otherwise: vfs works everywhere but copies the whole image (4 GB) into every new container.

The client is ``/usr/bin/docker`` with ``DOCKER_BUILDKIT=1``: another ``docker`` earlier on PATH may
lack BuildKit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

DOCKER = "/usr/bin/docker"
DATA_ROOT = Path("/var/lib/reranker-test-docker")


def docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


# Commands that may copy or delete a whole filesystem: on vfs, `docker run` copies the 4 GB image
# into the new container and `docker rm` deletes that copy. One `run` took over 120 s in CI.
FILESYSTEM_COMMANDS = {"run", "create", "commit", "rm", "rmi"}
FILESYSTEM_TIMEOUT = 900.0


def docker(
    *args: str, timeout: float | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the docker client; on failure, the assertion shows the command and its output.

    Without ``timeout``: 15 minutes for commands in ``FILESYSTEM_COMMANDS``, 2 minutes otherwise.
    """
    if timeout is None:
        timeout = FILESYSTEM_TIMEOUT if args[0] in FILESYSTEM_COMMANDS else 120
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=docker_env()
    )
    if check:
        assert result.returncode == 0, (
            f"docker {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def engine_answers() -> bool:
    if not Path(DOCKER).exists():
        return False
    return docker("info", timeout=30, check=False).returncode == 0


def overlay_mounts(root: Path) -> bool:
    """Whether an overlay filesystem can be mounted under ``root`` (tried, then taken down)."""
    probe = Path(tempfile.mkdtemp(prefix="overlay-probe-", dir=root))
    dirs = [probe / d for d in ("lower", "upper", "work", "merged")]
    try:
        for d in dirs:
            d.mkdir()
        lower, upper, work, merged = dirs
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
            capture_output=True,
            timeout=30,
        )
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", str(merged)], capture_output=True, timeout=30, check=True)
        return True
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class DockerEngine:
    """The engine for the session: the running one, or a ``dockerd`` started (and stopped) here."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if engine_answers():
            return
        assert Path(DOCKER).exists() and shutil.which("dockerd"), (
            "Docker is not installed: run `bash deploy/install-test-tools.sh`"
        )
        assert os.geteuid() == 0, "no Docker engine answers, and starting dockerd needs root"
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        storage_driver = "overlay2" if overlay_mounts(DATA_ROOT) else "vfs"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                f"--storage-driver={storage_driver}",
                f"--data-root={DATA_ROOT}",
                f"--pidfile={DATA_ROOT}/dockerd.pid",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while not engine_answers():
            assert self.proc.poll() is None, f"dockerd exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"dockerd did not answer:\n{self.log_tail()}"
            time.sleep(1)

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        """Stop the dockerd started here and delete its data."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        # The data root holds mounts of containers only while they run; by now none does.
        shutil.rmtree(DATA_ROOT, ignore_errors=True)


def wait_healthy(container: str, timeout: float = 420) -> None:
    """Until Docker reports the container's HEALTHCHECK healthy; fails early if it stops."""
    deadline = time.monotonic() + timeout
    while True:
        fmt = "{{.State.Status}} {{.State.Health.Status}}"
        state = docker("inspect", "--format", fmt, container)
        status, health = state.stdout.split()
        if health == "healthy":
            return
        logs = docker("logs", "--tail", "40", container, check=False)
        assert status == "running", f"{container} is {status}:\n{logs.stdout}{logs.stderr}"
        assert time.monotonic() < deadline, f"{container} not healthy:\n{logs.stdout}{logs.stderr}"
        time.sleep(3)
