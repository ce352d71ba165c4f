"""The batching queue: pairs from all requests, grouped by (instruction, max_length) into batches.

A group is *ripe* when it holds ``max_batch_pairs`` pairs or when its oldest pair has waited
``max_wait_ms``. Ripe groups take turns (round-robin): the next batch comes from the ripe group
served least recently, and a group that has never been served (a new request's group) comes first.
So a group that has just had a batch goes behind every other ripe group, whatever its age, and a
newcomer never queues behind a stream that happened to be served while it was alone.

Why round-robin and not per-pair age: under sustained load (training jobs keeping thousands of
pairs queued in one group), per-pair age is first-come-first-served over pairs, so a small request
of another group still waits for the whole backlog queued before it, which is many batches. With
round-robin it waits for at most one batch per other busy group (plus the batches already in
flight), which is what online traffic next to a training stream needs; the stream loses only that
one batch's worth of turn. Within a group pairs stay first-in-first-out, and a group's age is the
age of its oldest pending pair (not the time it was last empty, which a fed group never is).

Up to ``max_in_flight`` batches are scored at once, so that the engine (or several engines) always
has the next batch while the previous one is tokenised or read out. A batch is cut only when a
slot is free, so that the choice of group is made as late as possible.

A pair already waiting or being scored is not queued twice: later callers share its future. Each
caller awaits its own futures, so it gets exactly its own scores, in its own order.

Supervision: a batch that is not answered within ``batch_timeout_s``, or the queue's own task
dying, breaks the queue: ``on_failure`` is told why (the service then reports itself unhealthy),
every waiting caller gets a 503, and new work is refused with a 503. Closing the queue fails the
callers still waiting with a 503, too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import EngineUnavailableError, OverloadedError
from .scoring import GroupKey, Pair

logger = logging.getLogger("reranker_server")
T = TypeVar("T")

# score_batch(key, pairs) -> one result per pair, in order.
ScoreBatchFn = Callable[[GroupKey, Sequence[Pair]], Awaitable[Sequence[T]]]
Batch = list[tuple[Pair, "asyncio.Future[T]"]]


@dataclass
class _Group(Generic[T]):
    # Insertion-ordered: pair -> (future, when it was queued); the first entry is the oldest.
    pending: OrderedDict[Pair, tuple[asyncio.Future[T], float]] = field(default_factory=OrderedDict)
    # When the group last had a batch cut (the queue's turn counter); -1 = never.
    served: int = -1

    @property
    def oldest(self) -> float:
        return next(iter(self.pending.values()))[1]


@dataclass
class BatchStats:
    """Counters the service turns into metrics."""

    batches: int = 0
    pairs_scored: int = 0
    deduplicated: int = 0


class BatchQueue(Generic[T]):
    """Groups pairs into engine batches, fairly across groups, several batches in flight."""

    def __init__(
        self,
        score_batch: ScoreBatchFn[T],
        *,
        max_batch_pairs: int,
        max_wait_ms: float,
        max_queued_pairs: int,
        max_in_flight: int = 1,
        batch_timeout_s: float | None = None,
        on_batch: Callable[[GroupKey, int, float], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._score_batch = score_batch
        self.max_batch_pairs = max_batch_pairs
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_pairs = max_queued_pairs
        self.max_in_flight = max_in_flight
        self.batch_timeout_s = batch_timeout_s
        self._on_batch = on_batch
        self._on_failure = on_failure
        # In turn order: the group served last is moved to the end.
        self._groups: OrderedDict[GroupKey, _Group[T]] = OrderedDict()
        self._turn = 0  # counts batches cut; each group remembers the turn of its last batch
        # Pairs handed to the engine and not answered yet, for in-flight de-duplication.
        self._running: dict[tuple[GroupKey, Pair], asyncio.Future[T]] = {}
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self.broken: str | None = None
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        """Pairs waiting for a batch (not counting the batches being scored)."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Batches being scored now."""
        return len(self._batches)

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
            for fut, _ in group.pending.values():
                self._fail(fut, exc)
        self._groups.clear()
        self._queued = 0
        for fut in self._running.values():
            self._fail(fut, exc)
        self._running.clear()

    def submit(self, key: GroupKey, pairs: Sequence[Pair]) -> list[asyncio.Future[T]]:
        """Queue ``pairs`` and return one future per pair, in order (shared for duplicates)."""
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
        now = time.monotonic()
        futures: list[asyncio.Future[T]] = []
        for pair in pairs:
            entry = group.pending.get(pair)
            fut = entry[0] if entry is not None else self._running.get((key, pair))
            if fut is not None:
                self.stats.deduplicated += 1
            else:
                fut = loop.create_future()
                group.pending[pair] = (fut, now)
                self._queued += 1
            futures.append(fut)
        self._wakeup.set()
        return futures

    def _ripe(self, group: _Group[T], now: float) -> bool:
        return len(group.pending) >= self.max_batch_pairs or now - group.oldest >= self.max_wait

    def _next_batch(self, now: float) -> tuple[GroupKey, Batch[T]] | None:
        """The next batch of the ripe group served least recently (oldest pair breaks ties)."""
        ripe = [(g.served, g.oldest, i, k) for i, (k, g) in enumerate(self._groups.items())]
        ripe = [r for r in ripe if self._ripe(self._groups[r[3]], now)]
        if not ripe:
            return None
        key = min(ripe)[3]
        group = self._groups[key]
        group.served = self._turn
        self._turn += 1
        batch: Batch[T] = []
        while group.pending and len(batch) < self.max_batch_pairs:
            pair, (fut, _) = group.pending.popitem(last=False)
            if not fut.done():  # a failed or cancelled entry is not worth engine time
                batch.append((pair, fut))
            self._queued -= 1
        if not group.pending:
            del self._groups[key]
        return key, batch

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

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._slots.release()

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
            self.stats.batches += 1
            self.stats.pairs_scored += len(batch)
            if self._on_batch is not None:
                self._on_batch(key, len(batch), time.perf_counter() - started)
        finally:
            for pair, _ in batch:
                self._running.pop((key, pair), None)
