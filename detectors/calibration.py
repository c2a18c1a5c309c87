"""Thresholds for a target false-alarm rate: exact Markov-chain ARLs, no library defaults.

Two families of CUSUM are calibrated here.

* Normal-score CUSUMs (mean and spread of a scalar signal): the increments are
  log-likelihood ratios of a standard normal score ``z``. Their in-control run
  length is computed with the Brook-Evans Markov chain (fine enough for the spread
  CUSUMs, whose increments end in a sharp edge). The reference is
  *estimated* from a warm-up of ``n`` values, so ``z`` really is
  ``N(delta, s^2)`` with ``delta ~ N(0, 1/n)`` and ``s ~ 1 + N(0, 1/(2n))``; the
  false-alarm rate is averaged over that estimation error (Gauss-Hermite), which
  is what a fleet of freshly warmed-up monitors actually experiences.
* Bernoulli CUSUMs on an integer grid (a non-event moves the statistic one unit,
  an event ``a`` units the other way). The chain is skip-free in one direction,
  so the ARL of every threshold comes out of one linear recursion, exactly.

Results depend only on their arguments and are cached per process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from driftline.detectors.kernels import bernoulli_arls
from scipy.linalg import solve_toeplitz
from scipy.special import erfc

# Cells of the Brook-Evans chain. The spread CUSUMs' increments pile up against a bound
# (c0, at z = 0 for spread-down): with 160 cells the rate at 1e9 events between false
# alarms came out 5x too low for spread-down (its realized run length half the configured
# one) and 2x too high for spread-up; at 1,280 each shape is within 2% of 2,000 cells.
_CHAIN_STATES = 1280
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(5)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()
# The rate's estimation error: at 1e9 events between false alarms the fleet's average is
# made by the warm-ups ~3 standard errors off, which 5 nodes miss (realized 0.75x the
# configured run length, bench/calibration.py) and 9 nodes price (2.6x; 21 nodes: 2.4x).
_RATE_NODES, _RATE_WEIGHTS = np.polynomial.hermite_e.hermegauss(9)
_RATE_WEIGHTS = _RATE_WEIGHTS / _RATE_WEIGHTS.sum()


def _phi(x: float) -> float:
    """Standard normal CDF, accurate in the far tails."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _increment_cdf(shape: tuple[float, float, float], delta: float, scale: float,
                   t: np.ndarray) -> np.ndarray:
    """P(c2*z^2 + c1*z + c0 <= t) for z ~ N(delta, scale^2); c2*c1 == 0."""
    c2, c1, c0 = shape
    root2 = math.sqrt(2.0)
    if c2 == 0.0:
        zt = (t - c0) / c1
        p = 0.5 * erfc(-((zt - delta) / scale) / root2)
        return p if c1 > 0 else 1.0 - p
    q = (t - c0) / c2
    r = np.sqrt(np.maximum(q, 0.0))
    below = 0.5 * erfc(-((r - delta) / scale) / root2) - 0.5 * erfc(-((-r - delta) / scale) / root2)
    below = np.where(q <= 0, 0.0, below)
    return below if c2 > 0 else 1.0 - below


def inflate(shape: tuple[float, float, float], factor: float) -> tuple[float, float, float]:
    """The independent-increment equivalent of a CUSUM whose increments are dependent.

    For increments ``x = c2 z^2 + c1 z + c0`` (``z`` a standard normal score) whose long-run
    variance is ``factor`` times their variance, ``sqrt(factor) * (x - mean) + mean`` has
    the same mean (the CUSUM's drift) and, drawn independently, the same long-run variance:
    the two statistics wander alike, and so reach a threshold alike (the diffusion limit of
    the run length depends on the drift and the variance per step only). The chain then
    prices the dependence the warm-up measured.
    """
    if factor <= 1.0:
        return shape
    c2, c1, c0 = shape
    mean = c2 + c0
    q = math.sqrt(factor)
    return (q * c2, q * c1, q * c0 + (1.0 - q) * mean)


def chain_arl(cdf: Callable[[np.ndarray], np.ndarray], h: float,
              states: int = _CHAIN_STATES) -> float:
    """Average run length of ``S = max(0, S + X)`` from 0 to ``S >= h``, the increments
    ``X`` independent with distribution function ``cdf``.

    The chain's states are ``states`` cells of ``[0, h)``; it solves ``(I - P) L = 1``. The
    move from cell i to cell j > 0 depends on ``j - i`` only, so ``I - P`` is a Toeplitz
    matrix but for column 0 (everything at or below 0 lands there): two Toeplitz solves
    (Levinson, O(states^2)) and a rank-one correction (Sherman-Morrison) give L exactly,
    as a dense solve would (tests/detectors/test_calibration.py)."""
    w = h / (states - 0.5)
    # S + X lands in cell j when (j-0.5)w < S+X <= (j+0.5)w; cell differences m = j - i.
    at = cdf((np.arange(-states, states + 2) - 0.5) * w)
    k = np.arange(states)
    move = at[1:] - at[:-1]  # move[d + states]: P(cell difference d), d = -states..states
    first_col = (k == 0) - move[states - k]  # (I - P)[i, 0] were it Toeplitz: -P(d = -i)
    first_row = (k == 0) - move[states + k]  # (I - P)[0, j] = -P(d = j)
    # Column 0 really holds P(S + X <= w/2): the Toeplitz matrix plus u e_0^T.
    u = ((k == 0) - at[(1 - k) + states]) - first_col
    try:
        x = solve_toeplitz((first_col, first_row), np.ones(states))
        y = solve_toeplitz((first_col, first_row), u)
    except np.linalg.LinAlgError:
        return math.inf  # no way up to h from some states: never alarms
    arl = float(x[0] - y[0] * x[0] / (1.0 + y[0]))
    return arl if arl > 0 and math.isfinite(arl) else math.inf


