"""Sorted integer key sets that grow round by round (the judge's scores, the budget's ledger).

A step makes many judge rounds; re-sorting everything scored so far after each would cost
``O(n log n)`` per round. These helpers keep a sorted array sorted by merging in linear time.
"""

from __future__ import annotations

import numpy as np


def in_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``sorted_keys`` (a sorted array)."""
    if not len(sorted_keys):
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values


def merge_sorted(keys: np.ndarray, new_keys: np.ndarray) -> np.ndarray:
    """``keys`` and ``new_keys`` (both sorted) as one sorted array, in linear time."""
    return _interleave(keys, new_keys, _new_slots(keys, new_keys))


def merge_sorted_values(
    keys: np.ndarray, new_keys: np.ndarray, values: np.ndarray, new_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_sorted`, with ``values`` and ``new_values`` following their keys."""
    slots = _new_slots(keys, new_keys)
    return _interleave(keys, new_keys, slots), _interleave(values, new_values, slots)


def first_occurrences(keys: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``keep``, narrowed to the first occurrence of each key among the kept ones."""
    out = np.zeros_like(keep)
    at = np.flatnonzero(keep)
    _, first = np.unique(keys[at], return_index=True)
    out[at[first]] = True
    return out


def _new_slots(keys: np.ndarray, new_keys: np.ndarray) -> np.ndarray:
    """Where each of ``new_keys`` lands in the merged array."""
    return np.searchsorted(keys, new_keys, side="right") + np.arange(len(new_keys))


def _interleave(old: np.ndarray, new: np.ndarray, slots: np.ndarray) -> np.ndarray:
    merged = np.empty(len(old) + len(new), dtype=np.result_type(old, new))
    keep = np.ones(len(merged), dtype=bool)
    keep[slots] = False
    merged[slots], merged[keep] = new, old
    return merged
