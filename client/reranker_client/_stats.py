"""The counters of what a client has done (``client.stats``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class ClientStats:
    """Counters of what a client has done, for logging.

    ``client.stats`` is updated as calls progress and may be read at any time; use
    :meth:`snapshot` for a consistent copy, subtract two snapshots for the work done in between,
    or :meth:`reset` to take the counts and start again from zero (e.g. once per training step).
    Updates are made under a lock, so the counters are exact even when the sync client is used
    from many threads.

    Attributes:
        requests: HTTP requests sent, retries and ``/info`` / ``/health`` included.
        pairs_sent: Query-document pairs in scoring requests the server answered; a pair whose
            request was retried is counted once.
        cache_hits: Pairs the server answered from its cache (from its ``usage``).
        retries: Attempts repeated after a transient failure.
        fallbacks: Batch requests that were sent as individual ``/rerank`` calls instead,
            because the server lacks the batch endpoint.
    """

    requests: int = 0
    pairs_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    fallbacks: int = 0
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain ``dict`` (e.g. for a metrics logger)."""
        with self._lock:
            return self._counts()

    def snapshot(self) -> ClientStats:
        """Return a consistent copy of the counters."""
        with self._lock:
            return ClientStats(**self._counts())

    def reset(self) -> ClientStats:
        """Set every counter to zero and return their values from just before."""
        with self._lock:
            before = ClientStats(**self._counts())
            for name in self._names():
                setattr(self, name, 0)
        return before

    def __sub__(self, other: ClientStats) -> ClientStats:
        mine, theirs = self.as_dict(), other.as_dict()
        return ClientStats(**{name: mine[name] - theirs[name] for name in mine})

    def _add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def _counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self._names()}

    @staticmethod
    def _names() -> list[str]:
        return [f.name for f in fields(ClientStats) if f.init]
