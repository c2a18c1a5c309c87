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
