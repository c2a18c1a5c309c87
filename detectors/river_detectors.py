"""river's ADWIN and Page-Hinkley as a signal's detector, calibrated to the same budget.

Either watches a scalar signal's scores exactly as its CUSUMs would (normal scores against
the reference, prewhitened, with the seasonal profile taken out: the whole of
:class:`~driftline.detectors.scalar.ScalarSignal` but the bank), so the choice of detector
is the only difference. Their thresholds come from the false-alarm budget, not library
defaults:

* Page-Hinkley (``alpha`` 1, both directions) on standardised scores is a two-sided CUSUM
  of ``z - mean - delta``: its ``threshold`` is the Markov chain's for that increment, at
  half the budget a direction, ``delta`` half the design shift.
* ADWIN's ``delta`` is a confidence, not a rate: its false alarms per value on independent
  standard normal scores were measured (``bench/calibration.py --adwin``) and
  :data:`ADWIN_FALSE_ALARMS` interpolates them log-log.

ADWIN's window adapts its length to the data, which makes it quicker on a slow ramp than a
CUSUM designed for a step; Page-Hinkley is the CUSUM's twin, with a running mean in place
of the reference's. Configure per signal with ``MonitorConfig(detectors="latency=adwin")``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from driftline.detectors import calibration, state
from driftline.detectors.cusum import Cusum
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.signal import Alarm
from river import drift, stats

KINDS = ("cusum", "adwin", "page_hinkley")

# ADWIN(delta) on independent N(0, 1) values: false alarms per value, measured
# (bench/calibration.py --adwin: 4 x 2,500,000 values a delta; clock 32, defaults otherwise).
ADWIN_FALSE_ALARMS = ((0.002, 6.0e-07), (0.01, 3.4e-06), (0.05, 1.95e-05), (0.2, 1.105e-04),
                      (0.5, 3.586e-04), (0.9, 8.186e-04))


def adwin_delta(fa_rate: float) -> float:
    """The ADWIN delta whose false alarms per value meet ``fa_rate``: :data:`ADWIN_FALSE_ALARMS`
    interpolated log-log, extrapolated along its end segments (false alarms grow about in
    proportion to delta)."""
    x = np.log([d for d, _ in ADWIN_FALSE_ALARMS])
    y = np.log([f for _, f in ADWIN_FALSE_ALARMS])
    v = math.log(fa_rate)
    k = 0 if v < y[1] else len(y) - 2 if v > y[-2] else int(np.searchsorted(y, v)) - 1
    slope = (x[k + 1] - x[k]) / (y[k + 1] - y[k])
    return min(math.exp(x[k] + (v - y[k]) * slope), 0.99)


def page_hinkley_threshold(fa_rate: float, delta: float, n_ref: int) -> float:
    """Page-Hinkley's threshold on standardised scores for ``fa_rate`` false alarms per
    value in both directions (the chain of ``z - delta``, half the rate a direction)."""
    return calibration.normal_cusum_threshold((0.0, 1.0, -delta), fa_rate / 2.0, n_ref)


class RiverSignal(ScalarSignal):
    """A scalar signal whose bank is one river detector (``"adwin"`` or
    ``"page_hinkley"``) on the scores its CUSUMs would see."""

    def __init__(self, detector: str, *args: object, **kwargs: object) -> None:
        if detector not in ("adwin", "page_hinkley"):
            raise ValueError(f"unknown river detector {detector!r}")
        self.detector = detector
        self._river: drift.ADWIN | drift.PageHinkley | None = None
        self._since = 0  # values since the detector last started afresh
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    # -- the bank -------------------------------------------------------------------------
    def _install(self, raw: np.ndarray, phases: np.ndarray) -> None:
        super()._install(raw, phases)
        assert self.chain is not None
        self._river = self._make()
        self._since = 0
        self.dets = [Cusum(self.detector, 1)]  # (the bank's one member; s stays 0)

    def _make(self) -> drift.ADWIN | drift.PageHinkley:
        assert self.chain is not None
        if self.detector == "adwin":
            return drift.ADWIN(delta=adwin_delta(self.fa_rate))
        delta = self.shift / 2.0
        return drift.PageHinkley(min_instances=30, delta=delta, alpha=1.0, mode="both",
                                 threshold=page_hinkley_threshold(self.fa_rate, delta,
                                                                  self.chain.n_ref))

    def _scan(self, seg: np.ndarray, ts: np.ndarray) -> list[tuple[int, int, int]]:
        chain, det = self.chain, self._river
        assert chain is not None and det is not None
        if self.season is not None:
            self.season.begin(ts)
            if self.season.version != self._profile_version:
                chain.rerank(self._reference_adjusted())
                self._profile_version = self.season.version
        chain.scan_values(self._adjusted(seg, ts))
        scores = chain.scores(seg.shape[0])
        for i, v in enumerate(scores.tolist()):
            det.update(v)
            if det.drift_detected:
                run = self._since + i + 1
                self._since = 0
                self._river = self._make()
                return [(i, 0, run)]
        self._since += seg.shape[0]
        return [(-1, 0, 0)]

    def _track(self, seg: np.ndarray, ts: np.ndarray) -> None:
        assert self.chain is not None
        self._ewma_add(seg)
        self.chain.advance(seg.shape[0])
        if self.season is not None:
            self.season.take(seg)

    def _step(self, values: np.ndarray, ts: np.ndarray) -> int:
        return int(values.shape[0]) if self.season is None else self.season.until_next_bin(ts)

    def _stepped(self, n: int) -> None:
        return None

    def _alarm(self, det: int, s: int, run: int, index: int) -> Alarm:
        assert self.chain is not None
        ref = self.chain.marginal
        spread = ref.spread() or 1.0
        return Alarm(index, self.detector, ref.median(), self.ewma,
                     abs(self.ewma - ref.median()) / spread)

    def _det_scale(self, det: Cusum) -> float:
        return 1.0

    # -- state ------------------------------------------------------------------------------
    def _dump(self) -> dict[str, state.Value]:
        out = super()._dump()
        out["since"] = self._since
        det = self._river
        if isinstance(det, drift.ADWIN):
            reduced: Any = det._helper.__reduce_ex__(4)  # (Rust state as serde bytes)
            out["adwin"] = np.frombuffer(bytes(reduced[2]), dtype=np.uint8).copy()
        elif isinstance(det, drift.PageHinkley):
            out.update({"ph.n": float(det._x_mean.n), "ph.mean": float(det._x_mean._mean),
                        "ph.inc": float(det._sum_increase), "ph.dec": float(det._sum_decrease),
                        "ph.min": float(det._min_increase),  # (river starts the extremes
                        "ph.max": float(det._max_decrease)})  # as ints)
        return out

    def _restore_reference(self, r: state.Reader) -> None:
        super()._restore_reference(r)
        self._since = r.integer("since")
        det = self._river
        if isinstance(det, drift.ADWIN) and r.has("adwin"):
            cls = type(det._helper)
            helper = cls(det.delta, det.clock, det.max_buckets, det.min_window_length,
                         det.grace_period)
            helper.__setstate__(r.array("adwin").tobytes())
            det._helper = helper
        elif isinstance(det, drift.PageHinkley) and r.has("ph.n"):
            mean = stats.Mean()
            mean.n, mean._mean = r.real("ph.n"), r.real("ph.mean")
            det._x_mean = mean
            det._sum_increase, det._sum_decrease = r.real("ph.inc"), r.real("ph.dec")
            det._min_increase = r.real("ph.min")
            det._max_decrease = r.real("ph.max")  # type: ignore[assignment]
