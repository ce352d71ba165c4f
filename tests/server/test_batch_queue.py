"""Unit tests of the batching queue's logic, with a fake scorer in place of the engine."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from reranker_server.batch_queue import BatchQueue
from reranker_server.errors import EngineUnavailableError, OverloadedError
from reranker_server.metrics import QueueMetrics
from reranker_server.scoring import GroupKey


class FakeScorer:
    """Stands in for the engine: records each batch and scores a pair by a pure function of it."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.batches: list[tuple[GroupKey, list[tuple[str, str]]]] = []
        self.delay = delay
        self.fail = fail
        self.running = 0
        self.most_running = 0

    @staticmethod
    def value(key: GroupKey, pair: tuple[str, str]) -> str:
        return f"{key.instruction}|{key.max_length}|{pair[0]}|{pair[1]}"

    async def __call__(self, key, pairs):
        self.batches.append((key, list(pairs)))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if self.fail:
            raise self.fail
        return [self.value(key, p) for p in pairs]


def make_queue(scorer, registry: CollectorRegistry | None = None, **kw):
    """A started queue; its metrics go to ``registry`` if given."""
    opts = dict(max_batch_pairs=4, max_wait_ms=20, max_queued_pairs=1000)
    if registry is not None:
        opts["metrics"] = QueueMetrics(registry)
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
    registry = CollectorRegistry()
    q = make_queue(scorer, registry, max_batch_pairs=2, max_wait_ms=1)
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
    assert registry.get_sample_value("reranker_pairs_deduplicated_total") == 3
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


async def _keep_fed(q, key, stop: asyncio.Event, backlog: int) -> None:
    """A training stream: keeps at least ``backlog`` pairs of one group queued, all the time."""
    n = 0
    while not stop.is_set():
        if q.depth < backlog:
            q.submit(key, [("stream", f"d{n + i}") for i in range(4)])
            n += 4
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_a_continuously_fed_group_does_not_starve_another(in_flight):
    """The issue's starvation: a stream of one group kept queued, then one pair of another group.
    It must be scored within a couple of batches, not when the stream stops."""
    scorer = FakeScorer(delay=0.01)
    q = make_queue(scorer, max_batch_pairs=4, max_wait_ms=5, max_in_flight=in_flight)
    stream, online = GroupKey(None, 5), GroupKey("another instruction", 5)
    stop = asyncio.Event()
    feeder = asyncio.create_task(_keep_fed(q, stream, stop, backlog=40))
    await asyncio.sleep(0.1)  # the stream is flowing, with ten batches queued
    before = len(scorer.batches)
    futures = q.submit(online, [("online", "d")])
    await asyncio.wait_for(results(futures), timeout=5)
    # Batches cut after it was queued and before it: at most those in flight, then its own.
    online_at = next(i for i, (k, _) in enumerate(scorer.batches) if k == online)
    assert online_at - before <= in_flight
    assert q.depth >= 20, "the stream stopped, so this did not test sustained load"
    stop.set()
    await feeder
    await q.close()


async def test_ripe_groups_take_turns():
    scorer = FakeScorer(delay=0.005)
    q = make_queue(scorer, max_batch_pairs=2, max_wait_ms=1)
    a, b, c = GroupKey("a", 5), GroupKey("b", 5), GroupKey("c", 5)
    futures = q.submit(a, [("q", str(i)) for i in range(6)])
    futures += q.submit(b, [("q", str(i)) for i in range(4)])
    futures += q.submit(c, [("q", "0")])
    await results(futures)
    assert [k.instruction for k, _ in scorer.batches] == ["a", "b", "c", "a", "b", "a"]
    await q.close()


async def test_a_new_group_goes_before_a_stream_that_was_served_while_alone():
    """A stream served twice while it was alone must not keep its turn when a newcomer arrives:
    the next batch cut is the newcomer's (the least recently served group goes first)."""
    scorer = FakeScorer(delay=0.05)
    q = make_queue(scorer, max_batch_pairs=2, max_wait_ms=1, max_in_flight=1)
    stream, online = GroupKey("stream", 5), GroupKey("online", 5)
    futures = q.submit(stream, [("q", str(i)) for i in range(12)])
    while len(scorer.batches) < 2:  # two stream batches cut while it is the only group
        await asyncio.sleep(0.005)
    futures += q.submit(online, [("q", "x")])
    await results(futures)
    order = [k.instruction for k, _ in scorer.batches]
    # The second stream batch was in flight when the newcomer arrived; the next one is its.
    assert order[:3] == ["stream", "stream", "online"], order
    assert order.count("online") == 1
    await q.close()


