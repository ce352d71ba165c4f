"""The fast tier: the real app (routes, errors, auth, limits, queue, caches) on ``FakeBackend``.

No engine starts, so the whole directory runs in seconds: ``pytest tests/fast``. Each app is
driven through its lifespan by Starlette's ``TestClient``, as uvicorn would run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_backend import FakeBackend
from reranker_server.app import create_app
from reranker_server.settings import Settings
from starlette.testclient import TestClient


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: the fast tier (tests/fast, no engine)")


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    """Until /health answers 200 (the fake loads at once; the tokenizer's first load is slower)."""
    deadline = time.monotonic() + timeout
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health").text
        time.sleep(0.01)


class FakeApp:
    """One app on a ``FakeBackend``: ``client`` talks to it through its lifespan."""

    def __init__(self, client: TestClient, backend: FakeBackend, settings: Settings) -> None:
        self.client = client
        self.backend = backend
        self.settings = settings

    def wait_ready(self) -> None:
        wait_ready(self.client)


ServeFn = Callable[..., FakeApp]


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """``serve(ready=True, headers=None, **settings)``: start an app; all stop at the test's end."""
    started: list[TestClient] = []

    def start(ready: bool = True, headers: dict[str, str] | None = None, **fields: Any) -> FakeApp:
        settings = Settings(**fields)
        backend = FakeBackend(settings)
        if not ready:
            backend.hold_loading()
        client = TestClient(create_app(settings, backend=backend), headers=headers)
        client.__enter__()
        started.append(client)
        if ready:
            wait_ready(client)
        return FakeApp(client, backend, settings)

    yield start
    for client in reversed(started):
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def plain() -> Iterator[TestClient]:
    """The default settings (bi-encoder, no keys), shared by a module's read-only tests."""
    settings = Settings()
    with TestClient(create_app(settings, backend=FakeBackend(settings))) as client:
        wait_ready(client)
        yield client