def normal_cusum_arl(shape: tuple[float, float, float], h: float, delta: float = 0.0,
                     scale: float = 1.0, states: int = _CHAIN_STATES) -> float:
    """Average run length of ``S = max(0, S + c2 z^2 + c1 z + c0)`` to ``S >= h``, for
    ``z ~ N(delta, scale^2)`` (:func:`chain_arl`)."""
    return chain_arl(lambda t: _increment_cdf(shape, delta, scale, t), h, states)


def _mean_fa_rate(shape: tuple[float, float, float], h: float, n_ref: int) -> float:
    """False alarms per event, averaged over the warm-up's estimation error."""
    if n_ref <= 0:
        return 1.0 / normal_cusum_arl(shape, h)
    sd_mean = 1.0 / math.sqrt(n_ref)
    sd_scale = 1.0 / math.sqrt(2.0 * n_ref)
    rate = 0.0
    for xm, wm in zip(_GH_NODES[1:4], (0.25, 0.5, 0.25), strict=True):
        for xs, ws in zip(_GH_NODES[1:4], (0.25, 0.5, 0.25), strict=True):
            # 3-point rule on the inner nodes, reweighted: cheap and close to 5x5.
            delta = float(xm) * sd_mean * 1.3
            scale = 1.0 + float(xs) * sd_scale * 1.3
            rate += wm * ws / normal_cusum_arl(shape, h, delta, scale)
    return rate


H_CAP = 200.0  # log-likelihood units; beyond it a detector is as good as off


def _log_rate(shape: tuple[float, float, float], h: float, n_ref: int) -> float:
    return math.log(max(_mean_fa_rate(shape, h, n_ref), 1e-300))


@lru_cache(maxsize=1024)
def normal_cusum_threshold(shape: tuple[float, float, float], fa_rate: float,
                           n_ref: int) -> float:
    """Smallest h whose in-control false-alarm rate (per event) is <= ``fa_rate``.

    With a tiny reference the estimation error can keep the rate above the
    target for any sensible h (the spread-down CUSUM at n_ref = 20): then
    :data:`H_CAP` is returned and the detector effectively stays quiet.
    """
    # log(rate) is close to linear in h: secant steps from the Siegmund-style guess.
    target = math.log(fa_rate)
    h0 = max(1.0, -target - 2.0)
    h1 = h0 + 2.0
    f0 = _log_rate(shape, h0, n_ref) - target
    f1 = _log_rate(shape, h1, n_ref) - target
    for _ in range(12):
        if abs(f1) < 1e-3 or f1 == f0:
            break
        h2 = min(max(0.1, h1 - f1 * (h1 - h0) / (f1 - f0)), H_CAP)
        h0, f0 = h1, f1
        h1, f1 = h2, _log_rate(shape, h2, n_ref) - target
    # Land on the safe side of the root.
    while f1 > 0 and h1 < H_CAP:
        h1 = min(h1 * 1.005 + 1e-3, H_CAP)
        f1 = _log_rate(shape, h1, n_ref) - target
    return h1


def _rate_nodes(p0: float, events: float, extra_cv: float = 0.0) -> list[tuple[float, float]]:
    """Gauss-Hermite nodes over the rate a detector meets: its estimation error from
    ``events`` and a relative spread ``extra_cv`` of the rate itself (sessions, blocks,
    bad hours: a rate that moves around its mean)."""
    sd = math.sqrt(max(1.0 - p0, 0.0) / (events + 0.5) + extra_cv * extra_cv)
    return [(min(p0 * math.exp(sd * float(x)), 0.999), float(w))
            for x, w in zip(_RATE_NODES, _RATE_WEIGHTS, strict=True)]


@lru_cache(maxsize=1024)
def bernoulli_threshold(a: int, unit: float, p0: float, events: float, fa_rate: float,
                        up: bool, extra_cv: float = 0.0) -> int:
    """Smallest integer threshold with an average false-alarm rate <= ``fa_rate``.

    ``unit`` is the log-likelihood ratio of one grid step (for the first guess of the
    search range only); ``events`` sizes the estimation error of ``p0``; ``extra_cv`` is
    the relative spread of the rate over the detector's time scale (see
    :func:`_rate_nodes`): the false-alarm rate is averaged over both, as a fleet of
    monitors on such traffic meets them.
    """
    nodes = _rate_nodes(p0, events, extra_cv)
    h_max = int(1.2 * math.log(1.0 / fa_rate) / unit) + a + 16
    for _ in range(8):
        rate = np.zeros(h_max)
        for p, w in nodes:
            with np.errstate(all="ignore"):
                arl = bernoulli_arls(a, p, h_max, up)
            # The recursions overflow only where run lengths are astronomically long.
            arl[~(arl > 0)] = np.inf
            rate += w / arl
        ok = np.flatnonzero(rate <= fa_rate)
        if ok.size:
            return int(ok[0]) + 1
        h_max *= 2
    # A rate that wanders past the design's alternative alarms at a rate that falls only
    # like 1/h: the largest threshold tried, the detector as good as off (and the signal
    # says so, see RateSignal.warnings).
    return h_max // 2
