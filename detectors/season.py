"""Where in its day (or week) a signal usually sits, learned as it goes.

Latency at 3 pm is not latency at 3 am, and a detector that compares both with one
reference pages someone every afternoon. A :class:`SeasonalProfile` divides a period (a
day, a week) into bins read from ``ts`` and learns the mean of ``log1p(value)`` in each.
Its *shape* (each bin's mean less the mean over the bins) is taken out of every value —
of the reference's and of the monitored ones alike, so the two stay comparable as the
profile learns — and a cycle the profile knows is not drift, while a change that does not
follow the clock (a step, a ramp over an hour) still is.

How much of the shape is taken out depends on how smooth it is from bin to bin: a real
cycle is, the noise of a level that wanders on its own (a prompt mix) is not, and taking
that out would only add it twice (see :meth:`SeasonalProfile.weight`).

A bin's offset counts once the bin was seen in two periods: on the first day a step change
and a time of day look alike, and only the second day tells them apart (until then the
signal is watched as it would be without a profile). The profile outlives references: a new
model version's warm-up starts with the cycle its predecessor learned (the load that drives
it is the traffic's, not the model's), so a fresh deploy is not blind for a period. A bin
not counted yet continues the curve from the two counted bins before it. Each bin remembers
about :data:`MEMORY_PERIODS` periods, so the profile follows a cycle that changes over
weeks, and a level that shifts for good is absorbed evenly.

Learning is the same however a run is cut into batches: what a bin takes in is merged when
the clock (the running maximum of ``ts``; an out-of-order event never moves it back)
leaves it, and values are adjusted with the profile as merged.
"""

from __future__ import annotations

import math

import numpy as np
from driftline.detectors import state

MEMORY_PERIODS = 14.0  # periods a bin's mean remembers
MIN_KNOWN = 4  # bins that count before any shape is taken out
MIN_PERIODS = 2  # periods a bin must be seen in to count