async def test_several_batches_in_flight():
    scorer = FakeScorer(delay=0.05)
    q = make_queue(scorer, max_batch_pairs=2, max_wait_ms=1, max_in_flight=3)
    key = GroupKey(None, 5)
    pairs = [("q", str(i)) for i in range(12)]
    assert await results(q.submit(key, pairs)) == [FakeScorer.value(key, p) for p in pairs]
    assert scorer.most_running == 3
    await q.close()


async def test_a_hung_engine_breaks_the_queue_with_503():
    scorer = FakeScorer(delay=60)
    reasons: list[str] = []
    q = make_queue(scorer, max_wait_ms=1, batch_timeout_s=0.1, on_failure=reasons.append)
    key = GroupKey(None, 5)
    running = q.submit(key, [("q", str(i)) for i in range(4)])
    await asyncio.sleep(0.02)
    waiting = q.submit(key, [("q", "later")])
    await asyncio.wait_for(asyncio.wait(set(running + waiting)), timeout=5)
    for f in running + waiting:
        assert isinstance(f.exception(), EngineUnavailableError)
        assert "did not answer" in f.exception().detail
    assert len(reasons) == 1 and "within 0.1 s" in reasons[0]
    with pytest.raises(EngineUnavailableError):
        q.submit(key, [("q", "new")])
    await q.close()


async def test_a_dead_queue_task_fails_callers_and_reports_it():
    q = make_queue(FakeScorer(), max_wait_ms=50)
    reasons: list[str] = []
    q._on_failure = reasons.append

    def broken(now):  # a fault inside the queue's own loop (a bug), injected for the test
        raise ValueError("bug in the queue")

    q._next_batch = broken
    futures = q.submit(GroupKey(None, 5), [("q", "d")])
    await asyncio.wait_for(asyncio.wait(set(futures)), timeout=5)
    assert isinstance(futures[0].exception(), EngineUnavailableError)
    assert reasons and "bug in the queue" in reasons[0]
    with pytest.raises(EngineUnavailableError, match="batch queue stopped"):
        q.submit(GroupKey(None, 5), [("q", "e")])
    await q.close()


async def test_shutdown_fails_queued_and_running_callers_with_503():
    scorer = FakeScorer(delay=60)
    q = make_queue(scorer, max_batch_pairs=2, max_wait_ms=1)
    key = GroupKey(None, 5)
    futures = q.submit(key, [("q", str(i)) for i in range(5)])
    await asyncio.sleep(0.05)  # the first batch is in the engine, the rest queued
    assert scorer.batches
    await asyncio.wait_for(q.close(), timeout=5)
    for f in futures:
        assert isinstance(f.exception(), EngineUnavailableError)
        assert "shutting down" in f.exception().detail


# ---- fairness within a group, priority, aging (issue 16) ---------------------------------------


async def _feed_same_group(q, key, stop: asyncio.Event, backlog: int, priority: int = 0) -> None:
    """Four training clients of one group: each keeps a request of 40 pairs queued."""
    n = 0
    while not stop.is_set():
        if q.depth < backlog:
            q.submit(key, [("train", f"d{n + i}") for i in range(40)], priority)
            n += 40
        await asyncio.sleep(0.001)


async def _training_client(q, key, stop: asyncio.Event, name: str, size: int) -> None:
    """A training client: one request of ``size`` pairs at a time, the next sent on its answer."""
    n = 0
    while not stop.is_set():
        await results(q.submit(key, [(name, f"d{n + i}") for i in range(size)]))
        n += size


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_a_small_request_is_in_the_next_batch_of_its_own_group_under_a_backlog(in_flight):
    """The issue's case: training and online traffic share one group (default instruction and
    max_length). Behind four training clients with 160 pairs each queued (40 batches), a 2-pair
    request is cut at most one batch after the one it would get idle (the first cut once it is
    queued), and batches stay full."""
    scorer = FakeScorer(delay=0.01)
    q = make_queue(scorer, max_batch_pairs=16, max_wait_ms=5, max_in_flight=in_flight)
    key = GroupKey(None, 5)
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(_training_client(q, key, stop, f"train{i}", 160)) for i in range(4)
    ]
    await asyncio.sleep(0.05)
    assert q.depth >= 320, "no backlog: this would not test sustained load"
    before = len(scorer.batches)  # cut already (in flight or done); the next cut is "idle"'s
    online = [("online", "a"), ("online", "b")]
    futures = q.submit(key, online)
    assert await asyncio.wait_for(results(futures), timeout=5) == [
        FakeScorer.value(key, p) for p in online
    ]
    cut_at = max(i for i, (_, b) in enumerate(scorer.batches) for p in b if p in online)
    assert cut_at - before <= 1, (cut_at, before)
    assert q.depth >= 160, "the backlog drained, so this did not test sustained load"
    stop.set()
    await asyncio.gather(*clients)
    # Batches stay full under load: every batch but the stream's last few is full.
    sizes = [len(b) for _, b in scorer.batches]
    assert all(n == 16 for n in sizes[: cut_at + 5]), sizes
    await q.close()


