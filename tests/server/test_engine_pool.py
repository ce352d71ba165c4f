"""Unit tests of the remote engine pool's fail-over rules, with fake engines behind httpx's
MockTransport (the real-engine fail-over is in tests/scale/test_remote_engines.py)."""

from __future__ import annotations

import itertools

import httpx
import pytest
from reranker_server.engine_pool import EnginePool, NoEngineError


class FakeEngines:
    """Answers for each fake engine URL: a queue of faults to raise, then 200 with its name."""

    def __init__(self) -> None:
        self.faults: dict[str, list[str]] = {"http://a": [], "http://b": []}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = f"{request.url.scheme}://{request.url.host}"
        self.calls.append(url)
        fault = self.faults[url].pop(0) if self.faults[url] else None
        if fault == "timeout":
            raise httpx.ReadTimeout("read timed out", request=request)
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "500":
            return httpx.Response(500, text="batch made the engine fail")
        return httpx.Response(200, text=url)


async def _ask(client: httpx.AsyncClient, url: str) -> str:
    r = await client.post(f"{url}/score")
    r.raise_for_status()
    return r.text


@pytest.fixture
async def pool():
    engines = FakeEngines()
    async with httpx.AsyncClient(transport=httpx.MockTransport(engines)) as client:
        p = EnginePool(["http://a", "http://b"], client, 1.0, failure_threshold=3)
        for e in p.engines:
            e.healthy = True
        p.fake = engines
        yield p


async def _on_a_first(pool: EnginePool) -> str:
    """A call that tries engine a first (while it is in the pool), then b."""
    pool._turn = itertools.repeat(0)
    return await pool.call(_ask)


@pytest.mark.parametrize("fault", ["timeout", "500"])
async def test_one_timeout_or_5xx_fails_over_without_ejecting(pool, fault):
    pool.fake.faults["http://a"] = [fault]
    assert await _on_a_first(pool) == "http://b"  # the batch was still answered
    a = pool.engines[0]
    assert a.healthy and a.failures == 1
    assert await _on_a_first(pool) == "http://a"
    assert a.failures == 0  # a success clears the count


async def test_failures_in_a_row_up_to_the_threshold_eject(pool):
    pool.fake.faults["http://a"] = ["timeout", "500", "timeout"]
    for _ in range(3):
        assert await _on_a_first(pool) == "http://b"
    assert not pool.engines[0].healthy
    assert [await pool.call(_ask) for _ in range(4)] == ["http://b"] * 4


async def test_a_refused_connection_ejects_at_once(pool):
    pool.fake.faults["http://a"] = ["refused"]
    assert await _on_a_first(pool) == "http://b"
    assert not pool.engines[0].healthy


async def test_when_every_engine_fails_the_batch_the_error_names_them(pool):
    pool.fake.faults = {"http://a": ["500"], "http://b": ["500"]}
    with pytest.raises(NoEngineError, match="http://a: HTTPStatusError.*http://b"):
        await _on_a_first(pool)
    assert all(e.healthy for e in pool.engines)
