"""The batching queue: pairs from all requests, grouped by (instruction, max_length) into batches.

One consumer task owns the engine. A group is flushed when it holds ``max_batch_pairs`` pairs or
when its oldest pair has waited ``max_wait_ms``; ripe groups go oldest first, so no group starves.
A pair already waiting or being scored is not queued twice: later callers share its future. Each
caller awaits its own futures, so it gets exactly its own scores, in its own order.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import OverloadedError

Pair = tuple[str, str]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GroupKey:
    """Pairs that can share one engine batch: same instruction, same truncation."""

    instruction: str | None
    max_length: int


# score_batch(key, pairs) -> one result per pair, in order.
ScoreBatchFn = Callable[[GroupKey, Sequence[Pair]], Awaitable[Sequence[T]]]


@dataclass
class _Group(Generic[T]):
    # Insertion-ordered: pair -> future; the first entry is the oldest.
    pending: OrderedDict[Pair, asyncio.Future[T]] = field(default_factory=OrderedDict)
    oldest: float = 0.0


@dataclass
class BatchStats:
    """Counters the service turns into metrics."""

    batches: int = 0
    pairs_scored: int = 0
    deduplicated: int = 0


class BatchQueue(Generic[T]):
    def __init__(
        self,
        score_batch: ScoreBatchFn[T],
        *,
        max_batch_pairs: int,
        max_wait_ms: float,
        max_queued_pairs: int,
        on_batch: Callable[[GroupKey, int, float], None] | None = None,
    ) -> None:
        self._score_batch = score_batch
        self.max_batch_pairs = max_batch_pairs
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_pairs = max_queued_pairs
        self._on_batch = on_batch
        self._groups: dict[GroupKey, _Group[T]] = {}
        # Pairs handed to the engine and not answered yet, for in-flight de-duplication.
        self._running: dict[tuple[GroupKey, Pair], asyncio.Future[T]] = {}
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        """Pairs waiting for a batch (not counting the batch being scored)."""
        return self._queued

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-queue")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.fail_all(RuntimeError("the batch queue was shut down"))

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
        for fut in self._running.values():
            self._fail(fut, exc)
        self._running.clear()

    def submit(self, key: GroupKey, pairs: Sequence[Pair]) -> list[asyncio.Future[T]]:
        """Queue ``pairs`` and return one future per pair, in order (shared for duplicates)."""
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
        futures: list[asyncio.Future[T]] = []
        for pair in pairs:
            fut = group.pending.get(pair) or self._running.get((key, pair))
            if fut is not None:
                self.stats.deduplicated += 1
            else:
                if not group.pending:
                    group.oldest = time.monotonic()
                fut = loop.create_future()
                group.pending[pair] = fut
                self._queued += 1
            futures.append(fut)
        self._wakeup.set()
        return futures

    def _next_batch(
        self, now: float
    ) -> tuple[GroupKey, list[tuple[Pair, asyncio.Future[T]]]] | None:
        ripe = [
            (g.oldest, k)
            for k, g in self._groups.items()
            if g.pending
            and (len(g.pending) >= self.max_batch_pairs or now - g.oldest >= self.max_wait)
        ]
        if not ripe:
            return None
        _, key = min(ripe, key=lambda item: item[0])
        group = self._groups[key]
        batch: list[tuple[Pair, asyncio.Future[T]]] = []
        while group.pending and len(batch) < self.max_batch_pairs:
            pair, fut = group.pending.popitem(last=False)
            if not fut.done():  # a failed or cancelled entry is not worth engine time
                batch.append((pair, fut))
            self._queued -= 1
        # A remainder keeps its group's age: it has already waited a whole batch, so it is ripe
        # at once and stays first in line.
        if not group.pending:
            del self._groups[key]
        return key, batch

    def _seconds_to_next_deadline(self, now: float) -> float | None:
        waits = [g.oldest + self.max_wait - now for g in self._groups.values() if g.pending]
        return max(0.0, min(waits)) if waits else None

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            nxt = self._next_batch(now)
            if nxt is None:
                self._wakeup.clear()
                timeout = self._seconds_to_next_deadline(now)
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
                continue
            key, batch = nxt
            if not batch:
                continue
            await self._score(key, batch)

    async def _score(self, key: GroupKey, batch: list[tuple[Pair, asyncio.Future[T]]]) -> None:
        for pair, fut in batch:
            self._running[(key, pair)] = fut
        started = time.perf_counter()
        try:
            results = await self._score_batch(key, [pair for pair, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"the engine returned {len(results)} scores for {len(batch)} pairs"
                )
        except asyncio.CancelledError:
            raise
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
