"""Bare `docker compose up`, as a user runs it: docker-compose.yml unchanged, with the images built
here (the stand-ins carry the names the file uses). Its ports are published on 127.0.0.1, so the
tests talk to loopback only."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from docker_engine import DOCKER, docker, wait_healthy
from rerank_check import assert_same_ranking_as
from server_process import ServerProcess

pytestmark = [pytest.mark.docker, pytest.mark.engine]

ROOT = Path(__file__).parents[2]
PROJECT = "reranker-compose-test"
RERANKER = "http://127.0.0.1:8000"
PROMETHEUS = "http://127.0.0.1:9090"


def compose(*args: str, timeout: float = 900) -> str:
    # The file's own defaults (no RERANKER_API_KEY and the like from the caller), the Docker client
    # with BuildKit, and time enough for vfs to copy or delete a 4 GB container.
    env = {
        "PATH": f"{Path(DOCKER).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/"),
        "DOCKER_BUILDKIT": "1",
        "COMPOSE_HTTP_TIMEOUT": "900",
    }
    result = subprocess.run(
        ["docker-compose", "--project-name", PROJECT, "--file", str(ROOT / "docker-compose.yml")]
        + list(args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stderr[-4000:]}"
    return result.stdout


def _project_objects() -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    return {
        kind: docker(*cmd, "--filter", label, "--quiet").stdout.split()
        for kind, cmd in {
            "containers": ("ps", "--all"),
            "volumes": ("volume", "ls"),
            "networks": ("network", "ls"),
        }.items()
    }


@pytest.fixture(scope="module")
def stack(docker_images) -> Iterator[dict[str, str]]:
    """`docker compose up` (no profile), detached; service name -> container name."""
    for port in (8000, 9090):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"127.0.0.1:{port} is taken"
    try:
        compose("up", "--detach")
        containers = {}
        for service in compose("ps", "--services", "--filter", "status=running").split():
            containers[service] = compose("ps", "--quiet", service).strip()
        yield containers
    finally:
        compose("down", "--volumes", "--remove-orphans")


def test_bare_compose_up_starts_the_cpu_reranker_and_prometheus_and_both_turn_healthy(stack):
    assert set(stack) == {"reranker", "prometheus"}
    for container in stack.values():
        wait_healthy(container)
    assert httpx.get(f"{RERANKER}/health", timeout=10).json()["status"] == "ok"


def test_rerank_through_compose_matches_the_venv_server(stack, minilm_server: ServerProcess):
    wait_healthy(stack["reranker"])
    assert_same_ranking_as(RERANKER, minilm_server.url)


def _query(expr: str) -> list[dict]:
    body = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_in_compose_scrapes_the_reranker(stack):
    wait_healthy(stack["reranker"])
    httpx.post(f"{RERANKER}/rerank", json={"query": "q", "documents": ["d"]}, timeout=120)
    deadline = time.monotonic() + 60
    while True:
        up = _query('up{job="reranker"}')
        served = _query('reranker_requests_total{endpoint="/rerank",status="200"}')
        if up and up[0]["value"][1] == "1" and served and float(served[0]["value"][1]) >= 1:
            break
        assert time.monotonic() < deadline, f"not scraped: up={up} served={served}"
        time.sleep(2)
    assert up[0]["metric"]["instance"] == "reranker:8000"
    assert float(_query("reranker_engine_up")[0]["value"][1]) == 1.0


def test_compose_down_v_removes_containers_volumes_and_network(stack):
    assert all(_project_objects().values()), "the stack left nothing to remove"
    compose("down", "--volumes", "--remove-orphans")
    assert _project_objects() == {"containers": [], "volumes": [], "networks": []}
