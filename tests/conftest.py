"""Shared fixtures: one real server per model family, started once and shared.

Engines take 20-40 s to start on this machine, so the MiniLM (bi-encoder) server lives for the whole
session and each tiny-model server for the module that uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess
from tiny_models import MINILM_DIR, write_tiny_cross_encoder, write_tiny_qwen3_reranker


def _serve(tmp: Path, name: str, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(*args, log_path=tmp / f"{name}.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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


@pytest.fixture(scope="module")
def cross_encoder_server(
    tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path
) -> Iterator[ServerProcess]:
    yield from _serve(
        tmp_path_factory.mktemp("ce"),
        "cross-encoder",
        "--model",
        str(cross_encoder_dir),
        "--dtype",
        "float32",
    )


@pytest.fixture(scope="module")
def qwen3_server(
    tmp_path_factory: pytest.TempPathFactory, qwen3_dir: Path
) -> Iterator[ServerProcess]:
    yield from _serve(
        tmp_path_factory.mktemp("qwen3"),
        "qwen3",
        "--model",
        str(qwen3_dir),
        "--dtype",
        "float32",
    )


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return MINILM_DIR


@pytest.fixture
def http(minilm_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=minilm_server.url, timeout=120) as client:
        yield client
