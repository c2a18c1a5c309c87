"""The three ways a CUSUM bank scans a run (compiled; without numba, a plain loop for short
runs and numpy for long ones) give identical results: first alarm, statistic and run
length."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import cusum
from detectors.cusum import Cusum, scan_many


def _bank(rng: np.random.Generator, k: int) -> list[Cusum]:
    dets = []
    for j in range(k):
        h = int(rng.integers(5, 400))
        s = int(rng.integers(0, h))
        dets.append(Cusum(f"d{j}", h, s=s, run=int(rng.integers(0, 50)) if s else 0))
    return dets


@pytest.mark.parametrize("seed", range(200))
def test_loop_scan_equals_numpy_scan(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    n = int(rng.integers(0, 120))
    # Drifts up, down or not at all; exact zeros on purpose (the statistic lands on 0).
    inc = rng.integers(-30, 30, size=(k, n)) + int(rng.integers(-8, 9))
    inc[rng.random((k, n)) < 0.1] = 0
    dets = _bank(rng, k)
    incs: np.ndarray | list[np.ndarray] = inc if seed % 2 else list(inc)

    assert cusum._compiled_scan() is not None
    compiled = scan_many(dets, incs)
    one_by_one = [d.scan(np.asarray(row, dtype=np.int64)) for d, row in zip(dets, inc, strict=True)]
    monkeypatch.setattr(cusum, "_compiled_scan", lambda: None)  # as without numba
    monkeypatch.setattr(cusum, "LOOP_SCAN_MAX", 10**9)
    by_loop = scan_many(dets, incs)
    monkeypatch.setattr(cusum, "LOOP_SCAN_MAX", -1)
    by_numpy = scan_many(dets, incs)
    assert compiled == by_loop == by_numpy == one_by_one
    assert all(type(v) is int for row in compiled for v in row)  # (state stays plain ints)


def test_scan_refuses_float_increments() -> None:
    with pytest.raises(TypeError, match="integers"):
        scan_many([Cusum("d", 10)], [np.array([0.5, 2.0])])


def test_loop_scan_reports_the_first_alarm_and_the_run_since_zero() -> None:
    det = Cusum("up", h=10, s=3, run=4)
    # 3+2=5 (run 5), 5-7 -> 0 (run 0), 4 (1), 8 (2), 12 >= 10: alarm at index 4 (run 3)
    assert scan_many([det], [np.array([2, -7, 4, 4, 4, 100])]) == [(4, 12, 3)]
    # No alarm: the state at the end.
    assert scan_many([det], [np.array([1, 1])]) == [(-1, 5, 6)]


@pytest.mark.parametrize("n", [1, 2, 7, 200, 2001])
def test_reference_median_is_numpys(n: int) -> None:
    from detectors.signal import NormalScores

    rng = np.random.default_rng(n)
    ref = np.round(rng.lognormal(5.0, 0.5, n))  # ties on purpose
    assert NormalScores(ref).median() == float(np.median(ref))
