"""The cpu image, built from the Dockerfile as a user builds it (on a debootstrapped Debian 12 base,
since no registry can be reached here), and its documented `docker run`."""

from __future__ import annotations

import json
import time
import uuid

import psutil
import pytest
from docker_engine import docker, wait_healthy
from rerank_check import assert_same_ranking_as
from server_process import ServerProcess, free_port

pytestmark = [pytest.mark.docker]

APP_UID = 10001


def test_the_image_builds_from_the_dockerfile_and_keeps_no_build_arg(docker_images):
    config = docker("image", "inspect", "--format", "{{json .Config}}", docker_images.reranker)
    cfg = json.loads(config.stdout)
    assert cfg["User"] == f"{APP_UID}:{APP_UID}"
    assert cfg["Cmd"] == ["reranker-server"]
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["RERANKER_HOST"] == "0.0.0.0" and env["HF_HUB_OFFLINE"] == "1"
    # The wheel source handed to the build is the build's business, not the image's.
    assert "PIP_FIND_LINKS" not in env and "TORCH_INDEX_URL" not in env


@pytest.mark.engine
def test_docker_run_as_documented_runs_non_root_turns_healthy_serves_and_stops_within_15s(
    docker_images, minilm_server: ServerProcess
):
    port = free_port()
    name = f"reranker-test-{uuid.uuid4().hex[:8]}"
    # The Dockerfile's documented `docker run --shm-size 1g`, on the host's network and loopback
    # (the tests' traffic stays on 127.0.0.1) instead of a published port.
    docker(
        "run", "--detach", "--name", name, "--shm-size", "1g", "--network", "host",
        "--env", "RERANKER_HOST=127.0.0.1", "--env", f"RERANKER_PORT={port}",
        "--env", "RERANKER_DTYPE=float32", docker_images.reranker,
    )  # fmt: skip
    try:
        wait_healthy(name)  # the image's own HEALTHCHECK
        pid = int(docker("inspect", "--format", "{{.State.Pid}}", name).stdout)
        init = psutil.Process(pid)
        processes = [init, *init.children(recursive=True)]
        assert len(processes) >= 3  # tini, the server, vLLM's engine core
        assert {p.uids().real for p in processes} == {APP_UID}

        assert_same_ranking_as(f"http://127.0.0.1:{port}", minilm_server.url)

        # A grace period well above 15 s: a stop that took the SIGKILL would show as slow or 137.
        started = time.monotonic()
        docker("stop", "--time", "60", name, timeout=120)
        elapsed = time.monotonic() - started
        state = docker("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
        exit_code, oom = state.stdout.split()
        assert elapsed < 15, f"docker stop took {elapsed:.1f} s"
        assert exit_code != "137" and oom == "false", state.stdout
    finally:
        docker("rm", "--force", name, check=False)
