"""Unit tests of the batching queue's logic, with a fake scorer in place of the engine."""

from __future__ import annotations

import asyncio

import pytest
from reranker_server.batch_queue import BatchQueue, GroupKey
from reranker_server.errors import OverloadedError


class FakeScorer:
    """Stands in for the engine: records each batch and scores a pair by a pure function of it."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.batches: list[tuple[GroupKey, list[tuple[str, str]]]] = []
        self.delay = delay
        self.fail = fail

    @staticmethod
    def value(key: GroupKey, pair: tuple[str, str]) -> str:
        return f"{key.instruction}|{key.max_length}|{pair[0]}|{pair[1]}"

    async def __call__(self, key, pairs):
        self.batches.append((key, list(pairs)))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise self.fail
        return [self.value(key, p) for p in pairs]


def make_queue(scorer, **kw):
    opts = dict(max_batch_pairs=4, max_wait_ms=20, max_queued_pairs=1000)
    opts.update(kw)
    q = BatchQueue(scorer, **opts)
    q.start()
    return q


async def results(futures):
    await asyncio.wait(set(futures))
    return [f.result() for f in futures]


async def test_each_caller_gets_its_own_results_in_order():
    scorer = FakeScorer()
    q = make_queue(scorer)
    a, b = GroupKey("A", 10), GroupKey("B", 10)
    pairs_a = [("q1", f"d{i}") for i in range(7)]
    pairs_b = [("q2", f"d{i}") for i in range(3)]
    fa, fb = q.submit(a, pairs_a), q.submit(b, pairs_b)
    assert await results(fa) == [FakeScorer.value(a, p) for p in pairs_a]
    assert await results(fb) == [FakeScorer.value(b, p) for p in pairs_b]
    # Groups never mix, and no batch exceeds the size limit.
    for key, batch in scorer.batches:
        assert len(batch) <= 4
        assert all(p in (pairs_a if key == a else pairs_b) for p in batch)
    await q.close()


async def test_full_group_flushes_without_waiting():
    scorer = FakeScorer()
    q = make_queue(scorer, max_wait_ms=10_000)
    futures = q.submit(GroupKey(None, 5), [("q", str(i)) for i in range(4)])
    await asyncio.wait_for(results(futures), timeout=2)  # far less than max_wait
    assert [len(b) for _, b in scorer.batches] == [4]
    await q.close()


async def test_partial_group_flushes_after_max_wait():
    scorer = FakeScorer()
    q = make_queue(scorer, max_wait_ms=50)
    loop = asyncio.get_running_loop()
    started = loop.time()
    futures = q.submit(GroupKey(None, 5), [("q", "d")])
    await results(futures)
    assert loop.time() - started >= 0.045
    await q.close()


async def test_pairs_submitted_close_together_share_a_batch():
    scorer = FakeScorer()
    q = make_queue(scorer, max_batch_pairs=100, max_wait_ms=30)
    key = GroupKey(None, 5)
    f1 = q.submit(key, [("q", "a")])
    f2 = q.submit(key, [("q", "b"), ("q", "c")])
    await results(f1 + f2)
    assert len(scorer.batches) == 1 and len(scorer.batches[0][1]) == 3
    await q.close()


async def test_identical_pairs_in_flight_are_scored_once():
    scorer = FakeScorer(delay=0.05)
    q = make_queue(scorer, max_batch_pairs=2, max_wait_ms=1)
    key = GroupKey(None, 5)
    first = q.submit(key, [("q", "a"), ("q", "b")])
    await asyncio.sleep(0.02)  # now running in the engine
    second = q.submit(key, [("q", "b"), ("q", "a"), ("q", "a")])  # all already in flight
    assert await results(second) == [
        FakeScorer.value(key, p) for p in [("q", "b"), ("q", "a"), ("q", "a")]
    ]
    await results(first)
    scored = [p for _, b in scorer.batches for p in b]
    assert sorted(scored) == [("q", "a"), ("q", "b")]
    assert q.stats.deduplicated == 3
    await q.close()


async def test_same_pair_in_different_groups_is_not_shared():
    scorer = FakeScorer()
    q = make_queue(scorer)
    a, b = GroupKey("A", 5), GroupKey("A", 6)
    ra = await results(q.submit(a, [("q", "d")]))
    rb = await results(q.submit(b, [("q", "d")]))
    assert ra != rb
    await q.close()


async def test_engine_error_reaches_every_waiting_caller_and_queue_recovers():
    scorer = FakeScorer(fail=RuntimeError("boom"))
    q = make_queue(scorer)
    key = GroupKey(None, 5)
    futures = q.submit(key, [("q", "a"), ("q", "b")])
    await asyncio.wait(set(futures))
    for f in futures:
        with pytest.raises(RuntimeError, match="boom"):
            f.result()
    scorer.fail = None
    assert await results(q.submit(key, [("q", "a")])) == [FakeScorer.value(key, ("q", "a"))]
    await q.close()


async def test_overload_is_refused_with_429():
    scorer = FakeScorer(delay=1)
    q = make_queue(scorer, max_batch_pairs=2, max_queued_pairs=5, max_wait_ms=10_000)
    key = GroupKey(None, 5)
    q.submit(key, [("q", str(i)) for i in range(5)])
    with pytest.raises(OverloadedError) as exc:
        q.submit(key, [("q", "x")])
    assert exc.value.status_code == 429 and "limit 5" in exc.value.detail
    # Pairs already queued do not count twice.
    q.submit(key, [("q", "0")])
    await q.close()


async def test_oldest_ripe_group_goes_first():
    scorer = FakeScorer()
    q = make_queue(scorer, max_batch_pairs=100, max_wait_ms=10)
    old, new = GroupKey("old", 5), GroupKey("new", 5)
    f_old = q.submit(old, [("q", "1")])
    await asyncio.sleep(0)
    f_new = q.submit(new, [("q", "2")])
    await results(f_old + f_new)
    assert [k for k, _ in scorer.batches] == [old, new]
    await q.close()
