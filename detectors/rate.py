"""Rate signals (refusals, negative feedback, errors): Bernoulli CUSUMs on an exact grid."""

from __future__ import annotations

import math

import numpy as np
from driftline.detectors import calibration, state
from driftline.detectors.cusum import BY_EVENT, Cusum, bernoulli_design, table_scan
from driftline.detectors.signal import Alarm, Signal


class RateSignal(Signal):
    """A 0/1 outcome watched for its rate rising (and optionally falling).

    The reference rate comes from a warm-up of at least ``warmup`` outcomes and
    ``min_events`` events (capped at ``10 * warmup`` outcomes); thresholds come
    from the exact Markov-chain ARL averaged over the rate's estimation error.

    A rate estimated from a few hundred events forces a conservative threshold,
    so the reference keeps learning: each time the monitored window reaches
    ``GROWTH`` times the reference (up to ``MAX_REFERENCE`` outcomes) and every
    detector is quiet (statistic below a quarter of its threshold), the window
    joins the reference and the thresholds are recalibrated. Windows with
    evidence of a change are not absorbed.
    """

    GROWTH = 3
    MAX_REFERENCE = 500_000

    def __init__(self, name: str, fa_rate: float, warmup: int, min_events: int = 200,
                 ratio: float = 2.0, down: bool = True, floor: float = 1e-3,
                 kind: str = "behavior") -> None:
        super().__init__(name, fa_rate)
        self.kind = kind
        self.warmup = warmup
        self.min_events = min_events
        self.ratio = ratio
        self.down = down
        self.floor = floor
        self.p0 = math.nan
        self._designs: list[tuple[int, float, bool]] = []
        self._table = np.zeros((0, 2), dtype=np.int64)  # increments: (detectors, no/event)
        self._warm_reset()

    def _warm_reset(self) -> None:
        self._n = 0
        self._events = 0
        self._wn = 0
        self._wev = 0
        self.p0 = math.nan

    def _until_refresh(self) -> int | None:
        if self._n >= self.MAX_REFERENCE:
            return None
        return max(self.GROWTH * self._n - self._wn, 1)

    def _refresh(self) -> None:
        quiet = all(4 * d.s < d.h for d in self.dets)
        if quiet:
            self._n += self._wn
            self._events += self._wev
            self._fit()
        self._wn = 0
        self._wev = 0

    def _warm_take(self, seg: np.ndarray) -> tuple[int, bool]:
        n = seg.shape[0]
        cap = 10 * self.warmup
        count = self._n + np.arange(1, n + 1)
        events = self._events + np.cumsum(seg)
        done = (count >= self.warmup) & ((events >= self.min_events) | (count >= cap))
        k = int(done.argmax()) if n else 0
        if n and done[k]:
            return k + 1, True
        return n, False

    def _warm_add(self, seg: np.ndarray) -> None:
        self._n += seg.shape[0]
        self._events += int(seg.sum())
        self._ewma_add(seg)

    def _fit(self) -> None:
        self.p0 = self._events / max(self._n, 1)
        p = max(self.p0, self.floor)
        dirs = [True, False] if self.down else [True]
        fa = self.fa_rate / len(dirs)
        self.dets = []
        self._designs = []
        for up in dirs:
            a, unit = bernoulli_design(p, self.ratio if up else 1.0 / self.ratio)
            h = calibration.bernoulli_threshold(a, unit, p, float(max(self._events, 1)), fa, up)
            self.dets.append(Cusum("bernoulli_cusum_up" if up else "bernoulli_cusum_down", h))
            self._designs.append((a, unit, up))
        self._table = np.array([[-1, a] if up else [1, -a] for a, _, up in self._designs],
                               dtype=np.int64)

    def _increments(self, seg: np.ndarray) -> list[np.ndarray]:
        ev = seg > 0.5
        return [np.where(ev, a, -1) if up else np.where(ev, -a, 1)
                for a, _, up in self._designs]

    def _scan(self, seg: np.ndarray) -> list[tuple[int, int, int]]:
        out = table_scan(self.dets, seg, self._table, BY_EVENT)
        return super()._scan(seg) if out is None else out

    def _track(self, seg: np.ndarray) -> None:
        self._ewma_add(seg)
        self._wn += seg.shape[0]
        self._wev += int(seg.sum())

    def _det_scale(self, det: Cusum) -> float:
        return 1.0 / self._designs[self.dets.index(det)][1]

    def _alarm(self, det: int, s: int, run: int, index: int) -> Alarm:
        a, _, up = self._designs[det]
        run = max(run, 1)
        events = (s + run) / (a + 1) if up else (run - s) / (a + 1)
        cur = min(max(events / run, 0.0), 1.0)
        sd = math.sqrt(max(self.p0 * (1.0 - self.p0), 1e-12))
        return Alarm(index, self.dets[det].name, self.p0, cur, abs(cur - self.p0) / sd)

    def _baseline(self) -> float:
        return self.p0

    def _dump(self) -> dict[str, state.Value]:
        return {"n": self._n, "events": self._events, "wn": self._wn, "wev": self._wev}

    def _load(self, r: state.Reader) -> None:
        self._n = r.integer("n")
        self._events = r.integer("events")
        self._wn = r.integer("wn")
        self._wev = r.integer("wev")
