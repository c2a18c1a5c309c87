"""Thresholds: the exact ARL recursions agree with a direct linear solve and with theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from driftline.detectors import calibration
from driftline.detectors.cusum import bernoulli_design


def _dense_arl(a: int, p: float, h: int, up: bool) -> float:
    m = np.zeros((h, h))
    for s in range(h):
        if up:
            if s + a < h:
                m[s, s + a] += p
            m[s, max(s - 1, 0)] += 1 - p
        else:
            if s + 1 < h:
                m[s, s + 1] += 1 - p
            m[s, max(s - a, 0)] += p
    return float(np.linalg.solve(np.eye(h) - m, np.ones(h))[0])


@pytest.mark.parametrize(("a", "p", "h", "up"), [
    (6, 0.1, 60, True), (6, 0.1, 90, True), (34, 0.02, 400, True),
    (6, 0.1, 60, False), (68, 0.02, 500, False),
])
def test_bernoulli_recursion_equals_linear_solve(a: int, p: float, h: int, up: bool) -> None:
    fast = calibration.bernoulli_arls(a, p, h, up)[h - 1]
    assert fast == pytest.approx(_dense_arl(a, p, h, up), rel=1e-6)


def test_normal_chain_matches_siegmund() -> None:
    k = 0.25
    for h in (5.0, 10.0):
        arl = calibration.normal_cusum_arl((0.0, 1.0, -k), h)
        b = 2 * k * (h + 1.166)
        assert arl == pytest.approx((math.exp(b) - b - 1) / (2 * k * k), rel=0.02)


def test_estimation_error_raises_the_threshold() -> None:
    shape = (0.0, 0.5, -0.125)
    known = calibration.normal_cusum_threshold(shape, 2.5e-7, 0)
    estimated = calibration.normal_cusum_threshold(shape, 2.5e-7, 2000)
    assert 12.0 < known < estimated < 14.5
    a, unit = bernoulli_design(0.1, 2.0)
    assert (a, round(unit, 4)) == (6, 0.1178)
    h_few = calibration.bernoulli_threshold(a, unit, 0.1, 200.0, 1e-6, True)
    h_many = calibration.bernoulli_threshold(a, unit, 0.1, 1e9, 1e-6, True)
    assert h_many < h_few
    # The exact in-control ARL at the calibrated threshold clears 1e6.
    assert calibration.bernoulli_arls(a, 0.1, h_many, True)[h_many - 1] >= 1e6


def test_compiled_arl_recursion_is_bit_identical_to_the_interpreted_one() -> None:
    """numba compiles the recursion (a dependency; thresholds come out the same bits)."""
    import numba
    from driftline.detectors import kernels

    kernel = kernels.bernoulli_arls
    assert isinstance(kernel, numba.core.registry.CPUDispatcher)
    rng = np.random.default_rng(5)
    for _ in range(60):
        p = float(10 ** rng.uniform(-3, -0.4))
        up = bool(rng.random() < 0.5)
        a, unit = bernoulli_design(p, 2.0 if up else 0.5)
        h = int(1.2 * math.log(1e7) / unit) + a + 16
        with np.errstate(all="ignore"):
            compiled = kernel(a, p, h, up)
            interpreted = kernel.py_func(a, p, h, up)
        assert np.array_equal(compiled, interpreted, equal_nan=True)


def _dense_normal_arl(shape: tuple[float, float, float], h: float, delta: float,
                      scale: float, states: int) -> float:
    """The Brook-Evans chain solved densely: what the Toeplitz solve must reproduce."""
    w = h / (states - 0.5)
    m = np.arange(-states, states + 2)
    cdf = calibration._increment_cdf(shape, delta, scale, (m - 0.5) * w)
    i = np.arange(states)[:, None]
    j = np.arange(states)[None, :]
    p = cdf[(j - i + 1) + states] - cdf[(j - i) + states]
    p[:, 0] = cdf[(1 - np.arange(states)) + states]
    return float(np.linalg.solve(np.eye(states) - p, np.ones(states))[0])


@pytest.mark.parametrize("shape", [(0.0, 0.5, -0.125), (0.2778, 0.0, -0.4055),
                                   (-0.625, 0.0, 0.4055)], ids=["mean", "spread up",
                                                                 "spread down"])
@pytest.mark.parametrize(("h", "delta", "scale"), [(7.0, 0.0, 1.0), (18.5, 0.03, 1.04),
                                                   (22.0, -0.02, 0.97)])
def test_the_toeplitz_chain_is_the_dense_one(shape: tuple[float, float, float], h: float,
                                             delta: float, scale: float) -> None:
    fast = calibration.normal_cusum_arl(shape, h, delta, scale, states=400)
    # (run lengths up to 1e12: both solves are only that well conditioned)
    assert fast == pytest.approx(_dense_normal_arl(shape, h, delta, scale, 400), rel=1e-3)


@pytest.mark.parametrize("shape", [(-0.625, 0.0, 0.4055), (0.2778, 0.0, -0.4055)],
                         ids=["spread down", "spread up"])
def test_the_chain_is_fine_enough_for_the_spread_cusums_at_1e9(
        shape: tuple[float, float, float]) -> None:
    """A spread CUSUM's increments end in a sharp edge; a coarse chain got its rate at
    h = 18.5 (1e9 events between false alarms) wrong by 5x (spread-down) and 2x
    (spread-up). The default is within 5% of a chain of 5,000 cells."""
    for h in (7.0, 11.75, 18.54, 22.0):
        fine = calibration.normal_cusum_arl(shape, h, states=5000)
        assert calibration.normal_cusum_arl(shape, h) == pytest.approx(fine, rel=0.05)
    coarse = calibration.normal_cusum_arl(shape, 18.54, states=160)
    assert not 0.6 < coarse / calibration.normal_cusum_arl(shape, 18.54, states=5000) < 1.6
