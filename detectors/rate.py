"""Rate signals (refusals, negative feedback, errors): Bernoulli CUSUMs on an exact grid."""

from __future__ import annotations

import math

import numpy as np
from driftline.detectors import calibration, state
from driftline.detectors.cusum import Cusum, bernoulli_design
from driftline.detectors.kernels import BY_EVENT, table_scan
from driftline.detectors.signal import Alarm, Signal

CV_GRID = 0.02  # dispersion estimates are rounded up to a multiple of this


MIN_WINDOWS = 8  # windows a dispersion is read from
DISPERSION_SHRINK = 1.0  # standard errors a dispersion must clear


class Windows:
    """Event counts of consecutive windows of ``base`` outcomes (doubling ``base`` when there
    are more than :data:`MAX_WINDOWS`), for a rate's dispersion across windows."""

    BASE = 100
    MAX_WINDOWS = 256  # (a checkpoint carries them: at most 2 KB a stretch)

    def __init__(self) -> None:
        self.base = self.BASE
        self.counts = np.zeros(0)
        self.open = np.zeros(2)  # (outcomes, events) of the open window

    def add(self, events: np.ndarray) -> None:
        """Take in outcomes (1.0: event) in stream order."""
        o, e = float(self.open[0]), float(self.open[1])
        cum = np.concatenate([[0.0], np.cumsum(events)])
        n, i, full = events.shape[0], 0, []
        while i < n:
            take = min(int(self.base - o), n - i)
            e += float(cum[i + take] - cum[i])
            o += take
            i += take
            if o >= self.base:
                full.append(e)
                o, e = 0.0, 0.0
        self.open = np.array([o, e])
        if full:
            self.counts = np.concatenate([self.counts, full])
            self._fold()

    def merge(self, other: Windows) -> None:
        """Take in another stretch's complete windows (its open one is dropped), at the
        longer of the two window lengths: windows of two lengths side by side would read
        as dispersion."""
        c, base = other.counts, other.base
        while base < self.base and c.shape[0] >= 2:
            c = c[: c.shape[0] // 2 * 2].reshape(-1, 2).sum(axis=1)
            base *= 2
        if base < self.base:
            return  # (too short for one window of ours)
        while self.base < base:
            k = self.counts.shape[0] // 2 * 2
            self.counts = self.counts[:k].reshape(-1, 2).sum(axis=1)
            self.base *= 2
        self.counts = np.concatenate([self.counts, c])
        self._fold()

    def _fold(self) -> None:
        """Pair the windows up into windows twice as long while they are too many; an odd
        last one is half of the next window, and joins the open one (which follows it), so
        the windows are the same however the stream was cut into batches."""
        while self.counts.shape[0] > self.MAX_WINDOWS:
            k = self.counts.shape[0] // 2 * 2
            if k < self.counts.shape[0]:
                self.open = self.open + np.array([float(self.base), float(self.counts[-1])])
            self.counts = self.counts[:k].reshape(-1, 2).sum(axis=1)
            self.base *= 2

    def estimable(self, p: float) -> bool:
        """Whether :meth:`dispersion` had windows to read at rate ``p``: 8 or more with 10
        or more expected events each."""
        c, w = self.counts, self.base
        while c.shape[0] >= MIN_WINDOWS and (w * p <= 50.0 or w == self.base):
            if w * p >= 10.0:
                return True
            c, w = c[: c.shape[0] // 2 * 2].reshape(-1, 2).sum(axis=1), w * 2
        return False

    def dispersion(self, p: float) -> float:
        """Relative spread of the rate across windows, beyond binomial sampling, at the
        largest window with 8 or more windows and 10 to ~50 expected events: from the
        windows' median absolute deviation (a change that began inside the stretch, in its
        last windows, is not taken for dispersion), less one standard error, rounded up to
        a multiple of :data:`CV_GRID`. 0 when it looks binomial."""
        best = 0.0
        c = self.counts
        w = self.base
        while c.shape[0] >= MIN_WINDOWS and (w * p <= 50.0 or w == self.base):
            rate = float(c.sum()) / (c.shape[0] * w)
            if 0.0 < rate < 1.0 and w * rate >= 10.0:
                v = _mad_variance(c) / (w * w)
                binom = rate * (1.0 - rate) / w
                # (a MAD-based variance has ~2.7x the sampling variance of the plain one)
                se = 1.65 * max(v, binom) * math.sqrt(2.0 / (c.shape[0] - 1))
                excess = v - binom - DISPERSION_SHRINK * se
                if excess > 0:
                    best = max(best, math.sqrt(excess) / rate)
            c = c[: c.shape[0] // 2 * 2].reshape(-1, 2).sum(axis=1)
            w *= 2
        return math.ceil(best / CV_GRID - 1e-9) * CV_GRID if best > 0 else 0.0

    def dump(self, prefix: str) -> dict[str, state.Value]:
        return {f"{prefix}.base": self.base, f"{prefix}.counts": self.counts.copy(),
                f"{prefix}.open": self.open.copy()}

    def load(self, r: state.Reader) -> None:
        if r.has("counts"):
            self.base = r.integer("base")
            self.counts = r.array("counts").astype(np.float64)
            self.open = r.array("open").astype(np.float64)


def _mad_variance(counts: np.ndarray) -> float:
    """The variance of whole-number counts from their median absolute deviation.

    The MAD of whole numbers takes only a few values (for a mean of 10 a MAD of 2 reads
    0.9x the variance, one of 3 reads 2.1x), so each count is first spread over its unit
    interval by a fixed, evenly spaced offset (the golden-ratio sequence: deterministic,
    the same for the same windows), and the offsets' own variance, 1/12, is taken back
    out."""
    k = np.arange(counts.shape[0], dtype=np.float64)
    x = counts + (np.mod(k * 0.6180339887498949, 1.0) - 0.5)
    mad = float(np.median(np.abs(x - np.median(x))))
    return max((1.4826 * mad) ** 2 - 1.0 / 12.0, 0.0)


class RateSignal(Signal):
    """A 0/1 outcome watched for its rate rising (and optionally falling).

    The reference rate comes from a warm-up of at least ``warmup`` outcomes and
    ``min_events`` events (capped at ``10 * warmup`` outcomes); thresholds come from the
    exact Markov-chain ARL averaged over the rate's estimation error and, with
    ``dispersion``, over how far the rate moved from window to window in the reference
    (sessions, blocks, bad hours: a rate that wanders is priced in, not paged for).

    A rate estimated from a few hundred events forces a conservative threshold, so the
    reference keeps learning: each time the monitored window reaches ``GROWTH`` times the
    reference (up to ``MAX_REFERENCE`` outcomes) and every detector is quiet (statistic
    below a quarter of its threshold), the window joins the reference and the thresholds
    are recalibrated. Windows with evidence of a change are not absorbed.
    """

    GROWTH = 3
    MAX_REFERENCE = 500_000

    def __init__(self, name: str, fa_rate: float, warmup: int, min_events: int = 200,
                 ratio: float = 2.0, down: bool = True, floor: float = 1e-3,
                 kind: str = "behavior", dispersion: bool = True, relearn: bool = True) -> None:
        super().__init__(name, fa_rate, relearn)
        self.kind = kind
        self.warmup = warmup
        self.min_events = min_events
        self.ratio = ratio
        self.down = down
        self.floor = floor
        self.use_dispersion = dispersion
        self.p0 = math.nan
        self.cv = 0.0  # the rate's relative spread priced into the thresholds
        self._n = 0  # the reference's outcomes and events
        self._events = 0
        self._ref_windows = Windows()
        self._designs: list[tuple[int, float, bool]] = []
        self._table = np.zeros((0, 2), dtype=np.int64)  # increments: (detectors, no/event)
        self._wn = 0  # the monitored window (absorbed at a refresh)
        self._wev = 0
        self._windows = Windows()
        self._drop_held()  # the stretch before a false alarm, see _relearned
        self._warm_reset()
        self._walk = self._peak = self._returned = 0  # see _follow

    # -- warm-up (and candidate) ------------------------------------------------------------
    def _warm_reset(self) -> None:
        self._cn = 0
        self._cev = 0
        self._cwindows = Windows()

    def _warm_take(self, seg: np.ndarray) -> tuple[int, bool]:
        n = seg.shape[0]
        cap = 10 * self.warmup
        count = self._cn + np.arange(1, n + 1)
        events = self._cev + np.cumsum(seg > 0.5)
        done = (count >= self.warmup) & ((events >= self.min_events) | (count >= cap))
        k = int(done.argmax()) if n else 0
        if n and done[k]:
            return k + 1, True
        return n, False

    def _warm_add(self, seg: np.ndarray, ts: np.ndarray) -> None:
        self._cn += seg.shape[0]
        self._cev += int((seg > 0.5).sum())
        self._cwindows.add((seg > 0.5).astype(np.float64))
        if not self.dets:
            self._ewma_add(seg)

    def _fit(self) -> None:
        self._n, self._events = self._cn, self._cev
        self._ref_windows = self._cwindows
        self._wn = self._wev = 0
        self._windows = Windows()
        self._drop_held()
        self._warm_reset()
        self._calibrate()

    def _calibrate(self) -> None:
        self.p0 = self._events / max(self._n, 1)
        p = max(self.p0, self.floor)
        self.cv = self._ref_windows.dispersion(p) if self.use_dispersion else 0.0
        dirs = [True, False] if self.down else [True]
        fa = self.fa_rate / len(dirs)
        self.dets = []
        self._designs = []
        for up in dirs:
            a, unit = bernoulli_design(p, self.ratio if up else 1.0 / self.ratio)
            h = calibration.bernoulli_threshold(a, unit, p, float(max(self._events, 1)), fa, up,
                                                self.cv)
            self.dets.append(Cusum("bernoulli_cusum_up" if up else "bernoulli_cusum_down", h))
            self._designs.append((a, unit, up))
        self._table = np.array([[-1, a] if up else [1, -a] for a, _, up in self._designs],
                               dtype=np.int64)

    def warnings(self) -> list[str]:
        if not self.dets or not self.use_dispersion:
            return []
        p = max(self.p0, self.floor)
        if self._ref_windows.estimable(p):
            return []
        return [f"{self.name}: the reference's {self._n:,} outcomes ({self._events:,} events) "
                f"are too few to show how the rate varies across windows; it is priced as "
                f"binomial until the quiet history that joins the reference shows it"]

    # -- monitoring -------------------------------------------------------------------------
    def _step(self, values: np.ndarray, ts: np.ndarray) -> int:
        if self.relearning or self._n >= self.MAX_REFERENCE:
            return int(values.shape[0])
        return min(int(values.shape[0]), max(self.GROWTH * self._n - self._wn, 1))

    def _stepped(self, n: int) -> None:
        if self._n >= self.MAX_REFERENCE or self._wn < self.GROWTH * self._n:
            return
        if all(4 * d.s < d.h for d in self.dets):  # quiet: the window joins the reference
            self._n += self._wn
            self._events += self._wev
            self._ref_windows.merge(self._windows)
            self._calibrate()  # (fresh detectors at the new thresholds)
        self._wn = self._wev = 0
        self._windows = Windows()

    def _scan(self, seg: np.ndarray, ts: np.ndarray) -> list[tuple[int, int, int]]:
        return table_scan(self.dets, seg, self._table, BY_EVENT)

    def _track(self, seg: np.ndarray, ts: np.ndarray) -> None:
        self._ewma_add(seg)
        if (self.relearning and not self.persisted and seg.shape[0]
                and 0 <= self.alarm_detector < len(self._designs)):
            self._follow(seg)
        if not self.relearning:
            self._wn += seg.shape[0]
            self._wev += int((seg > 0.5).sum())
            self._windows.add((seg > 0.5).astype(np.float64))

    def _alarmed(self) -> None:
        if not self.persisted:  # a published alarm: walk on from it
            self._walk = self._peak = self._returned = 0
        # What led up to the alarm waits for the candidate's verdict (:meth:`_relearned`);
        # an alarm of a change already persisting adds nothing to it.
        if self.relearning and not self.persisted:
            self._held.merge(self._windows)
            self._hn += self._wn
            self._hev += self._wev
        self._wn = self._wev = 0
        self._windows = Windows()

    def _new_change(self, det: int, seg: np.ndarray, s: int, began: int, run: int) -> bool:
        """The same detector again: a new change only if the outcomes since its last
        alarm came back to the reference, somewhere, as convincingly as the alarm left it
        (its walk fell by a threshold from its highest point before climbing again).
        A statistic that sat at zero for a while says little at a rate the size of the
        design's: the quiet-gap rule took a persisting change for a second one."""
        if det != self.alarm_detector:
            return super()._new_change(det, seg, s, began, run)
        return self._returned >= self.dets[det].h

    def _follow(self, seg: np.ndarray) -> None:
        """Walk the last alarm's detector's increments over ``seg`` (from 0 at the alarm):
        the largest fall from its highest point is how far the outcomes came back."""
        a, _, up = self._designs[self.alarm_detector]
        inc = np.where(seg > 0.5, a, -1)
        w = self._walk + np.cumsum(inc if up else -inc)
        peak = np.maximum.accumulate(np.maximum(w, self._peak))
        self._returned = max(self._returned, int((peak - w).max()))
        self._walk, self._peak = int(w[-1]), int(peak[-1])

    def _relearned(self) -> None:
        """A candidate that showed no change (the alarm was false): the rate varies more
        than the reference knew. What led up to the alarm and the candidate join the
        reference, and the thresholds are priced again. Absorbing only quiet stretches
        would keep out the very excursions that measure how far the rate wanders (a
        reference too short to show it is priced as binomial, and would alarm again at
        the next busy session)."""
        if not self.persisted and self._n < self.MAX_REFERENCE:
            self._held.merge(self._cwindows)
            self._n += self._hn + self._cn
            self._events += self._hev + self._cev
            self._ref_windows.merge(self._held)
            self._calibrate()
        self._drop_held()
        super()._relearned()

    def _drop_held(self) -> None:
        self._hn = self._hev = 0
        self._held = Windows()

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

    # -- state ------------------------------------------------------------------------------
    def _dump(self) -> dict[str, state.Value]:
        out: dict[str, state.Value] = {
            "n": self._n, "events": self._events, "wn": self._wn, "wev": self._wev,
            "cn": self._cn, "cev": self._cev, "hn": self._hn, "hev": self._hev}
        if self.relearning:  # the walk since the alarm, see _follow
            out.update(walk=self._walk, peak=self._peak, returned=self._returned)
        for name, w in (("refw", self._ref_windows), ("win", self._windows),
                        ("cwin", self._cwindows), ("hwin", self._held)):
            out.update(w.dump(name))
        return out

    def _load(self, r: state.Reader) -> None:
        self._n = r.integer("n")
        self._events = r.integer("events")
        self._wn = r.integer("wn")
        self._wev = r.integer("wev")
        if r.has("cn"):
            self._cn, self._cev = r.integer("cn"), r.integer("cev")
        else:  # an earlier build kept the warm-up in the reference's counts
            self._cn, self._cev = self._n, self._events
        if r.has("hn"):  # (an earlier build dropped the stretch before an alarm)
            self._hn, self._hev = r.integer("hn"), r.integer("hev")
        if r.has("walk"):  # (an earlier build: the quiet-gap rule, see _new_change)
            self._walk, self._peak = r.integer("walk"), r.integer("peak")
            self._returned = r.integer("returned")
        for name, w in (("refw", self._ref_windows), ("win", self._windows),
                        ("cwin", self._cwindows), ("hwin", self._held)):
            w.load(r.sub(name))

    def _restore_reference(self, r: state.Reader) -> None:
        if r.has("cn"):
            self._calibrate()
        else:
            self._cn, self._cev = self._n, self._events
            self._fit()
