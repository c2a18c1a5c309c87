"""What every monitored signal shares: a warm-up, a bank of CUSUMs, and what an alarm does.

An alarm does not leave the signal unwatched. The reference that raised it stays in force,
its detectors restart from zero, and a candidate reference is learned from the values that
follow (as long as a warm-up). Meanwhile:

* an alarm whose excursion began well after the previous alarm (the statistic stayed
  around zero for longer than the new excursion lasted, and at least :data:`MIN_QUIET`
  values) is a new change, published, and the candidate starts again from there (a
  rate asks more when the same detector alarms again, see ``RateSignal._new_change``:
  that the outcomes since its alarm came back to the reference);
* one that climbed straight on from the previous alarm (published or not) is the same
  change persisting: not published again, and it marks the change as real. From then on
  the reference is known to be stale, and nothing it raises is published until the
  candidate replaces it (its other detectors see the same change from another angle).

When the candidate is complete it replaces the reference if the change persisted; if the
reference's detectors stayed quiet all along, the alarm was a false one or a blip, and
the reference stays (with everything it has learned). A false alarm says the reference
saw too little of how the signal varies: a rate's reference takes in the stretch before
the alarm and the candidate, an embedding's the candidate's distances, a scalar's
dependence history both stretches' scores, and their thresholds are priced again.
A benign alarm therefore neither
blinds the signal for a warm-up nor lets a real shift right after it slip into a new
reference.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from driftline.detectors import state
from driftline.detectors.cusum import SCALE, Cusum
from driftline.detectors.types import SignalStats

EWMA_WEIGHT = 0.01  # smoothing of the "current" value shown in stats()
_EWMA_TAIL = 2000  # older values weigh < 0.99**2000 = 2e-9
MIN_QUIET = 50  # values at zero between two alarms before the second is a new change


@dataclass(frozen=True, slots=True)
class Alarm:
    """A detection at ``index`` of the values passed to :meth:`Signal.update`."""

    index: int
    detector: str
    baseline: float
    current: float
    severity: float
    run: int = 0  # values in the excursion that raised it (set by ``Signal.update``)
    explanation: dict[str, Any] | None = None  # what the signal can say about it


class Signal(abc.ABC):
    """A signal's warm-up, its detectors and their re-baselining (see the module)."""

    kind = "behavior"

    def __init__(self, name: str, fa_rate: float, relearn: bool = True) -> None:
        self.name = name
        self.fa_rate = fa_rate
        # False: an alarm drops the reference and the signal warms up afresh, unwatched (an
        # independent-draw detector's habit, kept for comparison).
        self.relearn = relearn
        self.dets: list[Cusum] = []
        self.ewma = math.nan
        self.seen = 0
        self.relearning = False  # a candidate reference is being learned
        self.persisted = False  # the alarmed change went on while it was
        self.last_alarm = -1  # index (in values seen) of the last alarm, published or not
        self.alarm_detector = -1  # the detector of the last published alarm
        self.suppressed = 0  # alarms of a persisting change, not published again
        self.fits = 0  # references learned (warm-ups and adopted candidates), for warnings

    @property
    def monitoring(self) -> bool:
        return bool(self.dets)

    @property
    def phase(self) -> str:
        if not self.dets:
            return "warmup"
        return "relearning" if self.relearning else "monitoring"

    def update(self, values: np.ndarray, ts: np.ndarray) -> list[Alarm]:
        """Feed values (and their timestamps) in stream order; return alarms (indices into
        ``values``)."""
        out: list[Alarm] = []
        n = values.shape[0]
        base = self.seen
        self.seen += n
        i = 0
        while i < n:
            if not self.dets:  # no reference yet: the warm-up
                take, done = self._warm_take(values[i:])
                self._warm_add(values[i: i + take], ts[i: i + take])
                i += take
                if done:
                    self._fit()
                    self.fits += 1
                continue
            step = self._step(values[i:], ts[i:])
            done = False
            if self.relearning:
                step, done = self._warm_take(values[i: i + step])
            seg, tseg = values[i: i + step], ts[i: i + step]
            scans = self._scan(seg, tseg)
            hits = [(sc[0], j) for j, sc in enumerate(scans) if sc[0] >= 0]
            if not hits:
                for d, (_, s, run) in zip(self.dets, scans, strict=True):
                    d.commit(s, run)
                self._track(seg, tseg)
                i += step
                if self.relearning:
                    self._warm_add(seg, tseg)
                    if done:
                        self._relearned()
                else:
                    self._stepped(step)
                continue
            idx, j = min(hits)
            _, s, run = scans[j]
            self._track(seg[: idx + 1], tseg[: idx + 1])
            at = base + i + idx
            began = at - run + 1
            if not self.relearn:
                out.append(dataclasses.replace(self._alarm(j, s, run, i + idx), run=run))
                self.last_alarm = at
                self.dets = []
                self._warm_reset()
                self._alarmed()
                i += idx + 1
                continue
            new = not self.relearning or (not self.persisted and
                                          self._new_change(j, seg[: idx + 1], s, began, run))
            self.last_alarm = at
            if new:
                self.alarm_detector = j
                out.append(dataclasses.replace(self._alarm(j, s, run, i + idx), run=run))
                self._warm_reset()  # a candidate from the values after the alarm
                self.relearning = True
                self.persisted = False
            else:
                self.suppressed += 1
                self.persisted = True
                self._warm_add(seg[: idx + 1], tseg[: idx + 1])
                if done and idx + 1 == step:
                    self._relearned()
            for d in self.dets:
                d.reset()
            self._alarmed()
            i += idx + 1
        return out

    def _new_change(self, det: int, seg: np.ndarray, s: int, began: int, run: int) -> bool:
        """An alarm while the candidate is learned, before the change was seen to persist:
        whether it is a new change (published) rather than the alarmed one going on.
        ``seg``: the values of this step up to the alarm (the candidate has the ones
        before). By default: the excursion began well after the previous alarm."""
        return began - self.last_alarm > max(MIN_QUIET, run)

    def _alarmed(self) -> None:
        """The bank just alarmed (published or not) and was reset."""
        return None

    def _relearned(self) -> None:
        """The candidate is complete: it replaces the reference if the change persisted."""
        self.relearning = False
        if self.persisted:
            self._fit()
            self.fits += 1
        else:
            self._warm_reset()
        self.persisted = False

    def _ewma_add(self, x: np.ndarray) -> None:
        if x.shape[0] == 0:
            return
        if math.isnan(self.ewma):
            self.ewma = float(x[0])
        tail = x[-_EWMA_TAIL:]
        self.ewma = float(self.ewma * (1.0 - EWMA_WEIGHT) ** x.shape[0]
                          + _ewma_weights(tail.shape[0]) @ tail)

    def stats(self) -> SignalStats:
        best = max(self.dets, key=Cusum.fraction, default=None)
        return SignalStats(
            kind=self.kind,
            phase=self.phase,
            detector=best.name if best else "",
            statistic=best.s / self._det_scale(best) if best else 0.0,
            threshold=best.h / self._det_scale(best) if best else math.nan,
            baseline=self._baseline(),
            current=self.ewma,
        )

    def warnings(self) -> list[str]:
        """What the reference in force could not estimate well (empty: nothing)."""
        return []

    def _det_scale(self, det: Cusum) -> float:
        return float(SCALE)

    # -- state ------------------------------------------------------------------------------
    def dump(self, prefix: str) -> dict[str, state.Value]:
        out: dict[str, state.Value] = {
            f"{prefix}.ewma": self.ewma, f"{prefix}.seen": self.seen,
            f"{prefix}.ndet": len(self.dets), f"{prefix}.relearning": int(self.relearning),
            f"{prefix}.persisted": int(self.persisted), f"{prefix}.last_alarm": self.last_alarm,
            f"{prefix}.suppressed": self.suppressed,
        }
        if self.relearning:  # (only a candidate's alarms ask which detector alarmed)
            out[f"{prefix}.alarm_detector"] = self.alarm_detector
        for k, d in enumerate(self.dets):
            out[f"{prefix}.det.{k}.s"] = d.s
            out[f"{prefix}.det.{k}.run"] = d.run
            out[f"{prefix}.det.{k}.h"] = d.h
        for k2, v in self._dump().items():
            out[f"{prefix}.{k2}"] = v
        return out

    def load(self, r: state.Reader) -> None:
        self.ewma = r.real("ewma")
        self.seen = r.integer("seen")
        if r.has("relearning"):
            self.relearning = bool(r.integer("relearning"))
            self.persisted = bool(r.integer("persisted"))
            self.last_alarm = r.integer("last_alarm")
            self.suppressed = r.integer("suppressed")
        if r.has("alarm_detector"):  # (an earlier build: the gap rule alone)
            self.alarm_detector = r.integer("alarm_detector")
        self._load(r)
        ndet = r.integer("ndet")
        if ndet:
            self._restore_reference(r)
            if len(self.dets) != ndet:
                raise ValueError(f"snapshot of {self.name} has {ndet} detectors, "
                                 f"this build makes {len(self.dets)}")
            for k, d in enumerate(self.dets):
                d.s = r.integer(f"det.{k}.s")
                d.run = r.integer(f"det.{k}.run")
                d.h = r.integer(f"det.{k}.h")

    def _restore_reference(self, r: state.Reader) -> None:
        """Rebuild the reference in force from the loaded fields (default: fit again)."""
        self._fit()

    # -- per signal -------------------------------------------------------------------------
    def _step(self, values: np.ndarray, ts: np.ndarray) -> int:
        """How many of ``values`` the next scan may take (a refresh or a seasonal bin ahead
        cuts it short)."""
        return int(values.shape[0])

    def _stepped(self, n: int) -> None:
        """``n`` quiet values were taken in outside a relearning (see RateSignal)."""
        return None

    @abc.abstractmethod
    def _warm_take(self, seg: np.ndarray) -> tuple[int, bool]:
        """How many of ``seg`` the warm-up (or candidate) takes, and whether it completes."""

    @abc.abstractmethod
    def _warm_add(self, seg: np.ndarray, ts: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _warm_reset(self) -> None:
        """Empty the warm-up (candidate) buffer; the reference in force stays."""

    @abc.abstractmethod
    def _fit(self) -> None:
        """Learn the reference from the warm-up buffer and build the detectors."""

    @abc.abstractmethod
    def _scan(self, seg: np.ndarray, ts: np.ndarray) -> list[tuple[int, int, int]]:
        """Each detector's (first alarm index or -1, s, run) over ``seg``: at least the
        bank's first alarm (the bank is reset there)."""

    @abc.abstractmethod
    def _track(self, seg: np.ndarray, ts: np.ndarray) -> None:
        """Values taken in by the bank (up to an alarm): the current value, dependence
        history, seasonal profile."""

    @abc.abstractmethod
    def _alarm(self, det: int, s: int, run: int, index: int) -> Alarm: ...

    @abc.abstractmethod
    def _baseline(self) -> float: ...

    @abc.abstractmethod
    def _dump(self) -> dict[str, state.Value]: ...

    @abc.abstractmethod
    def _load(self, r: state.Reader) -> None: ...


@functools.lru_cache(maxsize=_EWMA_TAIL + 1)
def _ewma_weights(n: int) -> np.ndarray:
    """Weights of the last ``n`` values in an EWMA update, oldest first (read-only)."""
    w = EWMA_WEIGHT * (1.0 - EWMA_WEIGHT) ** np.arange(n - 1, -1, -1)
    w.flags.writeable = False
    return w
