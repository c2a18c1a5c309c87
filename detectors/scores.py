"""Normal scores against a reference, and the CUSUM increments they give.

A rank against the reference sample turns any shape (lognormal latency, skewed counts, a
distance in [0, 2]) into a standard normal score under the reference, so one calibration
serves every signal. :class:`ScoreChain` adds what production traffic needs on top: a
seasonal adjustment, an autoregression whose residuals the detectors watch (themselves
ranked against the warm-up's residuals), and the long-run variance each detector's
increments still carry.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
from driftline.detectors import calibration, dependence
from driftline.detectors.cusum import SCALE, to_fixed
from driftline.detectors.kernels import BY_RANK, BY_RANK_TIES

_N = NormalDist()

# Log-likelihood ratios of a standard normal score z, as (c2, c1, c0): c2 z^2 + c1 z + c0.
def mean_shape(shift: float) -> tuple[float, float, float]:
    return (0.0, shift, -shift * shift / 2.0)


def spread_shape(ratio: float) -> tuple[float, float, float]:
    return ((1.0 - 1.0 / ratio**2) / 2.0, 0.0, -math.log(ratio))


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

    def loo_scores(self, values: np.ndarray) -> np.ndarray:
        """Standardised scores of reference values themselves (each leaving itself out), in
        the order given: what the detectors would have seen had they watched the warm-up."""
        lo = np.searchsorted(self.ref, values, "left")
        hi = np.searchsorted(self.ref, values, "right")
        return self.z[lo + hi - 1]

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


def mean_alarm(chain: ScoreChain, shift: float, sign: float, s: int, run: int
               ) -> tuple[float, float, float]:
    """(baseline, current, severity) of a mean CUSUM alarm over its run: the reference's
    median, the value at the level the run implies, and that level in reference SDs."""
    zbar = sign * ((s / SCALE) / max(run, 1) + shift * shift / 2.0) / shift
    level = chain.level_shift(zbar)
    return chain.marginal.median(), chain.marginal.value_at(level), abs(level)


def spread_alarm(chain: ScoreChain, shape: tuple[float, float, float], s: int, run: int
                 ) -> tuple[float, float, float]:
    """(baseline, current, severity) of a spread CUSUM alarm over its run."""
    c2, _, c0 = shape
    z2 = ((s / SCALE) / max(run, 1) - c0) / c2
    ratio = math.sqrt(max(z2, 0.0))
    base = chain.marginal.spread()
    return base, base * ratio, abs(ratio - 1.0)


RESIDUAL_BURN_IN = 20  # residuals at the start of a reference, before the filter settles
LRV_GRID = 1.1  # long-run variance factors are rounded up to a power of this: thresholds
# depend on the factor, and rounding keeps them few (each is computed once per process)


def grid_up(factor: float) -> float:
    if factor <= 1.0:
        return 1.0
    return float(LRV_GRID ** math.ceil(math.log(factor) / math.log(LRV_GRID) - 1e-9))


class ScoreChain:
    """A reference turned into what a CUSUM bank scans: values, their normal scores, an
    autoregression of those, and the normal scores of its residuals.

    Without dependence (``max_order`` 0 or an order-0 fit) the bank scans values against the
    reference directly, as an independent-draw calibration would. With it, a value's score
    ``z_t`` becomes the residual ``e_t = z_t - sum(phi[k] z_{t-1-k})``, ranked against the
    warm-up's own residuals: a level shift of ``d`` shows as ``d (1 - sum(phi))`` per value,
    while the wandering of load-driven latency is gone. Each detector's threshold then comes
    from the Markov chain at the long-run variance its increments showed over the warm-up
    (:func:`calibration.inflate`), averaged over the warm-up's estimation error.
    """

    def __init__(self, values: np.ndarray, shapes: list[tuple[float, float, float]],
                 fa_rate: float, max_order: int, lrv: bool) -> None:
        self.shapes = shapes
        self.max_order = max_order
        self.ar = dependence.ARFit((), int(values.shape[0]))
        self.state = np.zeros(0)
        self.fa_rate = fa_rate
        r = self._rank(values, fit=True)
        self.n_ref = int(r.shape[0])
        # Each detector's long-run variance factor as the reference showed it; a longer
        # history can only raise it (:meth:`recalibrate`).
        self._short = [dependence.lrv_factor(c2 * r * r + c1 * r + c0) if lrv else 1.0
                       for c2, c1, c0 in shapes]
        self.lrv = [grid_up(f) for f in self._short]
        self.h = [self._threshold(s, f) for s, f in zip(shapes, self.lrv, strict=True)]

    def _threshold(self, shape: tuple[float, float, float], factor: float) -> float:
        return calibration.normal_cusum_threshold(calibration.inflate(shape, factor),
                                                  self.fa_rate, self.n_ref)

    def recalibrate(self, mean_factor: float, spread_factor: float) -> list[float]:
        """Thresholds for long-run variance factors measured over a longer history (of the
        scanned scores, for mean detectors; of their squares, for spread ones): each
        detector takes the larger of that and its reference's own."""
        for j, (c2, c1, c0) in enumerate(self.shapes):
            f = grid_up(max(self._short[j], spread_factor if c2 else mean_factor))
            if f != self.lrv[j]:
                self.lrv[j] = f
                self.h[j] = self._threshold((c2, c1, c0), f)
        return self.h

    def _rank(self, values: np.ndarray, fit: bool) -> np.ndarray:
        """Rank the reference (and with ``fit``, fit its dependence); the scanned scores of
        the reference itself."""
        self.marginal = NormalScores(values)
        z = self.marginal.loo_scores(values)
        if fit:
            self.ar = dependence.fit_ar(z, self.max_order)
        if self.ar.state_size:
            # The first residuals start from a zero state: leave them out of the reference.
            e, after = dependence.residuals(self.ar, z, np.zeros(self.ar.state_size))
            if fit:
                self.state = after
            e = e[min(RESIDUAL_BURN_IN, e.shape[0] // 10):]
            self.resid: NormalScores | None = NormalScores(e)
            r = self.resid.loo_scores(e)
        else:
            self.resid = None
            r = z
        self._z = np.zeros(0)
        self._x = np.zeros(0)
        scan = self.scanned
        self.tables = np.stack([scan.table(s) for s in self.shapes])
        return r

    def rerank(self, values: np.ndarray) -> None:
        """The same reference seen through a changed adjustment (a seasonal profile that
        learned more): ranks and tables again; the fit, its state and the thresholds stay."""
        self._rank(values, fit=False)

    @property
    def scanned(self) -> NormalScores:
        """The reference the bank's values are ranked against."""
        return self.resid if self.resid is not None else self.marginal

    @property
    def mode(self) -> int:
        return BY_RANK_TIES if self.scanned.ties else BY_RANK

    def scan_values(self, x: np.ndarray) -> np.ndarray:
        """What the bank scans for values ``x``: themselves, or their residuals."""
        if self.resid is None:
            self._x = x
            return x
        m = self.marginal
        self._z = m.z[m.positions(x)]
        e, self._after = dependence.residuals(self.ar, self._z, self.state)
        self._scanned = x.shape[0]
        self._x = e
        return e

    def scores(self, k: int) -> np.ndarray:
        """The scanned scores of the first ``k`` values of the last :meth:`scan_values`."""
        s = self.scanned
        return s.z[s.positions(self._x[:k])]

    def advance(self, k: int) -> None:
        """The first ``k`` values of the last :meth:`scan_values` were taken in."""
        if self.resid is None or not k:
            return
        if k == self._scanned:
            self.state = self._after
        else:
            _, self.state = dependence.residuals(self.ar, self._z[:k], self.state)

    def level_shift(self, zbar: float) -> float:
        """The shift of the values' score that a mean ``zbar`` of the scanned scores means."""
        if self.resid is None:
            return zbar
        return zbar * math.sqrt(self.ar.innovation) / max(self.ar.gain, 1e-3)
