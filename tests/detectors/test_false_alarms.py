"""Stationary false-alarm rates of every signal, counted over tens of millions of events.

Each case builds one signal the way ``ModelMonitor`` does (its share of the budget), fits
it on a seeded warm-up through its own ``update``, and then drives its CUSUM bank — the
signal's thresholds and increment tables, through the compiled scan it uses — with ``N``
in-control events. After each alarm the bank starts again from 0 (the signal would
re-warm; the run length the calibration computes starts at 0) and counting goes on.

In control means: the events follow the reference the signal learned, exactly.

* latency (distinct values): every gap between two neighbouring reference values is
  equally likely (values are drawn uniformly among the gaps' midpoints). The rank scores
  are then those of a known reference: ``z`` takes the reference's own normal scores.
* output length (counts, with ties): values resampled from the reference.
* refusal, negative feedback, error rate: Bernoulli at the rate the reference estimated.
* embedding: distances to the centroids spread uniformly over the gaps of the held-out
  distances (so ``P(d > tau)`` is the ``p0`` the novelty CUSUM was designed for).

A fresh reference sees its own estimation error on top of this; the thresholds are
averaged over it, and ``bench/quality.py`` measures it on real warm-ups.

Expected count: ``N * sum_j 1 / ARL_j`` over the bank's detectors, with ``ARL_j`` the
Markov-chain run length (``detectors/calibration.py``) at detector ``j``'s threshold:
exact for the Bernoulli grid CUSUMs, the Brook-Evans chain of ``z ~ N(0, 1)`` for the
normal-score CUSUMs. Rank scores have bounded tails (``|z| <= 3.5`` for 2,000 reference
values) where the normal chain has none, so for those the chain overstates the rate:
over 4e8 latency events the bank fired 121 times where the chain expects 142 (0.85).

The bound: with alarms this rare (one per ~10^6 events, each CUSUM forgetting within a
few hundred), the count is Binomial(N, r). A case passes when ``lo <= count <= hi``:
``hi`` the upper ``ALPHA`` quantile of Binomial(N, r_chain), ``lo`` the lower ``ALPHA``
quantile of Binomial(N, r_low), ``r_low`` the chain's rate with each normal-score
detector's share halved (exact detectors at full rate). If the true rate lies in
[r_low, r_chain], a correct build fails a case with probability at most 2 * ALPHA =
2e-6 (1.2e-5 for all six; the seeds are fixed, so a pass is a pass every time). Each
case also shows that it can tell the budget from five times it: with ``N`` events, a
rate of 5x the configured one would stay at or below ``hi`` with probability < 1e-6.

The Bernoulli banks run 300M events (compiled, no search: ~1 s per 100M here), enough for
a lower bound with teeth (a threshold that went up fails too). The normal-score banks'
binary search costs ~10x more: at 40-50M events their lower bound is 0 and they check the
upper side only; ``bench/quality.py --ci`` fails a detector that went quiet (its delays).
As measured (pytest -s prints the line):

    signal                      events  chain rate  realized  bound
    embedding                   40,000,000  2.04e-07  2.25e-07 (9)    [0, 25]
    error_rate                 300,000,000  2.46e-07  2.33e-07 (70)   [37, 118]
    latency                     50,000,000  3.56e-07  3.20e-07 (16)   [0, 41]
    negative_feedback_rate     300,000,000  1.43e-07  1.17e-07 (35)   [16, 77]
    output_length               50,000,000  3.56e-07  3.00e-07 (15)   [0, 41]
    refusal_rate               300,000,000  2.07e-07  1.77e-07 (53)   [28, 103]

(configured: 1e-6 per event per signal; the chain's rates are lower because a known
reference has no estimation error, which the thresholds are set to absorb.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from driftline.detectors import ModelMonitor, MonitorConfig, calibration
from driftline.detectors.cusum import SCALE, Cusum, bernoulli_design
from driftline.detectors.embedding import EmbeddingSignal
from driftline.detectors.kernels import scan_many
from driftline.detectors.rate import RateSignal
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.scores import mean_shape
from driftline.detectors.signal import Signal
from scipy.stats import binom

from tests.detectors import streams

ALPHA = 1e-6
CONFIG = MonitorConfig()  # the defaults: 1 false alarm per 1e6 events per signal
CHUNK = 2_000_000

Scan = Callable[[np.ndarray], list[tuple[int, int, int]]]


@dataclass
class Bank:
    """A fitted signal's detectors, how to scan events with them, and the chain's view."""

    dets: list[Cusum]
    scan: Scan
    draw: Callable[[np.random.Generator, int], np.ndarray]  # n in-control events
    arls: list[float]  # Markov-chain run length of each detector at its threshold
    exact: list[bool]  # whether that chain is exact for these events


def _signal(name: str) -> Signal:
    """The signal as a monitor with the default configuration builds it."""
    return ModelMonitor("m", CONFIG).signals[name]


def _normal_arl(shape: tuple[float, float, float], det: Cusum) -> float:
    return calibration.normal_cusum_arl(shape, det.h / SCALE)


def _scalar(name: str, reference: np.ndarray, resample: bool) -> Bank:
    sig = _signal(name)
    assert isinstance(sig, ScalarSignal)
    sig.update(reference, np.zeros(reference.shape[0]))
    # Independent draws: no autoregression to take out, so the bank ranks the values
    # themselves against the reference (the in-control law below is then exact).
    assert sig.monitoring and sig.chain is not None and sig.chain.resid is None
    ref = sig.chain.marginal.ref  # sorted
    if resample:
        def draw(rng: np.random.Generator, n: int) -> np.ndarray:
            return ref[rng.integers(0, ref.shape[0], n)]
    else:
        edges = np.concatenate([[ref[0] - 1.0], ref, [ref[-1] + 1.0]])
        mids = (edges[:-1] + edges[1:]) / 2.0  # one value inside each of the n + 1 gaps

        def draw(rng: np.random.Generator, n: int) -> np.ndarray:
            return mids[rng.integers(0, mids.shape[0], n)]
    def scan(x: np.ndarray) -> list[tuple[int, int, int]]:
        return sig._scan(x, np.zeros(x.shape[0]))
    return Bank(sig.dets, scan, draw,
                [_normal_arl(sig.shapes[d.name], d) for d in sig.dets],
                [False] * len(sig.dets))


def _rate(name: str, p: float) -> Bank:
    sig = _signal(name)
    assert isinstance(sig, RateSignal)
    rng = np.random.default_rng(41)
    while not sig.monitoring:
        sig.update((rng.random(500) < p).astype(np.float64), np.zeros(500))
    for d in sig.dets:
        d.commit(0, 0)
    p0 = max(sig.p0, sig.floor)  # the rate the bank was designed and calibrated for
    arls = []
    for d in sig.dets:
        up = d.name.endswith("_up")
        a, _ = bernoulli_design(p0, sig.ratio if up else 1.0 / sig.ratio)
        arls.append(float(calibration.bernoulli_arls(a, p0, d.h, up)[d.h - 1]))

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.random(n) < p0).astype(np.float64)
    def scan(x: np.ndarray) -> list[tuple[int, int, int]]:
        return sig._scan(x, np.zeros(x.shape[0]))
    return Bank(sig.dets, scan, draw, arls, [True] * len(sig.dets))


def _embedding() -> Bank:
    sig = _signal("embedding")
    assert isinstance(sig, EmbeddingSignal)
    vecs = streams.topics(43, sig.fit_n + sig.hold_n, 16)
    sig.update(vecs, np.zeros(vecs.shape[0]))
    assert sig.monitoring and sig.chain is not None and sig.chain.resid is None
    novelty, distance = sig.dets
    a = sig._design[0]  # the novelty CUSUM's grid step for an event (private: its design)
    scores = sig.chain.marginal
    table = scores.table(mean_shape(0.5))
    ref = scores.ref
    edges = np.concatenate([[ref[0] - 1.0], ref, [ref[-1] + 1.0]])
    mids = (edges[:-1] + edges[1:]) / 2.0

    def scan(d: np.ndarray) -> list[tuple[int, int, int]]:
        # The signal's own increments (EmbeddingSignal._increments), from the distances.
        inc = np.stack([np.where(d > sig.tau, a, -1), table[scores.positions(d)]])
        return scan_many(sig.dets, inc)

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return mids[rng.integers(0, mids.shape[0], n)]
    arls = [float(calibration.bernoulli_arls(a, sig.p0, novelty.h, True)[novelty.h - 1]),
            _normal_arl(mean_shape(0.5), distance)]
    return Bank(sig.dets, scan, draw, arls, [True, False])


def _output_lengths(seed: int, n: int) -> np.ndarray:
    """Token counts: Poisson around a lognormal length (skewed counts with ties)."""
    rng = np.random.default_rng(seed)
    return rng.poisson(np.exp(5.3 + 0.6 * rng.standard_normal(n))).astype(np.float64)


CASES: dict[str, tuple[Callable[[], Bank], int]] = {
    "latency": (lambda: _scalar("latency", streams.latency(42, CONFIG.warmup), False),
                50_000_000),
    "output_length": (lambda: _scalar("output_length", _output_lengths(44, CONFIG.warmup),
                                      True), 50_000_000),
    "refusal_rate": (lambda: _rate("refusal_rate", 0.02), 300_000_000),
    "negative_feedback_rate": (lambda: _rate("negative_feedback_rate", 0.10), 300_000_000),
    "error_rate": (lambda: _rate("error_rate", 0.10), 300_000_000),
    "embedding": (_embedding, 40_000_000),
}


def count_alarms(bank: Bank, n: int, seed: int) -> int:
    """Alarms of the bank over ``n`` in-control events; it restarts at 0 after each."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for start in range(0, n, CHUNK):
        x = bank.draw(rng, min(CHUNK, n - start))
        i = 0
        while i < x.shape[0]:
            out = bank.scan(x[i:])
            first = min((hit for hit, _, _ in out if hit >= 0), default=-1)
            if first < 0:  # no alarm in the rest of the chunk: carry the state on
                for d, (_, s, run) in zip(bank.dets, out, strict=True):
                    d.commit(s, run)
                break
            alarms += 1
            for d in bank.dets:
                d.commit(0, 0)
            i += first + 1
    return alarms


@pytest.mark.parametrize("signal", sorted(CASES))
def test_stationary_false_alarms_match_the_run_length_chain(signal: str) -> None:
    make, n = CASES[signal]
    bank = make()
    budget = CONFIG.target_false_alarm_rate  # per event, the whole signal
    r_chain = sum(1.0 / arl for arl in bank.arls)
    r_low = sum((1.0 if exact else 0.5) / arl
                for arl, exact in zip(bank.arls, bank.exact, strict=True))
    hi = int(binom.isf(ALPHA, n, r_chain))  # P(count > hi) <= ALPHA at r_chain
    lo = int(binom.ppf(ALPHA, n, r_low))  # P(count < lo) <= ALPHA at r_low
    # Enough events to tell the budget from five times it.
    assert binom.cdf(hi, n, 5 * budget) < 1e-6
    # The chain's rate at these thresholds keeps within the budget.
    assert r_chain <= budget
    count = count_alarms(bank, n, seed=7)
    print(f"\n{signal:<24}{n:>12,}  configured {budget:.1e}  chain {r_chain:.2e}  "
          f"realized {count / n:.2e} ({count} alarms)  bound [{lo}, {hi}]")
    assert lo <= count <= hi
