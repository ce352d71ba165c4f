"""The per-block linear map of the student's similarities onto the guide's scale: pure."""

from __future__ import annotations

import numpy as np
import torch
from reranker_client.losses._guide_calibration import (
    MIN_PAIRS,
    MIN_SIGMA,
    MIN_SLOPE,
    GuideCalibration,
    LinearFit,
    probability,
)


def test_the_fit_recovers_an_affine_map_and_its_noise_per_block() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.2, 0.9, 4000)
    calibration = GuideCalibration(2)
    calibration.add(np.zeros(4000, dtype=np.int64), s, 0.1 + 0.5 * s + 0.02 * rng.normal(size=4000))
    calibration.add(np.ones(4000, dtype=np.int64), s, -0.3 + 2.0 * s)
    first, second = calibration.fits()
    assert abs(first.intercept - 0.1) < 0.01 and abs(first.slope - 0.5) < 0.01
    assert abs(first.sigma - 0.02) < 0.002
    assert abs(second.intercept + 0.3) < 1e-6 and abs(second.slope - 2.0) < 1e-6
    assert second.sigma == MIN_SIGMA  # an exact fit is floored, never 0


def test_refitting_adds_the_verdicts_and_unscored_pairs_are_left_out() -> None:
    calibration = GuideCalibration(1)
    block = np.zeros(3, dtype=np.int64)
    calibration.add(block, np.array([0.0, 0.5, 1.0]), np.array([0.0, np.nan, 1.0]))
    assert calibration.pairs.tolist() == [2.0]
    calibration.add(block[:1], np.array([0.25]), np.array([0.25]))
    assert calibration.pairs.tolist() == [3.0]


def test_a_block_with_too_few_pairs_uses_the_pooled_fit() -> None:
    rng = np.random.default_rng(1)
    s, few = rng.uniform(0, 1, 200), np.linspace(0, 1, MIN_PAIRS - 1)
    calibration, pooled = GuideCalibration(2), GuideCalibration(1)
    calibration.add(np.zeros(200, dtype=np.int64), s, 2 * s)
    calibration.add(np.ones(len(few), dtype=np.int64), few, np.full(len(few), 5.0))
    pooled.add(
        np.zeros(200 + len(few), dtype=np.int64),
        np.r_[s, few],
        np.r_[2 * s, np.full(len(few), 5.0)],
    )
    own, borrowed = calibration.fits()
    assert abs(own.slope - 2.0) < 1e-9  # enough pairs: its own fit
    assert borrowed == pooled.fits()[0]


def test_z_ranks_every_anchor_against_its_own_cutoff_on_the_guides_scale() -> None:
    # The guide reads the student's 0.4 as 0.7 (intercept 0.3, slope 1): against a cutoff of
    # 0.6 that candidate is likely masked, against 0.9 it is not.
    fit = LinearFit(0.3, 1.0, 0.05)
    z = fit.z(torch.tensor([[0.4], [0.4]]), torch.tensor([[0.6], [0.9]]))
    p = probability(z).flatten()
    assert p[0] > 0.97 and p[1] < 0.01
    # A student whose similarities fall as the guide's rise gets the least positive slope, not
    # the fitted -1 (a ranking by it would put the likeliest candidates last).
    calibration = GuideCalibration(1)
    s = np.linspace(0, 1, 50)
    calibration.add(np.zeros(50, dtype=np.int64), s, 1 - s)
    assert calibration.fits()[0].slope == MIN_SLOPE
