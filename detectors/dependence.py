"""What a warm-up can tell about dependence: a linear time-series fit, long-run variance,
dispersion.

A CUSUM calibrated for independent draws fires far too often on production traffic:
latency follows load (one slow minute makes the next one slow), a prompt-template mix
persists, refusals and errors come in sessions. Three estimates, each from the reference
itself, let the detectors price that in:

* :func:`fit_ar` — an autoregression (or an ARMA(1, 1)) of the standardised values, order
  by BIC: the detectors watch its residuals, which are close to independent.
* :func:`lrv_factor` — what is left: the long-run variance of a detector's increments over
  their variance, from batch means at several sizes (volatility clustering, a level that
  wanders, what a low-order fit misses).
* :func:`rate_dispersion` — how far a rate moves around its mean from window to window,
  beyond what binomial sampling explains.

Each estimate is shrunk towards "independent" by its own standard error, so that
independent traffic keeps nearly all of the detectors' sensitivity (an estimate of 1.2 from
20 batches is mostly noise, not dependence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.signal import lfilter

SHRINK = 1.0  # standard errors an estimate must clear to count
MAX_THETA = 0.95  # an ARMA(1, 1) closer to non-invertible than this is not used
BATCH_SIZES = (10, 25, 50, 100, 200, 500)  # batch means for the long-run variance


@dataclass(frozen=True, slots=True)
class ARFit:
    """``z_t = sum(phi[k] z_{t-1-k}) + e_t + theta e_{t-1}``: an autoregression, with one
    moving-average term when that fits better (a level that wanders under noise: a
    prompt-template mix that persists, an hourly series read every minute).
    ``innovation`` is the variance of ``e`` over that of ``z``; ``n_eff`` the effective
    sample size of the mean of ``z`` under the fit (``n`` for independent values)."""

    phi: tuple[float, ...]
    n: int
    innovation: float = 1.0
    theta: float = 0.0

    @property
    def order(self) -> int:
        return len(self.phi)

    @property
    def gain(self) -> float:
        """How much of a level shift of ``z`` each residual carries, once settled."""
        return (1.0 - sum(self.phi)) / (1.0 + self.theta)

    @property
    def n_eff(self) -> float:
        if not self.phi:
            return float(self.n)
        g = self.gain
        return self.n * g * g / self.innovation

    @property
    def state_size(self) -> int:
        """Values of filter state the residuals carry from one batch to the next."""
        return max(len(self.phi), 1 if self.theta else 0)

    def filter(self) -> tuple[np.ndarray, np.ndarray]:
        """(numerator, denominator) of the filter from ``z`` to ``e``, both padded to the
        state size plus one."""
        k = self.state_size + 1
        b = np.zeros(k)
        b[0] = 1.0
        b[1: 1 + len(self.phi)] = [-p for p in self.phi]
        a = np.zeros(k)
        a[0] = 1.0
        if self.theta:
            a[1] = self.theta
        return b, a


def _bic(n: int, v: float, k: int) -> float:
    return n * math.log(max(v, 1e-300)) + k * math.log(n)


def fit_ar(z: np.ndarray, max_order: int) -> ARFit:
    """The better by BIC of Yule-Walker autoregressions of order 0..``max_order``
    (Levinson-Durbin, stopping at a non-stationary step) and an ARMA(1, 1) fitted by least
    squares from a Hannan-Rissanen start; only fits whose residuals carry at most the
    values' own share of a level shift (``0 < gain <= 1``) are considered."""
    n = int(z.shape[0])
    if max_order <= 0 or n < 10 * (max_order + 1):
        return ARFit((), n)
    x = z - z.mean()
    c0 = float(x @ x) / n
    if c0 <= 0.0:
        return ARFit((), n)
    r = np.array([c0] + [float(x[: n - k] @ x[k:]) / n for k in range(1, max_order + 1)])
    best_bic, best = _bic(n, c0, 0), ARFit((), n)
    phi = np.zeros(0)
    v = c0
    for k in range(1, max_order + 1):
        lam = (r[k] - float(phi @ r[1:k][::-1])) / v
        if not abs(lam) < 1.0:  # (numerically non-stationary)
            break
        phi = np.append(phi - lam * phi[::-1], lam)
        v *= 1.0 - lam * lam
        bic = _bic(n, v, k)
        fit = ARFit(tuple(float(p) for p in phi), n, v / c0)
        if bic < best_bic and 0.0 < fit.gain <= 1.0:
            best_bic, best = bic, fit
    arma = _fit_arma11(x, c0)
    if arma is not None and _bic(n, arma.innovation * c0, 2) < best_bic:
        return arma
    return best


def _fit_arma11(x: np.ndarray, c0: float) -> ARFit | None:
    n = x.shape[0]
    burn = 20

    def sse(params: np.ndarray) -> float:
        ph, th = float(params[0]), float(params[1])
        if not (abs(ph) < 0.999 and abs(th) < 0.999):
            return math.inf
        e = lfilter([1.0, -ph], [1.0, th], x)
        return float(e[burn:] @ e[burn:])

    # Hannan-Rissanen: a long autoregression's residuals stand in for the innovations.
    m = 20
    lagged = np.column_stack([x[m - k - 1: n - k - 1] for k in range(m)])
    coef, *_ = np.linalg.lstsq(lagged, x[m:], rcond=None)
    eh = np.zeros(n)
    eh[m:] = x[m:] - lagged @ coef
    design = np.column_stack([x[m:-1], eh[m:-1]])
    start, *_ = np.linalg.lstsq(design, x[m + 1:], rcond=None)
    start = np.clip(start, -0.95, 0.95)
    res = minimize(sse, start, method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 300})
    ph, th = float(res.x[0]), float(res.x[1])
    if not (abs(ph) < 0.999 and abs(th) <= MAX_THETA) or not math.isfinite(float(res.fun)):
        return None
    fit = ARFit((ph,), n, float(res.fun) / (n - burn) / c0, th)
    # A fit whose residuals carry more of a level shift than the values themselves (gain
    # above 1: nearly cancelling roots, a spurious fit of independent values) would turn
    # the reference's own estimation error into alarms.
    return fit if 0.0 < fit.gain <= 1.0 else None