async def test_a_small_request_goes_first_although_the_training_backlog_has_aged():
    """The backlog outlasts ``priority_aging_s`` (on two cores 8 batches of 4-5 s against 10 s),
    so every training request has aged. Aging must not lift them past a fresh request of their
    own priority: the 2-pair request is still cut in the first batch after it is queued. (Aged
    by time within its own priority, the training backlog went first: first-in-first-out.)"""
    scorer = FakeScorer(delay=0.01)
    q = make_queue(scorer, max_batch_pairs=16, max_wait_ms=5, priority_aging_s=0.02)
    key = GroupKey(None, 5)
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(_training_client(q, key, stop, f"train{i}", 160)) for i in range(4)
    ]
    await asyncio.sleep(0.2)  # 10 aging steps: every queued training request has aged
    assert q.depth >= 320, "no backlog: this would not test sustained load"
    before = len(scorer.batches)
    online = [("online", "a"), ("online", "b")]
    await asyncio.wait_for(results(q.submit(key, online)), timeout=5)
    cut_at = max(i for i, (_, b) in enumerate(scorer.batches) for p in b if p in online)
    assert cut_at - before <= 1, (cut_at, before)
    stop.set()
    await asyncio.gather(*clients)
    await q.close()


async def test_a_big_request_is_not_starved_by_a_stream_of_smaller_ones_of_its_priority():
    """Small requests that fill every batch go first, but a big request waiting among them is
    overtaken by at most about a batch of younger pairs per rank before it gets its turn."""
    scorer = FakeScorer(delay=0.002)
    q = make_queue(scorer, max_batch_pairs=4, max_wait_ms=1, priority_aging_s=60)
    key = GroupKey(None, 5)
    stop = asyncio.Event()
    sent = 0

    async def small_stream() -> None:
        nonlocal sent
        while not stop.is_set():
            if q.depth < 40:
                q.submit(key, [("small", f"{sent}-{i}") for i in range(2)])
                sent += 1
            await asyncio.sleep(0)

    feeder = asyncio.create_task(small_stream())
    await asyncio.sleep(0.02)
    big = [("big", str(i)) for i in range(8)]
    older = q.depth  # small requests queued before it: they go first, and rightly
    before = len(scorer.batches)
    futures = q.submit(key, big)
    await asyncio.wait_for(results(futures), timeout=5)  # first-fewest-left alone: starved
    cut = sorted({i for i, (_, b) in enumerate(scorer.batches) for p in b if p in big})
    assert q.depth >= 20, "the stream drained, so this did not test starvation"
    stop.set()
    await feeder
    # The older small requests' batches, one batch of younger ones (a batch's worth of pairs
    # overtook it: it moves up a rank), then its own two batches back to back.
    assert cut[0] - before <= older // 4 + 2, (cut, before, older)
    assert cut == [cut[0], cut[0] + 1], cut
    await q.close()


async def test_fewest_pairs_left_goes_first_and_pairs_of_a_request_span_batches():
    scorer = FakeScorer(delay=0.01)
    q = make_queue(scorer, max_batch_pairs=4, max_wait_ms=1)
    key = GroupKey(None, 5)
    first = [("first", str(i)) for i in range(6)]
    big = [("big", str(i)) for i in range(10)]
    small = [("small", str(i)) for i in range(3)]
    futures = q.submit(key, first) + q.submit(key, big) + q.submit(key, small)
    await results(futures)
    owners = [[p[0] for p in b] for _, b in scorer.batches]
    # The small request fills the first batch and the rest goes to the request with fewest
    # pairs left; that one keeps them fewest, so requests finish one after another.
    assert owners == [
        ["small"] * 3 + ["first"],
        ["first"] * 4,
        ["first"] + ["big"] * 3,
        ["big"] * 4,
        ["big"] * 3,
    ], owners
    await q.close()


