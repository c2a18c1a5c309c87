"""One-sided CUSUM: the statistic, its state, and river-compatible detectors.

``S_t = max(0, S_{t-1} + x_t)``; alarm at the first ``t`` with ``S_t >= h``. The increments
``x_t`` are log-likelihood ratios of the change the detector is designed for (times
``SCALE``, as integers) or the grid steps of a Bernoulli CUSUM, so sums are exact and a run
cut into batches of any size gives bit for bit the detections of one event at a time.
``run`` counts the steps since the statistic last left zero: the alarm's estimate of how
long ago the change began.

:func:`reference_scan` is the definition, one plain loop; the compiled kernels in
:mod:`driftline.detectors.kernels` are tested against it. :class:`CUSUM` and
:class:`BernoulliCUSUM` expose the statistic through river's ``DriftDetector`` interface
for use outside a monitor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from driftline.detectors import calibration, kernels
from river import base

SCALE = 1 << 24  # fixed-point resolution of log-likelihood-ratio increments


def to_fixed(x: np.ndarray) -> np.ndarray:
    """Log-likelihood ratios as exact int64 fixed-point increments."""
    return np.rint(np.asarray(x, dtype=np.float64) * SCALE).astype(np.int64)


@dataclass(slots=True)
class Cusum:
    """State of one one-sided CUSUM: statistic, threshold, run since it left 0."""

    name: str
    h: int
    s: int = 0
    run: int = 0

    def commit(self, s: int, run: int) -> None:
        self.s = s
        self.run = run

    def reset(self) -> None:
        self.s = 0
        self.run = 0

    def fraction(self) -> float:
        """How close to an alarm, 0..1."""
        return self.s / self.h


def reference_scan(dets: Sequence[Cusum], incs: Sequence[Sequence[int]]
                   ) -> list[tuple[int, int, int]]:
    """Each detector's (first index where ``S >= h`` or -1, ``S`` and ``run`` there or at the
    end) over its row of increments; the detectors are not changed."""
    out = []
    for d, row in zip(dets, incs, strict=True):
        s, run, hit = d.s, d.run, -1
        for i, x in enumerate(row):
            s = s + int(x)
            if s > 0:
                run += 1
            else:
                s, run = 0, 0
            if s >= d.h:
                hit = i
                break
        out.append((hit, s, run))
    return out


def bernoulli_design(p0: float, ratio: float) -> tuple[int, float]:
    """Integer grid of a Bernoulli LLR CUSUM from ``p0`` to ``ratio * p0``.

    Returns ``(a, unit)``: in the rising direction an event adds ``a`` units and a
    non-event subtracts one; in the falling direction (``ratio < 1``) a non-event adds one
    and an event subtracts ``a``. ``unit`` is the LLR of one step, so ``a`` rounds the
    event's LLR to the grid.
    """
    p1 = min(p0 * ratio, (1.0 + p0) / 2.0)
    if ratio > 1:
        unit = math.log((1.0 - p0) / (1.0 - p1))
        a = max(1, round(math.log(p1 / p0) / unit))
    else:
        unit = math.log((1.0 - p1) / (1.0 - p0))
        a = max(1, round(math.log(p0 / p1) / unit))
    return a, unit


class CUSUM(base.DriftDetector):
    """Two-sided CUSUM for a mean shift of standardised values, river-compatible.

    The threshold is calibrated (Markov chain) for ``target_false_alarm_rate`` per update
    on N(0, 1) input; standardise inputs against a reference first.

    >>> import random
    >>> rng = random.Random(7)
    >>> det = CUSUM(shift=1.0)
    >>> xs = [rng.gauss(0, 1) for _ in range(1000)] + [rng.gauss(1, 1) for _ in range(200)]
    >>> next(i for i, x in enumerate(xs) if det.update(x) or det.drift_detected)
    1030
    """

    def __init__(self, shift: float = 0.5, target_false_alarm_rate: float = 1e-6) -> None:
        super().__init__()
        self.shift = shift
        self.target_false_alarm_rate = target_false_alarm_rate
        d = shift
        h = calibration.normal_cusum_threshold((0.0, d, -d * d / 2), target_false_alarm_rate / 2, 0)
        self._h = int(h * SCALE)
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._up = Cusum("up", self._h)
        self._down = Cusum("down", self._h)

    def update(self, x: int | float) -> None:
        if not math.isfinite(x):
            raise ValueError(f"CUSUM input must be finite, got {x!r}")
        if self.drift_detected:
            self._reset()
        d = self.shift
        for det, sign in ((self._up, 1.0), (self._down, -1.0)):
            inc = to_fixed(np.array([[d * (sign * x) - d * d / 2]]))
            ((idx, s, run),) = kernels.scan_many([det], inc)
            det.commit(s, run)
            if idx >= 0:
                self._drift_detected = True

    @classmethod
    def _unit_test_params(cls):  # type: ignore[no-untyped-def]
        yield {}


class BernoulliCUSUM(base.BinaryDriftDetector):
    """Upper Bernoulli CUSUM for a rate rising from ``p0`` to ``ratio * p0``.

    Threshold from the exact Markov-chain ARL for ``target_false_alarm_rate``.

    >>> import random
    >>> rng = random.Random(3)
    >>> det = BernoulliCUSUM(p0=0.1)
    >>> xs = [rng.random() < 0.1 for _ in range(5000)] + [rng.random() < 0.2 for _ in range(2000)]
    >>> next(i for i, x in enumerate(xs) if det.update(x) or det.drift_detected)
    5191
    """

    def __init__(self, p0: float = 0.1, ratio: float = 2.0,
                 target_false_alarm_rate: float = 1e-6) -> None:
        super().__init__()
        self.p0 = p0
        self.ratio = ratio
        self.target_false_alarm_rate = target_false_alarm_rate
        self._a, unit = bernoulli_design(p0, ratio)
        self._h = calibration.bernoulli_threshold(self._a, unit, p0, 1e12,
                                                  target_false_alarm_rate, True)
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._det = Cusum("up", self._h)

    def update(self, x: bool) -> None:
        if self.drift_detected:
            self._reset()
        inc = np.array([[self._a if x else -1]], dtype=np.int64)
        ((idx, s, run),) = kernels.scan_many([self._det], inc)
        self._det.commit(s, run)
        self._drift_detected = idx >= 0

    @classmethod
    def _unit_test_params(cls):  # type: ignore[no-untyped-def]
        yield {}
