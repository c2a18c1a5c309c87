"""One-sided CUSUM on fixed-point increments, vectorised over a batch.

``S_t = max(0, S_{t-1} + x_t)`` equals ``C_t - min(0, min_{s<=t} C_s)`` with ``C``
the running sum of ``x`` started at ``S_0``: one ``np.cumsum`` and one
``np.minimum.accumulate`` per batch. Increments are integers (log-likelihood
ratios times ``SCALE``, or grid steps of a Bernoulli CUSUM), so sums are exact
and a batch of any size gives bit-for-bit the detections of one event at a time.

:class:`CUSUM` and :class:`BernoulliCUSUM` expose the same statistic through
river's ``DriftDetector`` interface for use outside a monitor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from driftline.detectors import calibration
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

    def scan(self, inc: np.ndarray) -> tuple[int, int, int]:
        """First index reaching ``h`` (or -1) and ``(s, run)`` there or at the end.

        Does not change the state; :meth:`commit` does.
        """
        return scan_many([self], [inc])[0]

    def commit(self, s: int, run: int) -> None:
        self.s = s
        self.run = run

    def fraction(self) -> float:
        """How close to an alarm, 0..1."""
        return self.s / self.h


# Up to this many increments (detectors x events) a plain loop beats numpy's fixed cost
# per call (~15 calls of 1-3 µs each); results are identical (integer arithmetic). (Both
# only serve where numba is missing: the compiled scan below beats them at every size.)
LOOP_SCAN_MAX = 512


def _scan_loop(dets: list[Cusum], rows: list[list[int]]) -> list[tuple[int, int, int]]:
    """:func:`scan_many` one increment at a time, for short runs."""
    out = []
    for d, row in zip(dets, rows, strict=True):
        s, run, h, hit = d.s, d.run, d.h, -1
        for i, x in enumerate(row):
            s += x
            if s > 0:
                run += 1
            else:
                s = run = 0
            if s >= h:
                hit = i
                break
        out.append((hit, s, run))
    return out


def _scan_rows(inc: np.ndarray, state: np.ndarray) -> None:
    """The loop of :func:`_scan_loop` over an int64 (k, n) array, in place on ``state``,
    the detectors' (s, run, h, hit) one after the other (hit: -1 in; out, the first index
    reaching h, or -1). Compiled by numba (:func:`_compiled_scan`)."""
    k, n = inc.shape
    for j in range(k):
        s = state[4 * j]
        run = state[4 * j + 1]
        h = state[4 * j + 2]
        for i in range(n):
            s += inc[j, i]
            if s > 0:
                run += 1
            else:
                s = 0
                run = 0
            if s >= h:
                state[4 * j + 3] = i
                break
        state[4 * j] = s
        state[4 * j + 1] = run


def _compiled_scan() -> Any:
    """:func:`_scan_rows` compiled, or None without numba."""
    return calibration.compiled(_scan_rows)


def scan_many(dets: list[Cusum], incs: list[np.ndarray] | np.ndarray
              ) -> list[tuple[int, int, int]]:
    """``[d.scan(inc) for d, inc in zip(dets, incs)]`` in one pass over a (k, n) array.

    A signal's detectors see the same events: one compiled call scans all of them
    (a few µs for a run of any length; the interpreted loop took ~60 µs for the
    ~250 increments of a short run, and numpy's ~15 calls ~30 µs).
    """
    if not dets:
        return []
    kernel = _compiled_scan()
    if kernel is not None:
        if isinstance(incs, np.ndarray):
            if incs.dtype.kind not in "iu":
                raise TypeError(f"CUSUM increments must be integers, not {incs.dtype}")
            inc = np.ascontiguousarray(incs, dtype=np.int64)
        else:  # (row by row: np.stack costs more than the scan)
            inc = np.empty((len(incs), incs[0].shape[0]), dtype=np.int64)
            for j, row in enumerate(incs):
                if row.dtype.kind not in "iu":
                    raise TypeError(f"CUSUM increments must be integers, not {row.dtype}")
                inc[j] = row
        state = np.array([x for d in dets for x in (d.s, d.run, d.h, -1)], dtype=np.int64)
        kernel(inc, state)
        out = state.tolist()
        return list(zip(out[3::4], out[0::4], out[1::4], strict=True))
    return _scan_interpreted(dets, incs)


# How :func:`_table_scan_rows` finds the column of the increment table for a value.
BY_RANK = 0  # twice the mid-rank in a sorted reference of distinct values (+inf appended)
BY_RANK_TIES = 1  # the same in a reference with ties
BY_EVENT = 2  # 1 for an event (a value > 0.5), else 0


def _table_scan_rows(x: np.ndarray, ref: np.ndarray, mode: int, table: np.ndarray,
                     state: np.ndarray, hit: np.ndarray) -> None:
    """A CUSUM bank fed ``table[:, column(x_i)]`` value by value, the column found once for
    all detectors: :func:`scan_many` of a table lookup without the (detectors, n) array of
    increments in between. ``state`` holds the detectors' (s, run, h) one after the other
    and is updated in place up to the first value where a detector reaches h; ``hit``
    then holds that value's index and the first such detector (else it stays -1, -1).
    The column of a value is BY_RANK ``#(ref < x) + #(ref <= x)``, as
    ``NormalScores.positions`` (binary searches as numpy's ``searchsorted``), or BY_EVENT
    ``x > 0.5``. Compiled by numba (:func:`_compiled_table_scan`)."""
    n = ref.shape[0] - 1  # (the appended +inf)
    k = table.shape[0]
    for i in range(x.shape[0]):
        v = x[i]
        if mode == BY_EVENT:
            c = 1 if v > 0.5 else 0
        else:
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if ref[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            if mode == BY_RANK_TIES:
                r = lo
                hi = n
                while r < hi:
                    mid = (r + hi) // 2
                    if ref[mid] <= v:
                        r = mid + 1
                    else:
                        hi = mid
                c = lo + r
            else:
                c = 2 * lo + (1 if ref[lo] == v else 0)
        for j in range(k):
            s = state[3 * j] + table[j, c]
            if s > 0:
                state[3 * j + 1] += 1
            else:
                s = 0
                state[3 * j + 1] = 0
            state[3 * j] = s
        for j in range(k):
            if state[3 * j] >= state[3 * j + 2]:
                hit[0] = i
                hit[1] = j
                return


def _compiled_table_scan() -> Any:
    """:func:`_table_scan_rows` compiled, or None without numba."""
    return calibration.compiled(_table_scan_rows)


_NO_REF = np.full(1, np.inf)


def table_scan(dets: list[Cusum], x: np.ndarray, table: np.ndarray, mode: int,
               ref: np.ndarray = _NO_REF) -> list[tuple[int, int, int]] | None:
    """:func:`scan_many` of the increments ``table[:, column(x)]`` in one compiled pass
    (see :func:`_table_scan_rows`; ``ref`` sorted, +inf appended), or None without numba.

    Only the first alarm of the bank is reported (the detector, the statistic and the run
    there; the others' entries are those of the same index, with -1): a signal re-baselines
    on it and drops the bank, so the later alarms :func:`scan_many` would report for the
    other detectors are never read.
    """
    kernel = _compiled_table_scan()
    if kernel is None:
        return None
    if table.dtype != np.int64 or not table.flags.c_contiguous:
        raise TypeError("a CUSUM increment table must be C-contiguous int64")
    state = np.array([v for d in dets for v in (d.s, d.run, d.h)], dtype=np.int64)
    hit = np.array([-1, -1], dtype=np.int64)
    kernel(np.ascontiguousarray(x, dtype=np.float64), ref, mode, table, state, hit)
    out = state.tolist()
    at, first = hit.tolist()
    return [(at if j == first else -1, out[3 * j], out[3 * j + 1]) for j in range(len(dets))]


def _scan_interpreted(dets: list[Cusum], incs: list[np.ndarray] | np.ndarray
                      ) -> list[tuple[int, int, int]]:
    """:func:`scan_many` without numba: a plain loop for runs of at most
    :data:`LOOP_SCAN_MAX` increments, numpy for longer ones."""
    k = len(dets)
    n = incs.shape[1] if isinstance(incs, np.ndarray) else np.asarray(incs[0]).shape[0]
    if k * n <= LOOP_SCAN_MAX:
        lists = (incs.tolist() if isinstance(incs, np.ndarray)
                 else [np.asarray(r).tolist() for r in incs])
        return _scan_loop(dets, lists)
    inc = incs if isinstance(incs, np.ndarray) else np.stack(incs)
    if n == 0:
        return [(-1, d.s, d.run) for d in dets]
    c = np.cumsum(inc, axis=1, dtype=np.int64)
    c += np.array([d.s for d in dets], dtype=np.int64)[:, None]
    s = c - np.minimum.accumulate(np.minimum(c, 0), axis=1)
    hit = s >= np.array([d.h for d in dets], dtype=np.int64)[:, None]
    rows = np.arange(k)
    idx = hit.argmax(axis=1)
    found = hit[rows, idx]
    end = np.where(found, idx, n - 1)
    # The last index at or before ``end`` where the statistic sat at 0 (-1: none).
    last_zero = np.maximum.accumulate(np.where(s == 0, np.arange(n), -1), axis=1)[rows, end]
    out = []
    for j, d in enumerate(dets):
        e = int(end[j])
        z = int(last_zero[j])
        out.append((int(idx[j]) if found[j] else -1, int(s[j, e]),
                    e - z if z >= 0 else d.run + e + 1))
    return out


class CUSUM(base.DriftDetector):
    """Two-sided CUSUM for a mean shift of standardised values, river-compatible.

    The threshold is calibrated (Markov chain) for ``target_false_alarm_rate``
    per update on N(0, 1) input; standardise inputs against a reference first.

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
            idx, s, run = det.scan(to_fixed(np.array([d * (sign * x) - d * d / 2])))
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
        idx, s, run = self._det.scan(np.array([self._a if x else -1], dtype=np.int64))
        self._det.commit(s, run)
        self._drift_detected = idx >= 0

    @classmethod
    def _unit_test_params(cls):  # type: ignore[no-untyped-def]
        yield {}


def bernoulli_design(p0: float, ratio: float) -> tuple[int, float]:
    """Integer grid of a Bernoulli LLR CUSUM from ``p0`` to ``ratio * p0``.

    Returns ``(a, unit)``: in the rising direction an event adds ``a`` units and
    a non-event subtracts one; in the falling direction (``ratio < 1``) a
    non-event adds one and an event subtracts ``a``. ``unit`` is the LLR of one
    step, so ``a`` rounds the event's LLR to the grid.
    """
    p1 = min(p0 * ratio, (1.0 + p0) / 2.0)
    if ratio > 1:
        unit = math.log((1.0 - p0) / (1.0 - p1))
        a = max(1, round(math.log(p1 / p0) / unit))
    else:
        unit = math.log((1.0 - p1) / (1.0 - p0))
        a = max(1, round(math.log(p0 / p1) / unit))
    return a, unit
