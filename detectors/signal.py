"""What every monitored signal shares: warm-up, then a bank of CUSUMs, re-baselined on alarm."""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from driftline.detectors import state
from driftline.detectors.cusum import SCALE, Cusum, scan_many, to_fixed
from driftline.detectors.types import SignalStats

_EWMA = 0.01  # smoothing of the "current" value shown in stats()
_EWMA_TAIL = 2000  # older values weigh < 0.99**2000 = 2e-9
_N = NormalDist()


@dataclass(frozen=True, slots=True)
class Alarm:
    """A detection at ``index`` of the values passed to :meth:`Signal.update`."""

    index: int
    detector: str
    baseline: float
    current: float
    severity: float


class Signal(abc.ABC):
    """A signal's warm-up, its detectors and their re-baselining."""

    kind = "behavior"

    def __init__(self, name: str, fa_rate: float) -> None:
        self.name = name
        self.fa_rate = fa_rate
        self.dets: list[Cusum] = []
        self.ewma = math.nan
        self.seen = 0

    @property
    def monitoring(self) -> bool:
        return bool(self.dets)

    def update(self, values: np.ndarray) -> list[Alarm]:
        """Feed values in stream order; return alarms (indices into ``values``)."""
        out: list[Alarm] = []
        n = values.shape[0]
        self.seen += n
        i = 0
        while i < n:
            if not self.dets:
                take, done = self._warm_take(values[i:])
                self._warm_add(values[i: i + take])
                i += take
                if done:
                    self._fit()
                continue
            due = self._until_refresh()
            seg = values[i:] if due is None else values[i: i + due]
            scans = self._scan(seg)
            hits = [(sc[0], j) for j, sc in enumerate(scans) if sc[0] >= 0]
            self._track(seg if not hits else seg[: min(hits)[0] + 1])
            if not hits:
                for d, (_, s, run) in zip(self.dets, scans, strict=True):
                    d.commit(s, run)
                i += seg.shape[0]
                if due is not None and seg.shape[0] == due:
                    self._refresh()
                continue
            idx, j = min(hits)
            _, s, run = scans[j]
            out.append(self._alarm(j, s, run, i + idx))
            self.dets = []
            self._warm_reset()
            i += idx + 1
        return out

    def _ewma_add(self, x: np.ndarray) -> None:
        if x.shape[0] == 0:
            return
        if math.isnan(self.ewma):
            self.ewma = float(x[0])
        tail = x[-_EWMA_TAIL:]
        self.ewma = float(self.ewma * (1.0 - _EWMA) ** x.shape[0]
                          + _ewma_weights(tail.shape[0]) @ tail)

    def stats(self) -> SignalStats:
        best = max(self.dets, key=Cusum.fraction, default=None)
        return SignalStats(
            kind=self.kind,
            phase="monitoring" if self.dets else "warmup",
            detector=best.name if best else "",
            statistic=best.s / self._det_scale(best) if best else 0.0,
            threshold=best.h / self._det_scale(best) if best else math.nan,
            baseline=self._baseline(),
            current=self.ewma,
        )

    def _det_scale(self, det: Cusum) -> float:
        return float(SCALE)

    # -- state ------------------------------------------------------------------
    def dump(self, prefix: str) -> dict[str, state.Value]:
        out: dict[str, state.Value] = {
            f"{prefix}.ewma": self.ewma, f"{prefix}.seen": self.seen,
            f"{prefix}.ndet": len(self.dets),
        }
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
        self._load(r)
        ndet = r.integer("ndet")
        if ndet:
            self._fit()
            if len(self.dets) != ndet:
                raise ValueError(f"snapshot of {self.name} has {ndet} detectors, "
                                 f"this build makes {len(self.dets)}")
            for k, d in enumerate(self.dets):
                d.s = r.integer(f"det.{k}.s")
                d.run = r.integer(f"det.{k}.run")
                d.h = r.integer(f"det.{k}.h")

    # -- per signal ---------------------------------------------------------------
    def _scan(self, seg: np.ndarray) -> list[tuple[int, int, int]]:
        """Each detector's (first alarm index or -1, s, run) over ``seg``: at least the
        bank's first alarm, as :func:`scan_many` reports it (the bank is dropped there)."""
        return scan_many(self.dets, self._increments(seg))

    def _until_refresh(self) -> int | None:
        """Values until the reference may absorb quiet monitored data (None: never)."""
        return None

    def _refresh(self) -> None:
        """Grow the reference with the quiet window just monitored (see RateSignal)."""
        return None

    @abc.abstractmethod
    def _warm_take(self, seg: np.ndarray) -> tuple[int, bool]:
        """How many of ``seg`` the warm-up consumes, and whether it then completes."""

    @abc.abstractmethod
    def _warm_add(self, seg: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _warm_reset(self) -> None: ...

    @abc.abstractmethod
    def _fit(self) -> None:
        """Learn the reference from the warm-up and build the detectors."""

    @abc.abstractmethod
    def _increments(self, seg: np.ndarray) -> list[np.ndarray] | np.ndarray:
        """Each detector's increments for ``seg``: a list, or a (detectors, n) array."""

    @abc.abstractmethod
    def _track(self, seg: np.ndarray) -> None:
        """Update the displayed current value with monitored values."""

    @abc.abstractmethod
    def _alarm(self, det: int, s: int, run: int, index: int) -> Alarm: ...

    @abc.abstractmethod
    def _baseline(self) -> float: ...

    @abc.abstractmethod
    def _dump(self) -> dict[str, state.Value]: ...

    @abc.abstractmethod
    def _load(self, r: state.Reader) -> None: ...


# Log-likelihood ratios of a standard normal score z, as (c2, c1, c0): c2 z^2 + c1 z + c0.
def mean_shape(shift: float) -> tuple[float, float, float]:
    return (0.0, shift, -shift * shift / 2.0)


def spread_shape(ratio: float) -> tuple[float, float, float]:
    return ((1.0 - 1.0 / ratio**2) / 2.0, 0.0, -math.log(ratio))


@functools.lru_cache(maxsize=_EWMA_TAIL + 1)
def _ewma_weights(n: int) -> np.ndarray:
    """Weights of the last ``n`` values in an EWMA update, oldest first (read-only)."""
    w = _EWMA * (1.0 - _EWMA) ** np.arange(n - 1, -1, -1)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=64)
