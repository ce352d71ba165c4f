"""A second real server for the compatibility suites: API keys (from the environment and from a
key file), /metrics behind the key, a model alias and small input limits, so that each can be
seen to bite. Started once per session, next to the shared ``minilm_server``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from compat_helpers import ALIAS, ENV_KEYS, FILE_KEY, MAX_BYTES, MAX_CHARS
from server_process import ServerProcess


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("keyed")
    key_file = tmp / "api-keys"
    key_file.write_text(f"# mounted from a Secret\n\n  {FILE_KEY}  \n")
    env = {
        "RERANKER_API_KEY": " , ".join(ENV_KEYS),
        "RERANKER_API_KEY_FILE": str(key_file),
        "RERANKER_METRICS_REQUIRE_KEY": "true",
        "RERANKER_MODEL_ALIASES": f"{ALIAS},minilm",
        "RERANKER_MAX_REQUEST_BYTES": str(MAX_BYTES),
        "RERANKER_MAX_TEXT_CHARS": str(MAX_CHARS),
    }
    server = ServerProcess("--dtype", "float32", log_path=tmp / "keyed.log", env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyed(keyed_server: ServerProcess) -> Iterator[httpx.Client]:
    """An httpx client that sends a valid key."""
    headers = {"Authorization": f"Bearer {ENV_KEYS[0]}"}
    with httpx.Client(base_url=keyed_server.url, headers=headers, timeout=120) as client:
        yield client


@pytest.fixture
def plain(minilm_server: ServerProcess) -> Iterator[httpx.Client]:
    """The shared default server (no key, default limits)."""
    with httpx.Client(base_url=minilm_server.url, timeout=120) as client:
        yield client
