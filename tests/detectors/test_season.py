"""The seasonal profile: what it learns, when it counts, what it takes out, and its state.

A short "day" keeps the streams small: a period of 2,400 s in 24 bins at one value a
second (100 values a bin). The profile does not know how long a day is, only ``ts``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from driftline.detectors import state
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.season import MEMORY_PERIODS, SeasonalProfile

PERIOD = 2400.0
BINS = 24
WIDTH = PERIOD / BINS


def feed(p: SeasonalProfile, x: np.ndarray, ts: np.ndarray) -> None:
    """Learn values the way a signal's warm-up does: one clock bin at a time."""
    i = 0
    while i < x.shape[0]:
        k = p.until_next_bin(ts[i:])
        p.begin(ts[i: i + k])
        p.take(x[i: i + k])
        i += k


def cycle(seed: int, periods: float, amplitude: float, sd: float = 0.35,
          start: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Lognormal values whose log follows ``amplitude * sin`` over the period, plus noise."""
    rng = np.random.default_rng(seed)
    ts = start + np.arange(int(PERIOD * periods), dtype=np.float64)
    z = sd * rng.standard_normal(ts.shape[0]) + amplitude * np.sin(2 * np.pi * ts / PERIOD)
    return np.exp(6.0 + z), ts


def _bin_cycle(amplitude: float) -> np.ndarray:
    """Each bin's mean of ``amplitude * sin`` (what a perfect profile's shape is)."""
    t = np.arange(PERIOD)
    return np.array([amplitude * np.sin(2 * np.pi * t[b * 100:(b + 1) * 100] / PERIOD).mean()
                     for b in range(BINS)])


def _sine_amplitude(logs: np.ndarray, ts: np.ndarray) -> float:
    """Amplitude of the daily sine in ``logs`` (least squares on sin and cos)."""
    w = 2 * np.pi * ts / PERIOD
    design = np.column_stack([np.sin(w), np.cos(w), np.ones_like(w)])
    coef, *_ = np.linalg.lstsq(design, logs, rcond=None)
    return float(math.hypot(coef[0], coef[1]))


def _state(p: SeasonalProfile) -> tuple[object, ...]:
    return (p.sum.tolist(), p.count.tolist(), p.periods.tolist(), p.last_period.tolist(),
            p.visit, p.clock, p._bin, list(p._pending), p.version)


def test_nothing_counts_in_the_first_period() -> None:
    x, ts = cycle(0, 1.0, 0.5)
    p = SeasonalProfile(PERIOD, BINS)
    feed(p, x, ts)
    assert p.known == 0
    assert p.weight() == 0.0
    assert not p.table().any()
    np.testing.assert_allclose(p.adjust(x[:500], ts[:500]), x[:500], rtol=1e-14)  # untouched
    # Every bin was seen (23 merged; the clock is still in the last one).
    assert p.periods.tolist() == [1.0] * 23 + [0.0]
    assert p.count.tolist() == [100.0] * 23 + [0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_smooth_cycle_is_taken_out_after_two_periods(seed: int) -> None:
    x, ts = cycle(seed, 3.0, 0.3)
    two = int(2 * PERIOD)
    p = SeasonalProfile(PERIOD, BINS)
    feed(p, x[:two], ts[:two])
    assert p.known == 23  # the last bin of the second period merges when the clock leaves it
    feed(p, x[two: two + 1], ts[two: two + 1])
    assert p.known == 24
    assert p.weight() > 0.93  # (1 - d/v: a sine in 24 bins has d/v = 0.017, noise adds)
    # Each bin's mean of 200 values has an SE of 0.35 / sqrt(200) = 0.025.
    shape = _bin_cycle(0.3) - _bin_cycle(0.3).mean()
    np.testing.assert_allclose(p.table(), p.weight() * shape, atol=0.08)
    rest_x, rest_ts = x[two:], ts[two:]
    raw = _sine_amplitude(np.log1p(rest_x), rest_ts)
    adjusted = _sine_amplitude(np.log1p(p.adjust(rest_x, rest_ts)), rest_ts)
    assert raw == pytest.approx(0.3, abs=0.02)
    assert adjusted < 0.05  # (a sixth of it: 1 - weight, and the bins' estimation error)


def test_independent_noise_gets_almost_no_weight() -> None:
    weights = []
    for seed in range(10):
        x, ts = cycle(100 + seed, 3.0, 0.0)
        p = SeasonalProfile(PERIOD, BINS)
        feed(p, x, ts)
        assert p.known == 24
        weights.append(p.weight())
    # Over 200 seeds: median 0, 90th percentile 0.23, maximum 0.44 (a sine: > 0.93).
    assert max(weights) < 0.45
    assert float(np.mean(weights)) < 0.15
    assert weights.count(0.0) >= 4


def test_the_profile_is_the_same_fed_in_one_batch_or_many() -> None:
    x, ts = cycle(5, 3.5, 0.4)
    whole = SeasonalProfile(PERIOD, BINS)
    feed(whole, x, ts)
    parts = SeasonalProfile(PERIOD, BINS)
    cuts = np.sort(np.random.default_rng(1).choice(np.arange(1, x.shape[0]), 300, replace=False))
    for xs, tss in zip(np.split(x, cuts), np.split(ts, cuts), strict=True):
        feed(parts, xs, tss)
    np.testing.assert_array_equal(parts.count, whole.count)
    np.testing.assert_array_equal(parts.periods, whole.periods)
    np.testing.assert_array_equal(parts.last_period, whole.last_period)
    np.testing.assert_allclose(parts.sum, whole.sum, rtol=1e-12)
    assert (parts.clock, parts._bin, parts.version, parts.visit) == (
        whole.clock, whole._bin, whole.version, whole.visit)
    np.testing.assert_allclose(parts.table(), whole.table(), rtol=0, atol=1e-12)


def test_a_bin_not_counted_yet_continues_the_curve() -> None:
    # A ramp, log1p(x) = c * bin, exactly: all of period 1, bins 0-11 of period 2 (and one
    # value in bin 12, which moves the clock out of bin 11).
    c = 0.05
    ts = np.concatenate([np.arange(PERIOD), PERIOD + np.arange(12 * WIDTH + 1)])
    x = np.expm1(c * np.floor(np.mod(ts, PERIOD) / WIDTH))
    p = SeasonalProfile(PERIOD, BINS)
    feed(p, x, ts)
    assert p.known == 12
    weight = 1.0 - (c * c / 2) / (c * c * 143 / 12)  # d / v of 0..11: 0.5 / (143 / 12)
    assert p.weight() == pytest.approx(weight, rel=1e-9)
    expect = np.concatenate([c * (np.arange(12) - 5.5),   # known: less their mean
                             np.full(12, c * (11 + 1 - 5.5))])  # one step on, then level
    np.testing.assert_allclose(p.table(), weight * expect, rtol=1e-9, atol=1e-12)


def test_fewer_than_four_known_bins_take_nothing_out() -> None:
    ts = np.concatenate([np.arange(PERIOD), PERIOD + np.arange(3 * WIDTH + 1)])
    x = np.expm1(0.1 * np.floor(np.mod(ts, PERIOD) / WIDTH))
    p = SeasonalProfile(PERIOD, BINS)
    feed(p, x, ts)
    assert p.known == 3
    assert p.weight() == 0.0
    assert not p.table().any()


def test_each_bin_remembers_a_bounded_number_of_periods() -> None:
    x, ts = cycle(3, 20.0, 0.3)
    p = SeasonalProfile(PERIOD, BINS)
    feed(p, x, ts)
    assert p.visit == 100.0
    assert p.count[:-1].tolist() == [MEMORY_PERIODS * 100.0] * 23
    assert p.periods[:-1].tolist() == [20.0] * 23


def test_the_clock_never_moves_back() -> None:
    p = SeasonalProfile(PERIOD, BINS)
    # 50 values in bin 1, then one late value from bin 0 (it counts where the clock is).
    ts = np.concatenate([WIDTH + np.arange(50.0), [10.0], [WIDTH + 60.0], [2 * WIDTH]])
    assert p.until_next_bin(ts) == 53 - 1
    feed(p, np.ones(53), ts)
    assert p.clock == 2 * WIDTH
    assert p.count[:3].tolist() == [0.0, 52.0, 0.0]
    assert p.sum[1] == pytest.approx(52 * math.log(2.0))


def test_dump_and_load_round_trip_exactly() -> None:
    x, ts = cycle(8, 2.6, 0.3)
    cut = 5678  # inside a bin: something is pending
    p = SeasonalProfile(PERIOD, BINS)
    feed(p, x[:cut], ts[:cut])
    assert p._pending[1] > 0
    fields = state.decode(state.encode(p.dump("season")))
    q = SeasonalProfile(PERIOD, BINS)
    q.load(state.Reader(fields).sub("season"))
    assert _state(q)[:-1] == _state(p)[:-1]
    np.testing.assert_array_equal(q.table(), p.table())
    feed(p, x[cut:], ts[cut:])
    feed(q, x[cut:], ts[cut:])
    assert _state(q)[:-1] == _state(p)[:-1]
    np.testing.assert_array_equal(q.table(), p.table())


def test_load_refuses_another_number_of_bins() -> None:
    p = SeasonalProfile(PERIOD, BINS)
    fields = p.dump("s")
    with pytest.raises(ValueError, match="seasonal profile of 24 bins, this configuration has 12"):
        SeasonalProfile(PERIOD, 12).load(state.Reader(fields).sub("s"))


@pytest.mark.parametrize(("period", "bins"), [(0.0, 24), (-1.0, 24), (86_400.0, 0)])
def test_a_profile_needs_a_period_and_bins(period: float, bins: int) -> None:
    with pytest.raises(ValueError, match="a period > 0 and at least one bin"):
        SeasonalProfile(period, bins)


def test_phases_and_adjust() -> None:
    p = SeasonalProfile(PERIOD, BINS)
    ts = np.array([0.0, 99.9, 100.0, 2399.9, 2400.0, 4850.0])
    assert p.phases(ts).tolist() == [0, 0, 1, 23, 0, 0]
    assert p.phases(ts).dtype == np.uint8
    assert SeasonalProfile(PERIOD, 300).phases(ts).dtype == np.int64
    x, tsx = cycle(2, 3.0, 0.3)
    feed(p, x, tsx)
    values = np.array([0.0, 10.0, 100.0, 1000.0])
    adjusted = p.adjust(values, np.full(4, 650.0))
    # log1p(adjusted) = log1p(x) - offset of the bin: monotone, 0 stays near 0.
    np.testing.assert_allclose(np.log1p(adjusted), np.log1p(values) - p.table()[6], atol=1e-12)
    assert (np.diff(adjusted) > 0).all()


# -- the profile in a signal -----------------------------------------------------------------
def _signal(season: SeasonalProfile | None) -> ScalarSignal:
    return ScalarSignal("latency", 0.8e-6, 2000, max_order=0, lrv=False, season=season)


def test_a_known_cycle_is_not_drift_but_a_step_still_is() -> None:
    # A cycle of 0.6 log-SD in a 0.35 noise (1.7 noise SDs): paged for without the profile;
    # with a profile that learned two periods first, quiet -- and a +1 SD step is caught.
    x, ts = cycle(4, 6.0, 0.6)
    two = int(2 * PERIOD)
    step = int(4.5 * PERIOD)
    xs = x.copy()
    xs[step:] *= np.exp(0.35)
    bare = _signal(None).update(x[two:], ts[two:])
    assert bare  # the cycle alone alarms
    season = SeasonalProfile(PERIOD, BINS)
    feed(season, x[:two], ts[:two])
    assert _signal(season).update(x[two:], ts[two:]) == []
    season = SeasonalProfile(PERIOD, BINS)
    feed(season, x[:two], ts[:two])
    alarms = _signal(season).update(xs[two:], ts[two:])
    assert [a.detector for a in alarms] == ["cusum_mean_up"]
    assert 0 <= alarms[0].index + two - step < 200
