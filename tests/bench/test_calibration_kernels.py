"""bench/calibration.py's fast CUSUM loop against its readable reference."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from driftline.detectors import calibration
from driftline.detectors.cusum import SCALE
from driftline.detectors.scores import NormalScores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import calibration as bench


def test_the_alias_table_draws_each_gap_with_its_probability() -> None:
    prob = np.random.default_rng(3).dirichlet(np.full(501, 0.3))
    keep, alias = bench.alias_table(prob)
    implied = keep.copy()
    np.add.at(implied, alias, 1.0 - keep)
    np.testing.assert_allclose(implied / prob.shape[0], prob, rtol=1e-9, atol=1e-15)


def test_the_gaps_are_the_rank_columns_a_normal_value_lands_in() -> None:
    scores = NormalScores(np.random.default_rng(5).standard_normal(300))
    table = np.arange(2 * 300 + 1, dtype=np.int64)  # each column its own increment
    inc, prob = bench.interval_increments(scores.ext, table)
    assert inc.tolist() == list(range(0, 601, 2))
    z = np.random.default_rng(6).standard_normal(400_000)
    counts = np.bincount(scores.positions(z) // 2, minlength=301)
    expected = prob * z.shape[0]
    assert np.abs(counts - expected).max() < 5 * math.sqrt(expected.max()) + 5


@pytest.mark.parametrize("name", list(bench.SHAPES))
def test_the_fast_loop_alarms_as_often_as_ranking_normal_draws(name: str) -> None:
    scores = NormalScores(np.random.default_rng(11).standard_normal(2000))
    shape = bench.SHAPES[name]
    h = int(calibration.normal_cusum_threshold(shape, 1 / 500, 2000) * SCALE)
    table = np.ascontiguousarray(scores.table(shape))
    inc, prob = bench.interval_increments(scores.ext, table)
    keep, alias = bench.alias_table(prob)
    n = 1_000_000
    slow = bench._run_cusum(scores.ext, table, h, n, 1)
    fast = bench._run_cusum_alias(keep, alias, inc, h, n, 2)
    assert slow > 500  # enough alarms for the comparison to mean something
    # Two Poisson-like counts of the same rate: their difference within 4 sd.
    assert abs(fast - slow) < 4 * math.sqrt(fast + slow)


@pytest.mark.parametrize("name", list(bench.SHAPES))
def test_the_chain_of_a_references_gaps_alarms_as_often_as_the_loop(name: str) -> None:
    """The exact fleet rows rest on this: one reference's run length from the Markov
    chain of its gaps is the alarm loop's."""
    scores = NormalScores(np.random.default_rng(12).standard_normal(2000))
    shape = bench.SHAPES[name]
    h = calibration.normal_cusum_threshold(shape, 1 / 500, 2000)
    table = np.ascontiguousarray(scores.table(shape))
    inc, prob = bench.interval_increments(scores.ext, table)
    keep, alias = bench.alias_table(prob)
    n = 2_000_000
    alarms = bench._run_cusum_alias(keep, alias, inc, int(h * SCALE), n, 3)
    expected = n / calibration.chain_arl(bench.gap_cdf(inc / SCALE, prob), h)
    assert alarms > 1000
    assert abs(alarms - expected) < 4 * math.sqrt(expected)


@pytest.mark.parametrize("name", list(bench.SHAPES))
def test_a_fleet_of_references_meets_its_budget_from_1e4_to_1e9(name: str) -> None:
    """Realized against configured run length for 150 references (the monitor's margin
    makes 1.25 on target). The spread CUSUMs' chain once had too few cells: spread-down
    realized 0.59 of its budget at 1e9 (and spread-up 3x at 1e8)."""
    shape = bench.SHAPES[name]
    for arl in (1e4, 1e6, 1e9):
        h = calibration.normal_cusum_threshold(shape, bench.CALIBRATION_MARGIN / arl, 2000)
        rate, _ = bench.fleet_rate(shape, h, 2000, 150, seed=int(math.log10(arl)))
        realized = 1.0 / (rate * arl)
        assert 1.0 <= realized <= 3.0, (arl, realized)