def residual_state(fit: ARFit, z: np.ndarray) -> np.ndarray:
    """The filter state after the values ``z`` (oldest first), from a zero state: what the
    residuals of the values after them need."""
    return residuals(fit, z, np.zeros(fit.state_size))[1]


def residuals(fit: ARFit, z: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The residuals of ``z`` under the fit, from filter state ``zi``, and the state after
    them. A recursion, one value after the other: batches of any size give the same
    values."""
    if not fit.state_size:
        return z, zi
    b, a = fit.filter()
    e, zf = lfilter(b, a, z, zi=zi)
    return np.asarray(e), np.asarray(zf)


def lrv_factor(x: np.ndarray, shrink: float = SHRINK) -> float:
    """Long-run variance of ``x`` over its variance (1 for independent values).

    From batch means at several batch sizes (dependence can live at any of those scales):
    at each, the ratio less ``shrink`` of its standard errors (a batch-means variance with
    ``k - 1`` degrees of freedom: sqrt(2 / (k - 1)) relative); the largest over the sizes
    with 10 or more batches. Never below 1: negative dependence is left unpriced (it only
    makes alarms rarer)."""
    n = x.shape[0]
    var = float(x.var()) if n else 0.0
    if var <= 0.0:
        return 1.0
    best = 1.0
    for m in BATCH_SIZES:
        k = n // m
        if k < 10:
            break
        means = x[: k * m].reshape(k, m).mean(axis=1)
        raw = float(means.var(ddof=1)) * m / var
        best = max(best, raw * (1.0 - shrink * math.sqrt(2.0 / (k - 1))))
    return best


LONG_SIZES = (500, 1000, 2000, 5000)  # batch sizes only a growing history can fill


class BatchMeans:
    """Sums of consecutive batches of a series at several batch sizes, as sufficient
    statistics (batches, sum, sum of squares) plus each size's open batch: what a
    long-run variance (or a rate's dispersion) needs from a history of any length, in a
    few numbers."""

    def __init__(self, sizes: tuple[int, ...] = LONG_SIZES) -> None:
        self.sizes = sizes
        self.stats = np.zeros((len(sizes), 3))
        self.open = np.zeros((len(sizes), 2))  # (values, sum) of the open batch

    def add(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if not n:
            return
        cum = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
        for k, w in enumerate(self.sizes):
            o, s = self.open[k]
            i = 0
            while i < n:
                take = min(int(w - o), n - i)
                s += cum[i + take] - cum[i]
                o += take
                i += take
                if o >= w:
                    self.stats[k] += (1.0, s, s * s)
                    o, s = 0.0, 0.0
            self.open[k] = (o, s)

    def merge(self, other: BatchMeans) -> None:
        """Take in another window's complete batches (its open ones are dropped)."""
        self.stats += other.stats

    @property
    def values(self) -> float:
        """Values in complete batches of the smallest size."""
        return float(self.stats[0, 0] * self.sizes[0])

    def lrv(self, var: float, shrink: float = SHRINK) -> float:
        """The long-run variance factor of the series (variance ``var``), as
        :func:`lrv_factor` from the sizes with 10 or more complete batches (1: none)."""
        best = 1.0
        for k, m in enumerate(self.sizes):
            cnt, s, ss = self.stats[k]
            if cnt < 10 or var <= 0:
                continue
            vb = (ss - s * s / cnt) / (cnt - 1) / (m * m)
            raw = vb * m / var
            best = max(best, raw * (1.0 - shrink * math.sqrt(2.0 / (cnt - 1))))
        return best

    def dump(self, prefix: str) -> dict[str, object]:
        return {f"{prefix}.stats": self.stats.copy(), f"{prefix}.open": self.open.copy()}

    def load(self, stats: np.ndarray, open_: np.ndarray) -> None:
        if stats.shape == self.stats.shape:
            self.stats = stats.astype(np.float64)
            self.open = open_.astype(np.float64)


def rate_dispersion(events: np.ndarray, window: int, shrink: float = SHRINK) -> float:
    """Relative spread (a coefficient of variation) of a rate across windows of ``window``
    outcomes, beyond binomial sampling: ``sqrt(max(0, var(window rates) - p(1-p)/window)) /
    p``, the excess less ``shrink`` standard errors of the windows' variance. 0 when the
    outcomes look independent with one rate, or when there are under 8 windows."""
    k = events.shape[0] // window
    if k < 8:
        return 0.0
    rates = events[: k * window].reshape(k, window).mean(axis=1)
    p = float(rates.mean())
    if not 0.0 < p < 1.0:
        return 0.0
    binom = p * (1.0 - p) / window
    var = float(rates.var(ddof=1))
    excess = var - binom - shrink * max(var, binom) * math.sqrt(2.0 / (k - 1))
    return math.sqrt(excess) / p if excess > 0 else 0.0