def _half_rank_scores(n: int) -> np.ndarray:
    """Normal scores of the 2n + 1 half ranks of a reference of n values (read-only)."""
    u = (np.arange(2 * n + 1) / 2.0 + 0.5) / (n + 1)
    score = np.array([_N.inv_cdf(x) for x in u.tolist()])
    score.flags.writeable = False
    return score


class NormalScores:
    """Map values to standard normal scores through a reference's empirical CDF.

    Rank-based, so any shape (lognormal latency, skewed counts) becomes N(0, 1)
    under the reference, and monotone transforms (log) are unnecessary. Ties get
    mid-ranks; scores are re-standardised on the reference (leave-one-out).
    """

    def __init__(self, ref: np.ndarray) -> None:
        self.ref = np.sort(np.asarray(ref, dtype=np.float64))
        n = self.ref.shape[0]
        score = _half_rank_scores(n)
        lo = np.searchsorted(self.ref, self.ref, "left")
        hi = np.searchsorted(self.ref, self.ref, "right")
        loo = score[lo + hi - 1]
        self.m = float(loo.mean())
        self.sd = float(loo.std()) or 1.0
        self.z = (score - self.m) / self.sd
        self.ties = bool((hi - lo > 1).any())
        self.ext = np.append(self.ref, np.inf)  # (sorted, +inf appended)
        self._median: float | None = None

    def positions(self, x: np.ndarray) -> np.ndarray:
        """``#(ref < x) + #(ref <= x)``: twice the mid-rank of each value."""
        lo = np.searchsorted(self.ref, x, "left")
        if self.ties:
            return lo + np.searchsorted(self.ref, x, "right")
        # Distinct reference values: at most one equals x.
        return 2 * lo + (self.ext[lo] == x)

    def table(self, shape: tuple[float, float, float]) -> np.ndarray:
        c2, c1, c0 = shape
        return to_fixed(c2 * self.z**2 + c1 * self.z + c0)

    def value_at(self, z: float) -> float:
        """The reference quantile at standardised score ``z`` (native units)."""
        u = _N.cdf(z * self.sd + self.m)
        return float(np.quantile(self.ref, min(max(u, 0.0), 1.0)))

    def median(self) -> float:
        if self._median is None:  # (the reference is sorted: np.median without the sort)
            n = self.ref.shape[0]
            self._median = (float(np.median(self.ref)) if n == 0
                            else float((self.ref[(n - 1) // 2] + self.ref[n // 2]) / 2.0))
        return self._median

    def spread(self) -> float:
        """Robust standard deviation (IQR / 1.349) in native units."""
        q1, q3 = np.quantile(self.ref, [0.25, 0.75])
        return float(q3 - q1) / 1.349


def mean_alarm(scores: NormalScores, shift: float, sign: float, s: int, run: int
               ) -> tuple[float, float, float]:
    """(baseline, current, severity) of a mean CUSUM alarm over its run."""
    zbar = sign * ((s / SCALE) / max(run, 1) + shift * shift / 2.0) / shift
    return scores.median(), scores.value_at(zbar), abs(zbar)


def spread_alarm(scores: NormalScores, shape: tuple[float, float, float], s: int, run: int
                 ) -> tuple[float, float, float]:
    """(baseline, current, severity) of a spread CUSUM alarm over its run."""
    c2, _, c0 = shape
    z2 = ((s / SCALE) / max(run, 1) - c0) / c2
    ratio = math.sqrt(max(z2, 0.0))
    base = scores.spread()
    return base, base * ratio, abs(ratio - 1.0)
