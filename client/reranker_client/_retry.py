"""When and how long the clients wait before repeating a request."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from ._exceptions import RerankerError, RerankerTimeoutError, RerankerUnavailableError

# Enough for any realistic backoff ceiling; keeps 2 ** attempt from overflowing a float.
_MAX_BACKOFF_EXPONENT = 62


@dataclass(frozen=True)
class _RetryPolicy:
    max_retries: int
    backoff_base: float
    backoff_max: float

    def backoff(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        # Full jitter: clients that failed together (an overload, a restart) must not come back
        # together, or they recreate the overload on every retry.
        ceiling = min(
            self.backoff_max, self.backoff_base * 2.0 ** min(attempt, _MAX_BACKOFF_EXPONENT)
        )
        delay = rand() * ceiling
        if retry_after is not None:
            # The server knows when it will have room again; waiting less is wasted work for it.
            delay = max(delay, retry_after)
        return delay


def _is_retryable(error: RerankerError) -> bool:
    return isinstance(error, (RerankerUnavailableError, RerankerTimeoutError))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