class SeasonalProfile:
    """Mean ``log1p(value)`` by time of period; :meth:`adjust` takes its shape out."""

    def __init__(self, period_s: float, bins: int) -> None:
        if period_s <= 0 or bins < 1:
            raise ValueError("a seasonal profile needs a period > 0 and at least one bin")
        self.period_s = float(period_s)
        self.bins = int(bins)
        self.width = self.period_s / self.bins
        self.sum = np.zeros(self.bins)
        self.count = np.zeros(self.bins)
        self.visit = 0.0  # values a bin takes in per period (the largest visit so far)
        # Periods each bin was seen in, and the last one: a bin counts once it was seen in
        # two (a step change on the first day is not a time of day).
        self.periods = np.zeros(self.bins)
        self.last_period = np.full(self.bins, -1.0)
        self.clock = -math.inf
        self._bin = -1  # absolute bin of the clock (floor(clock / width))
        self._pending = [0.0, 0.0]  # sum and count taken in since the clock entered it
        self._table: np.ndarray | None = None
        self.version = 0  # changes whenever the offsets may have

    # -- reading ----------------------------------------------------------------------------
    @property
    def known(self) -> int:
        """Bins whose offset counts: seen in at least :data:`MIN_PERIODS` periods."""
        return int(np.count_nonzero(self._known_mask()))

    def _known_mask(self) -> np.ndarray:
        return (self.periods >= MIN_PERIODS) & (self.count > 0)

    def weight(self) -> float:
        """How much of the shape to take out, 0..1.

        With ``v`` the variance of the known bins' means and ``d`` half the mean square
        step between neighbouring known bins (von Neumann's ratio), independent noise
        gives ``d ~ v`` and a smooth cycle ``d << v``: ``1 - d / v`` takes a cycle out
        almost whole and noise not at all. 0 with fewer than :data:`MIN_KNOWN` bins."""
        known = np.flatnonzero(self._known_mask())
        if known.size < MIN_KNOWN:
            return 0.0
        mean = self.sum[known] / self.count[known]
        v = float(mean.var())
        if v <= 0.0:
            return 0.0
        nxt = np.roll(np.arange(known.size), -1)
        adjacent = (known[nxt] - known) % self.bins == 1
        if not adjacent.any():
            return 0.0
        d = float(np.mean((mean[nxt][adjacent] - mean[adjacent]) ** 2)) / 2.0
        return min(max(1.0 - d / v, 0.0), 1.0)

    def table(self) -> np.ndarray:
        """The offset taken out in every bin (``log1p`` units)."""
        if self._table is None:
            known = np.flatnonzero(self._known_mask())
            out = np.zeros(self.bins)
            if known.size:
                mean = self.sum[known] / self.count[known]
                # For each bin, the last known bin at or before it (circularly), and the
                # slope from the known bin before that when they are neighbours: a bin not
                # seen yet continues the curve (a cycle is smooth).
                idx = np.searchsorted(known, np.arange(self.bins), "right") - 1
                level = mean[idx]  # (idx -1: the last)
                if known.size >= 2:
                    gap = (np.arange(self.bins) - known[idx]) % self.bins
                    prev = idx - 1
                    step = (known[idx] - known[prev]) % self.bins == 1
                    slope = np.where(step, mean[idx] - mean[prev], 0.0)
                    level = level + np.where(gap > 0, np.minimum(gap, 1) * slope, 0.0)
                out = (level - mean.mean()) * self.weight()
            out.flags.writeable = False
            self._table = out
        return self._table

    def phases(self, ts: np.ndarray) -> np.ndarray:
        """The bin of the period each timestamp falls in (uint8 up to 256 bins)."""
        phase = np.floor(np.mod(ts, self.period_s) / self.width).astype(np.int64)
        np.clip(phase, 0, self.bins - 1, out=phase)
        return phase.astype(np.uint8) if self.bins <= 256 else phase

    def adjust(self, x: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Values with their bin's offset taken out (``x >= 0``; monotone within a bin)."""
        return self.adjust_phases(x, self.phases(ts))

    def adjust_phases(self, x: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """:meth:`adjust` of values whose bins are known (a reference keeps only these)."""
        return np.expm1(np.log1p(x) - self.table()[phases])

    # -- learning ---------------------------------------------------------------------------
    def until_next_bin(self, ts: np.ndarray) -> int:
        """How many of ``ts`` (at least 1) the clock spends in the bin the first one puts it
        in: a run is cut there, so that what a bin took in counts from the next on."""
        clock = np.maximum.accumulate(np.maximum(ts, self.clock))
        absolute = np.floor(clock / self.width)
        moved = np.flatnonzero(absolute != absolute[0])
        return int(moved[0]) if moved.size else int(ts.shape[0])

    def begin(self, ts: np.ndarray) -> None:
        """Move the clock to a run of ``ts`` within one clock bin (merging the bin it
        leaves), before the run's offsets are read."""
        if ts.shape[0] == 0:
            return
        self.clock = max(self.clock, float(ts.max()))
        absolute = math.floor(self.clock / self.width)
        if absolute != self._bin:
            self._merge()
            self._bin = absolute

    def take(self, x: np.ndarray) -> None:
        """Learn values of the run begun; they count for the clock's bin once it leaves it."""
        if x.shape[0]:
            self._pending[0] += float(np.sum(np.log1p(x)))
            self._pending[1] += float(x.shape[0])

    def learn(self, x: np.ndarray, ts: np.ndarray) -> None:
        """Take values (``ts`` ascending, not before the clock) into the profile, one clock
        bin at a time: a warm-up's values, or history from before the monitor started."""
        i = 0
        while i < x.shape[0]:
            k = self.until_next_bin(ts[i:])
            self.begin(ts[i: i + k])
            self.take(x[i: i + k])
            i += k

    def _merge(self) -> None:
        s, c = self._pending
        self._pending = [0.0, 0.0]
        if self._bin < 0 or c <= 0:
            return
        b = self._bin % self.bins
        period = float(self._bin // self.bins)
        if period != self.last_period[b]:
            self.periods[b] += 1
            self.last_period[b] = period
        self.visit = max(self.visit, c)
        self.sum[b] += s
        self.count[b] += c
        cap = MEMORY_PERIODS * self.visit
        if self.count[b] > cap:
            self.sum[b] *= cap / self.count[b]
            self.count[b] = cap
        self._table = None
        self.version += 1

    # -- state ------------------------------------------------------------------------------
    def dump(self, prefix: str) -> dict[str, state.Value]:
        return {f"{prefix}.sum": self.sum.copy(), f"{prefix}.count": self.count.copy(),
                f"{prefix}.visit": self.visit, f"{prefix}.clock": float(self.clock),
                f"{prefix}.bin": self._bin, f"{prefix}.psum": self._pending[0],
                f"{prefix}.periods": self.periods.copy(),
                f"{prefix}.last_period": self.last_period.copy(),
                f"{prefix}.pcount": self._pending[1]}

    def load(self, r: state.Reader) -> None:
        s, c = r.array("sum"), r.array("count")
        if s.shape != (self.bins,) or c.shape != (self.bins,):
            raise ValueError(f"seasonal profile of {s.shape[0]} bins, this configuration "
                             f"has {self.bins}")
        self.sum, self.count = s.astype(np.float64), c.astype(np.float64)
        self.visit = r.real("visit")
        self.periods = r.array("periods").astype(np.float64)
        self.last_period = r.array("last_period").astype(np.float64)
        self.clock = r.real("clock")
        self._bin = r.integer("bin")
        self._pending = [r.real("psum"), r.real("pcount")]
        self._table = None
        self.version += 1
