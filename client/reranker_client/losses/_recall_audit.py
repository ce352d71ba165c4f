"""The recall estimate of a step: strata of one global ranking, each with a random audit sample.

Which candidates are false negatives only the guide knows, so a step that sends a share of them
estimates what it missed. Once the first allocation is chosen, the candidates of all blocks are
laid out in the order of that allocation's ranking (best first, flat ``block * B**2 + row * B +
col`` keys): the sent *prefix*, then bands of 1, 2, 4, 8 x the prefix, then the *rest* (every
valid candidate beyond the bands). Each band and the rest get a random audit sample, scored with
the first allocation. The strata are fixed sets from then on; later rounds may send candidates
anywhere (a refitted ranking, the expansion), and whatever they find inside a stratum is no
longer missed:

- a stratum's estimated misses are the false negatives its sample promises (``hits x size /
  sampled``) less those any round found in it, never below 0;
- the step's estimated recall is ``found / (found + misses)`` over all strata.

With few sample hits per stratum the estimate is noisy, in both directions. Pure (no I/O).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._sorted_keys import merge_sorted

#: Strata of the ranking beyond the sent prefix: bands of 1, 2, 4, 8 x the prefix, then the rest.
BANDS = 4
#: The rest (most of the candidates) gets this many times a band's audit sample: its false
#: negatives are sparse.
REST_AUDIT = 4
#: Fewest audit samples per stratum: below this the estimate is mostly noise.
MIN_AUDIT_PER_STRATUM = 32


@dataclass
class Stratum:
    """A set of candidates beyond the sent prefix, and its audit sample.

    ``hits``: false negatives in the audit sample; ``found``: false negatives in the stratum
    found by any round (the sample's, the expansion's, a later allocation's, ...).
    """

    begin: int
    end: int
    size: int
    sampled: np.ndarray
    hits: int = 0
    found: int = 0

    def estimated_misses(self) -> float:
        """False negatives of the stratum not found: the sample's estimate of all of them, less
        those found, and never below 0.

        Without other rounds ``found`` is ``hits`` and this is the usual ``hits * (size / n -
        1)``; when other rounds scored pairs inside the stratum, what they found is no longer
        missed.
        """
        if not len(self.sampled):
            # Nothing to estimate from: unknown, unless there is nothing to miss.
            return 0.0 if self.size <= 0 else math.nan
        return max(0.0, self.hits * (self.size / len(self.sampled)) - self.found)


@dataclass
class RecallAudit:
    """The strata of one step's global ranking and the false negatives found in each.

    ``order``: the ranking's first ``len(order)`` keys, best first (the first allocation's sent
    prefix at its head); ``strata``: the bands beyond that prefix, then the rest (every valid
    key beyond ``order``).
    """

    order: np.ndarray
    strata: list[Stratum]
    #: Sorted positions in ``order`` of the false negatives found so far (``len(order)``: beyond).
    found_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _sorted: np.ndarray | None = None
    _where: np.ndarray | None = None

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Rank of each key in ``order``; ``len(order)`` if beyond it."""
        if self._sorted is None:
            self._where = np.argsort(self.order, kind="stable")
            self._sorted = self.order[self._where]
        assert self._where is not None
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(keys.shape, len(self.order), dtype=np.int64)
        if not len(self._sorted):
            return out
        at = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
        hit = self._sorted[at] == keys
        out[hit] = self._where[at[hit]]
        return out

    def sampled(self) -> np.ndarray:
        """Every stratum's audit sample (keys)."""
        parts = [s.sampled for s in self.strata]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def record(self, new_found: np.ndarray, found_map: np.ndarray) -> None:
        """Count the false negatives first found since the last call (``new_found``: keys,
        identical texts left out) in their strata; ``found_map``: every found key so far."""
        if len(new_found):
            self.found_positions = merge_sorted(
                self.found_positions, np.sort(self.positions(new_found))
            )
        positions = self.found_positions
        beyond = len(self.order)
        for stratum in self.strata:
            stratum.hits = int(found_map[stratum.sampled].sum())
            # The rest (begin == len(order)) holds every position beyond the ranking.
            end = len(positions) if stratum.begin >= beyond else None
            stratum.found = int(
                (end if end is not None else np.searchsorted(positions, stratum.end))
                - np.searchsorted(positions, stratum.begin)
            )

    def keep_scored(self, scored_map: np.ndarray) -> None:
        """Drop the audit samples that were not scored (the cap cut them off): a sample the
        guide never judged says nothing of its stratum."""
        for stratum in self.strata:
            stratum.sampled = stratum.sampled[scored_map[stratum.sampled]]

    def estimated_misses(self) -> float:
        """The strata's estimated misses; NaN when a stratum that holds candidates has no
        scored sample."""
        return sum(s.estimated_misses() for s in self.strata)

    def recall(self, found: int) -> float:
        """Estimated recall of a step that found ``found`` false negatives (NaN: unknown)."""
        missed = self.estimated_misses()
        if math.isnan(missed):
            return math.nan
        return found / (found + missed) if found + missed > 0 else 1.0


def band_bounds(prefix: int, depth: int) -> list[tuple[int, int]]:
    """The bands beyond a sent prefix of a ranking ``depth`` long: doubling, up to ``depth``."""
    bounds = []
    begin = max(prefix, 1) if prefix < depth else depth
    if prefix == 0 and depth:
        bounds.append((0, 1))
    while begin < depth:
        end = min(depth, begin * 2)
        bounds.append((begin, end))
        begin = end
    return bounds