async def test_lower_priority_value_is_served_first():
    scorer = FakeScorer(delay=0.05)
    q = make_queue(scorer, max_batch_pairs=2, max_wait_ms=1, priority_aging_s=60)
    key = GroupKey(None, 5)
    blocker = q.submit(key, [("blocker", "0"), ("blocker", "1")])
    while not scorer.batches:  # the blocker is in the engine; the rest queue behind it
        await asyncio.sleep(0.001)
    futures = blocker
    for name, priority in [("late", 5), ("default", 0), ("urgent", -1), ("other", 0)]:
        futures += q.submit(key, [(name, "0"), (name, "1")], priority)
    other_group = q.submit(GroupKey("other group", 5), [("g", "0")], 3)
    await results(futures + other_group)
    order = [b[0][0] for _, b in scorer.batches]
    # Equal priority and size: first come first served. The other group's priority 3 goes
    # before this group's 5.
    assert order == ["blocker", "urgent", "default", "other", "g", "late"], order
    await q.close()


async def test_a_low_priority_request_is_not_starved_by_a_high_priority_stream():
    """Aging: priority 3 behind a stream of priority 0 that never drains is answered after about
    3 aging steps, while the stream still has a backlog."""
    scorer = FakeScorer(delay=0.005)
    q = make_queue(scorer, max_batch_pairs=4, max_wait_ms=1, priority_aging_s=0.05)
    key = GroupKey(None, 5)
    stop = asyncio.Event()
    feeder = asyncio.create_task(_feed_same_group(q, key, stop, backlog=160, priority=0))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    futures = q.submit(key, [("low", "a")], priority=3)
    await asyncio.wait_for(results(futures), timeout=5)
    waited = loop.time() - started
    assert q.depth >= 80, "the stream drained, so this did not test starvation"
    # Not before its level reached the stream's (it really had lower priority) ...
    assert waited >= 0.1, waited
    stop.set()
    await feeder
    await q.close()


async def test_a_waiting_pair_shared_by_a_later_request_is_scored_once_at_the_earlier_turn():
    scorer = FakeScorer(delay=0.05)
    registry = CollectorRegistry()
    q = make_queue(scorer, registry, max_batch_pairs=2, max_wait_ms=1, priority_aging_s=60)
    key = GroupKey(None, 5)
    blocker = q.submit(key, [("blocker", "0"), ("blocker", "1")])
    while not scorer.batches:
        await asyncio.sleep(0.001)
    low = q.submit(key, [("low", str(i)) for i in range(6)], priority=5)
    urgent = q.submit(key, [("low", "4"), ("urgent", "0")], priority=-1)
    assert urgent[0] is low[4]  # the future is shared
    assert await results(urgent) == [
        FakeScorer.value(key, p) for p in [("low", "4"), ("urgent", "0")]
    ]
    # The shared pair went with the urgent request, in the first batch after the blocker.
    assert sorted(scorer.batches[1][1]) == [("low", "4"), ("urgent", "0")]
    await results(low + blocker)
    scored = [p for _, b in scorer.batches for p in b]
    assert len(scored) == len(set(scored)) == 2 + 6 + 1
    assert registry.get_sample_value("reranker_pairs_deduplicated_total") == 1
    await q.close()


async def test_the_queue_reports_its_waits_by_priority_and_the_requests_waiting():
    registry = CollectorRegistry()
    scorer = FakeScorer(delay=0.05)
    q = make_queue(scorer, registry, max_batch_pairs=2, max_wait_ms=1)
    key = GroupKey(None, 5)
    futures = q.submit(key, [("a", "0"), ("a", "1")])
    futures += q.submit(key, [("b", "0")], priority=2)
    futures += q.submit(key, [("a", "0")], priority=-20)  # all shared with a waiting pair
    assert registry.get_sample_value("reranker_queue_requests_waiting") == 3
    assert registry.get_sample_value("reranker_queue_depth_pairs") == 3
    await results(futures)
    await asyncio.sleep(0)
    get = registry.get_sample_value
    assert get("reranker_queue_requests_waiting") == 0
    assert get("reranker_queue_depth_pairs") == 0
    assert get("reranker_engine_batches_in_flight") == 0
    assert get("reranker_pairs_deduplicated_total") == 1
    assert get("reranker_queue_wait_seconds_count", {"priority": "0"}) == 1
    assert get("reranker_queue_wait_seconds_count", {"priority": "2"}) == 1
    assert get("reranker_queue_wait_seconds_count", {"priority": "-10"}) == 1  # label clamped
    # The priority-2 pair waited for the first batch to be scored (50 ms).
    assert get("reranker_queue_wait_seconds_sum", {"priority": "2"}) >= 0.04
    # Its engine batches: two of 2 and 1 pairs, 50 ms each.
    assert get("reranker_engine_batch_pairs_count") == len(scorer.batches) == 2
    assert get("reranker_engine_batch_pairs_sum") == get("reranker_pairs_scored_total") == 3
    assert get("reranker_engine_batch_duration_seconds_sum") >= 0.08
    await q.close()
