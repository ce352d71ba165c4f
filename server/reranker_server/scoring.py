"""Types the whole scoring path shares: a pair, the group it is batched in, its score."""

from __future__ import annotations

from dataclasses import dataclass

Pair = tuple[str, str]
"""One (query, document) to score."""


@dataclass(frozen=True, slots=True)
class GroupKey:
    """Pairs that can share one engine batch: same instruction, same truncation."""

    instruction: str | None
    max_length: int


@dataclass(frozen=True, slots=True)
class Score:
    """One pair's score: ``relevance`` is what clients rank by, ``raw`` the model's own output."""

    relevance: float
    raw: float | None = None
