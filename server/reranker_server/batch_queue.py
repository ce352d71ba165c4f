"""The batching queue: pairs from all requests, grouped by (instruction, max_length) into batches.

A group is *ripe* when it holds ``max_batch_pairs`` pairs or when its oldest pair has waited
``max_wait_ms``. The next batch is cut from a ripe group, and its pairs are taken from the
requests waiting in that group, by these rules in order:

1. **Priority** (vLLM's ``priority`` field; lower is served first, default 0). A request's
   *level* is its priority minus one for every ``priority_aging_s`` it has waited, but never
   better than the best priority waiting in the queue: aging lifts a request up to the best
   class present, never past it. The group holding the lowest level goes first, and within a
   group lower levels fill the batch first.
2. **Between groups, round-robin**: among ripe groups at the same best level, the one served
   least recently goes first, and a group never served (a new request's group) comes first. A
   newcomer never queues behind a stream that happened to be served while it was alone.
3. **Within a group and level, shortest request first**: the batch takes the pairs of the
   request with the fewest pairs left first, then the next, until it is full. A request of 2
   pairs next to four requests of 2,000 is therefore in the very next batch cut from its group,
   and the big requests fill whatever the small ones leave, so batches stay full. Its one
   exception bounds the starvation of big requests: a request moves ahead of the requests of
   its level by one rank for every ``max_batch_pairs`` pairs of *younger* requests that were cut
   before it (it was overtaken by a batch's worth).

Why: within a group the old queue was first-in-first-out over pairs, so an online request with
the default instruction waited for the whole training backlog queued before it (issue 16: 3 s
on the bi-encoder, ~60 s on a cross-encoder, against ~70 ms idle). Serving the request with
the fewest pairs left first bounds a small request's wait to the batches already in flight plus
one, whatever the backlog; the training stream loses only the few slots the small request
takes. Round-robin over requests (tried first) does the same for the small request, but it
advances every training request together, so they all finish together and the queue runs dry
while their clients send the next ones: measured with the tiny test cross-encoder, pairs per
batch fell to 213 of 256. Fewest-left-first finishes training requests one after another
(first-come among equals), as first-in-first-out did, so the queue stays fed. Pairs of one
request still span batches.

Why aging is bounded by the best class present, and why overtaking is counted in pairs, not
seconds: an earlier version aged every request by its time in the queue, also within its own
priority. Under a training backlog longer than ``priority_aging_s`` (8 batches of 4-5 s on two
cores), every training request had aged past a fresh online request of the same priority, so
the online request queued behind them again, first-in-first-out: 4-6 batch times at p95,
against 1.3-2 once it got its turn. A training request that waits behind other training
requests is not starved; one that is passed by younger, smaller requests batch after batch
is, and only that is what the overtaking count measures.

Starvation is bounded both ways. Across priorities: a request of priority ``p`` reaches the
level of fresh requests of priority ``q < p`` after ``(p - q) * priority_aging_s`` seconds;
while it waited, the younger ``q`` requests cut before it overtook it, so it goes first among
them. Within a level: a request is overtaken by at most about one batch of younger requests'
pairs per rank it has to climb.

Up to ``max_in_flight`` batches are scored at once, so that several engines, or a remote one, have
the next batch while the previous one is scored, read out or on the wire (the service's default:
one in process, where a second batch would only wait for the engine's thread; two per remote
engine: ``Settings.batches_in_flight``). A batch is cut only when a
slot is free, so that the choice of group and requests is made as late as possible.

A pair already waiting or being scored is not queued twice: later callers share its future. A
later request that shares a waiting pair lists it among its own pairs too, so the pair is cut at
the turn of whichever of its requests comes first (a high-priority request is not held back by
sharing a pair with a low-priority one). Each caller awaits its own futures, so it gets exactly
its own scores, in its own order.

The queue records its own metrics (depth, batches in flight, pairs deduplicated, requests
waiting, each request's queue wait by priority, and each engine batch's size and time) through
the ``metrics`` object passed in; see :class:`reranker_server.metrics.QueueMetrics`.

Supervision: a batch that is not answered within ``batch_timeout_s``, or the queue's own task
dying, breaks the queue: ``on_failure`` is told why (the service then reports itself unhealthy),
every waiting caller gets a 503, and new work is refused with a 503. Closing the queue fails the
callers still waiting with a 503, too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from .errors import EngineUnavailableError, OverloadedError
from .scoring import GroupKey, Pair

if TYPE_CHECKING:
    from .metrics import QueueMetrics

logger = logging.getLogger("reranker_server")
T = TypeVar("T")

# score_batch(key, pairs) -> one result per pair, in order.
ScoreBatchFn = Callable[[GroupKey, Sequence[Pair]], Awaitable[Sequence[T]]]
Batch = list[tuple[Pair, "asyncio.Future[T]"]]


@dataclass(eq=False)
class _Request:
    """One caller's pairs still to be cut, in its order (some may be cut already via another
    request that shares them: those are skipped)."""

    priority: int
    queued_at: float
    pairs: deque[Pair] = field(default_factory=deque)
    # Pairs of younger requests of its group cut while this one waited.
    overtaken: int = 0

    def level(self, now: float, aging_s: float, best: int) -> int:
        """Its priority, better by one per ``aging_s`` waited, but not better than ``best``
        (the best priority waiting)."""
        return max(best, self.priority - math.floor((now - self.queued_at) / aging_s))


@dataclass
class _Group(Generic[T]):
    # pair -> its future; the pairs waiting in this group.
    pending: dict[Pair, asyncio.Future[T]] = field(default_factory=dict)
    # The requests with pairs waiting, in arrival order (the first is the oldest).
    requests: list[_Request] = field(default_factory=list)
    # When the group last had a batch cut (the queue's turn counter); -1 = never.
    served: int = -1

    @property
    def oldest(self) -> float:
        return self.requests[0].queued_at

    def best_level(self, now: float, aging_s: float, best: int) -> int:
        return min(r.level(now, aging_s, best) for r in self.requests)


class BatchQueue(Generic[T]):
    """Groups pairs into engine batches: by priority, fairly across groups and across the
    requests of a group, several batches in flight (policy in the module docstring)."""

    def __init__(
        self,
        score_batch: ScoreBatchFn[T],
        *,
        max_batch_pairs: int,
        max_wait_ms: float,
        max_queued_pairs: int,
        max_in_flight: int = 1,
        batch_timeout_s: float | None = None,
        priority_aging_s: float = 10.0,
        metrics: QueueMetrics | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        if priority_aging_s <= 0:
            raise ValueError("priority_aging_s must be > 0")
        self._score_batch = score_batch
        self.max_batch_pairs = max_batch_pairs
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_pairs = max_queued_pairs
        self.max_in_flight = max_in_flight
        self.batch_timeout_s = batch_timeout_s
        self.priority_aging_s = priority_aging_s
        self._metrics = metrics
        self._on_failure = on_failure
        self._groups: OrderedDict[GroupKey, _Group[T]] = OrderedDict()
        self._turn = 0  # counts batches cut; each group remembers the turn of its last batch
        # Pairs handed to the engine and not answered yet, for in-flight de-duplication.
        self._running: dict[tuple[GroupKey, Pair], asyncio.Future[T]] = {}
        self._queued = 0
        self._waiting_requests = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self.broken: str | None = None

    @property
    def depth(self) -> int:
        """Pairs waiting for a batch (not counting the batches being scored)."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Batches being scored now."""
        return len(self._batches)

    @property
    def waiting_requests(self) -> int:
        """Requests with pairs still waiting for a batch."""
        return self._waiting_requests

    def _update_gauges(self) -> None:
        if self._metrics is not None:
            self._metrics.set_state(self._queued, len(self._batches), self._waiting_requests)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-queue")
            self._task.add_done_callback(self._task_ended)

    async def close(self) -> None:
        """Stop; every caller still waiting gets a 503."""
        # Failed first: a cancelled batch forgets which futures it was running.
        self.fail_all(
            EngineUnavailableError(
                "the server is shutting down; retry (on another replica)",
                headers={"Retry-After": "5"},
            )
        )
        tasks = [t for t in (self._task, *self._batches) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("the batch queue task died", exc_info=exc)
            self.break_down(f"the batch queue stopped ({type(exc).__name__}: {exc})")

    def break_down(self, why: str) -> None:
        """Stop taking work: report ``why``, fail every waiting caller and refuse new work."""
        if self.broken is None:
            self.broken = why
            if self._on_failure is not None:
                self._on_failure(why)
        self.fail_all(self._unavailable())

    def _unavailable(self) -> EngineUnavailableError:
        return EngineUnavailableError(
            f"{self.broken}; restart the server", headers={"Retry-After": "30"}
        )

    @staticmethod
    def _fail(fut: asyncio.Future[T], exc: BaseException) -> None:
        if not fut.done():
            fut.set_exception(exc)
            # Callers still waiting read it from the future; one whose caller has gone away must
            # not log "exception was never retrieved".
            fut.exception()

    def fail_all(self, exc: BaseException) -> None:
        """Fail every queued and running pair (the engine died, or shutdown)."""
        for group in self._groups.values():
            for fut in group.pending.values():
                self._fail(fut, exc)
        self._groups.clear()
        self._queued = 0
        self._waiting_requests = 0
        for fut in self._running.values():
            self._fail(fut, exc)
        self._running.clear()
        self._update_gauges()

    def submit(
        self, key: GroupKey, pairs: Sequence[Pair], priority: int = 0
    ) -> list[asyncio.Future[T]]:
        """Queue one request's ``pairs`` at ``priority`` (lower is served first) and return one
        future per pair, in order (shared for duplicates)."""
        if self.broken is not None:
            raise self._unavailable()
        loop = asyncio.get_running_loop()
        group = self._groups.get(key)
        new_pairs = sum(
            1
            for p in set(pairs)
            if (group is None or p not in group.pending) and (key, p) not in self._running
        )
        if self._queued + new_pairs > self.max_queued_pairs:
            raise OverloadedError(
                f"the server has {self._queued} pairs queued (limit {self.max_queued_pairs}); "
                "retry later or send smaller requests",
                headers={"Retry-After": "1"},
            )
        if group is None:
            group = self._groups[key] = _Group()
        request = _Request(priority, time.monotonic())
        futures: list[asyncio.Future[T]] = []
        shared = 0
        for pair in pairs:
            fut = group.pending.get(pair)
            if fut is not None:
                shared += 1
                request.pairs.append(pair)  # cut at whichever sharing request's turn is first
            elif (fut := self._running.get((key, pair))) is not None:
                shared += 1
            else:
                fut = loop.create_future()
                group.pending[pair] = fut
                request.pairs.append(pair)
                self._queued += 1
            futures.append(fut)
        if request.pairs:
            group.requests.append(request)
            self._waiting_requests += 1
        else:  # every pair is being scored already: it waits for no batch
            if not group.requests:
                del self._groups[key]
            if self._metrics is not None:
                self._metrics.observe_wait(priority, 0.0)
        if self._metrics is not None and shared:
            self._metrics.pairs_deduplicated.inc(shared)
        self._update_gauges()
        self._wakeup.set()
        return futures

    def _ripe(self, group: _Group[T], now: float) -> bool:
        return len(group.pending) >= self.max_batch_pairs or now - group.oldest >= self.max_wait

    def _next_batch(self, now: float) -> tuple[GroupKey, Batch[T]] | None:
        """The next batch: from the ripe group of the best level, served least recently (oldest
        request breaks ties), its pairs taken from the requests of the best level first and,
        within a level, from those overtaken most (in batches), then with the fewest pairs
        left."""
        aging = self.priority_aging_s
        ripe_groups = [
            (i, k, g) for i, (k, g) in enumerate(self._groups.items()) if self._ripe(g, now)
        ]
        if not ripe_groups:
            return None
        best = min((r.priority for g in self._groups.values() for r in g.requests), default=0)
        key = min(
            (g.best_level(now, aging, best), g.served, g.oldest, i, k) for i, k, g in ripe_groups
        )[4]
        group = self._groups[key]
        group.served = self._turn
        self._turn += 1
        batch: Batch[T] = []
        taken: list[tuple[_Request, int]] = []
        # sorted() is stable, so arrival order breaks the remaining ties.
        for r in sorted(
            group.requests,
            key=lambda r: (
                r.level(now, aging, best),
                -(r.overtaken // self.max_batch_pairs),
                len(r.pairs),
            ),
        ):
            before = len(batch)
            while len(batch) < self.max_batch_pairs and (pair := self._take(group, r)) is not None:
                fut = group.pending.pop(pair)
                self._queued -= 1
                if not fut.done():  # a failed or cancelled entry is not worth engine time
                    batch.append((pair, fut))
            if len(batch) > before:
                taken.append((r, len(batch) - before))
            if len(batch) >= self.max_batch_pairs:
                break
        for r in group.requests:
            r.overtaken += sum(n for other, n in taken if other.queued_at > r.queued_at)
        self._drop_finished(group, now)
        if not group.pending:
            del self._groups[key]
        return key, batch

    @staticmethod
    def _take(group: _Group[T], request: _Request) -> Pair | None:
        """The request's next pair still waiting (pairs cut through a sharing request skipped)."""
        while request.pairs:
            pair = request.pairs.popleft()
            if pair in group.pending:
                return pair
        return None

    def _drop_finished(self, group: _Group[T], now: float) -> None:
        """Forget the requests with no pair left waiting; their queue wait ends now."""
        kept = []
        for r in group.requests:
            while r.pairs and r.pairs[0] not in group.pending:
                r.pairs.popleft()
            if r.pairs:
                kept.append(r)
            else:
                self._waiting_requests -= 1
                if self._metrics is not None:
                    self._metrics.observe_wait(r.priority, now - r.queued_at)
        group.requests = kept

    def _seconds_to_next_deadline(self, now: float) -> float | None:
        waits = [g.oldest + self.max_wait - now for g in self._groups.values()]
        return max(0.0, min(waits)) if waits else None

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            key, batch = await self._wait_for_batch()
            task = asyncio.get_running_loop().create_task(self._score(key, batch))
            self._batches.add(task)
            task.add_done_callback(self._batch_done)
            self._update_gauges()

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._slots.release()
        self._update_gauges()

    async def _wait_for_batch(self) -> tuple[GroupKey, Batch[T]]:
        while True:
            now = time.monotonic()
            nxt = self._next_batch(now)
            if nxt is not None:
                if nxt[1]:
                    return nxt
                continue
            self._wakeup.clear()
            timeout = self._seconds_to_next_deadline(now)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _score(self, key: GroupKey, batch: Batch[T]) -> None:
        for pair, fut in batch:
            self._running[(key, pair)] = fut
        started = time.perf_counter()
        try:
            results = await asyncio.wait_for(
                self._score_batch(key, [pair for pair, _ in batch]), self.batch_timeout_s
            )
            if len(results) != len(batch):
                raise RuntimeError(
                    f"the engine returned {len(results)} scores for {len(batch)} pairs"
                )
        except asyncio.TimeoutError:
            # A hung engine never answers anyone again: say so instead of letting callers hang.
            self.break_down(
                f"the engine did not answer a batch of {len(batch)} pairs within "
                f"{self.batch_timeout_s:g} s"
            )
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            for _, fut in batch:
                self._fail(fut, exc)
        else:
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
            if self._metrics is not None:
                self._metrics.observe_batch(len(batch), time.perf_counter() - started)
        finally:
            for pair, _ in batch:
                self._running.pop((key, pair), None)
