"""The student's similarities on the guide's scale: a per-block linear fit, refitted every round.

The guide masks candidate ``(i, j)`` of a block when its score is above row ``i``'s *cutoff*
(its own positive's score less the margin; the judge knows it for every anchor once the first
call is back, since the anchor-positive pairs always go with it). The student's cosine
``s(i, j)`` is on another scale, and a weak student's own positive score says little about the
guide's. So each block fits ``guide ~ intercept + slope * s`` by least squares on the pairs the
guide has scored so far (a small random sample first, then every verdict that came back), and
reads the residual spread ``sigma``. A candidate's *z* is ``(intercept + slope * s - cutoff_i) /
sigma``, and ``Phi(z)`` the fit's probability that it is a false negative: one scale on which
the candidates of every block and every anchor can be ranked together, and summed into an
expected yield.

Selecting pairs by ``s`` and by the anchor does not bias the fit of the guide's score given
``s``: the verdicts of the top of the ranking only make the fit sharper where it matters.
Pure (no I/O); sufficient statistics, so a refit costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: Least residual spread of a fit (a student equal to the guide fits exactly).
MIN_SIGMA = 1e-3
#: Least slope: a student whose similarities do not rise with the guide's still ranks by them.
MIN_SLOPE = 1e-3
#: Fewest scored pairs of a block for a fit of its own; below, the blocks' pooled fit is used.
MIN_PAIRS = 16


@dataclass(frozen=True)
class LinearFit:
    """``guide ~ intercept + slope * student``, with the residual spread ``sigma``."""

    intercept: float = 0.0
    slope: float = 1.0
    sigma: float = 1.0

    def z(self, similarity: Tensor, cutoff: Tensor) -> Tensor:
        """How far above the cutoff the fit puts each candidate, in residual spreads."""
        return (self.intercept + self.slope * similarity - cutoff) / self.sigma


class GuideCalibration:
    """Per block, the sums of the scored pairs' ``(student, guide)`` scores, and their fits."""

    def __init__(self, n_blocks: int) -> None:
        # n, sum s, sum g, sum s^2, sum s g, sum g^2 per block
        self._sums = np.zeros((n_blocks, 6), dtype=np.float64)

    @property
    def pairs(self) -> np.ndarray:
        """Scored pairs each block's fit rests on."""
        return self._sums[:, 0].copy()

    def add(self, block: np.ndarray, student: np.ndarray, guide: np.ndarray) -> None:
        """Add scored pairs (``guide`` NaN: not scored, left out)."""
        ok = np.isfinite(guide) & np.isfinite(student)
        block, s, g = block[ok], student[ok].astype(np.float64), guide[ok].astype(np.float64)
        n_blocks = len(self._sums)
        for column, values in enumerate((np.ones_like(s), s, g, s * s, s * g, g * g)):
            self._sums[:, column] += np.bincount(block, weights=values, minlength=n_blocks)

    def fits(self) -> list[LinearFit]:
        """Each block's fit (the pooled fit of all blocks for a block with too few pairs)."""
        pooled = _fit(self._sums.sum(0))
        return [_fit(sums) if sums[0] >= MIN_PAIRS else pooled for sums in self._sums]


def _fit(sums: np.ndarray) -> LinearFit:
    n, s, g, ss, sg, gg = (float(v) for v in sums)
    if n < 2:
        return LinearFit()
    mean_s, mean_g = s / n, g / n
    var_s = ss / n - mean_s**2
    cov = sg / n - mean_s * mean_g
    var_g = max(gg / n - mean_g**2, 0.0)
    if var_s <= 1e-12:
        return LinearFit(mean_g - mean_s, 1.0, max(math.sqrt(var_g), MIN_SIGMA))
    slope = max(cov / var_s, MIN_SLOPE)
    intercept = mean_g - slope * mean_s
    residual = max(var_g - 2 * slope * cov + slope**2 * var_s, 0.0) * n / max(n - 2, 1)
    return LinearFit(intercept, slope, max(math.sqrt(residual), MIN_SIGMA))


def probability(z: Tensor) -> Tensor:
    """The fit's probability that a candidate at ``z`` is a false negative: ``Phi(z)``."""
    return torch.special.ndtr(z)
