"""Shared fixtures: real servers per model family, started once and shared.

Engines take 20-40 s to start on this machine, so the MiniLM (bi-encoder) servers live for the
whole session and each tiny-model server for the module that uses it.

The API suites run against both backends: ``inprocess`` (the engine inside the server) and
``remote`` (the server in front of a real ``vllm serve`` engine process).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import EngineProcess, ServerProcess
from tiny_models import MINILM_DIR, write_tiny_cross_encoder, write_tiny_qwen3_reranker

BACKENDS = ["inprocess", "remote"]
QWEN3_OVERRIDES = json.dumps(
    {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    }
)


def _serve(tmp: Path, name: str, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(*args, log_path=tmp / f"{name}.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _serve_on(
    backend: str, tmp: Path, name: str, model: Path, engine_args: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """The service on ``model``, with its engine in process or in a `vllm serve` of its own."""
    if backend == "inprocess":
        yield from _serve(tmp, name, "--model", str(model), "--dtype", "float32")
        return
    engine = EngineProcess(str(model), *engine_args, log_path=tmp / f"{name}-engine.log")
    try:
        engine.wait_ready()
        yield from _serve(tmp, name, "--model", str(model), "--engine-url", engine.url)
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def minilm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The embedded default model (all-MiniLM-L6-v2, bi-encoder), as `reranker-server` runs it."""
    yield from _serve(tmp_path_factory.mktemp("minilm"), "minilm", "--dtype", "float32")


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder")


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen3_reranker(tmp_path_factory.mktemp("models") / "tiny-qwen3-reranker")


@pytest.fixture(scope="session", params=BACKENDS)
def api_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The default model behind either backend; the API suite runs once per backend."""
    if request.param == "inprocess":
        yield request.getfixturevalue("minilm_server")
        return
    yield from _serve_on("remote", tmp_path_factory.mktemp("api"), "minilm-remote", MINILM_DIR)


@pytest.fixture(scope="module", params=BACKENDS)
def cross_encoder_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cross_encoder_dir: Path,
) -> Iterator[ServerProcess]:
    yield from _serve_on(
        request.param, tmp_path_factory.mktemp("ce"), "cross-encoder", cross_encoder_dir
    )


@pytest.fixture(scope="module", params=BACKENDS)
def qwen3_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, qwen3_dir: Path
) -> Iterator[ServerProcess]:
    yield from _serve_on(
        request.param,
        tmp_path_factory.mktemp("qwen3"),
        "qwen3",
        qwen3_dir,
        ("--hf-overrides", QWEN3_OVERRIDES),
    )


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return MINILM_DIR


@pytest.fixture
def http(api_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, timeout=120) as client:
        yield client
