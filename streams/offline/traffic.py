"""Production-shaped interaction streams, with known drift, as the monitor's columns.

Production traffic is not independent draws from one distribution, and none of the
following is drift a team wants to be paged for: latency that follows load (autocorrelated),
daily and weekly cycles, error and refusal rates that vary by user session or by hour
(overdispersed), timeouts (heavy tails), a prompt-template or topic mix that moves and comes
back. A :class:`Case` names one such *background* and, optionally, a real :class:`Shift` on
top of it (mean, spread, rate, a new embedding topic, abrupt or ramped); :func:`generate`
draws one model's stream of it, seeded, as the columns
:meth:`driftline.detectors.ModelMonitor.observe_columns` takes.

Every signal a background does not name stays stationary and independent, so a false alarm
on it is the detector's, not the data's. Two backgrounds are real series shipped inside the
river wheel: hourly water flow (strong dependence, a daily cycle, the odd outage) and daily
S&P 500 returns (heavy tails, volatility clustering).
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S

# The base model: latency lognormal around ~400 ms, output tokens skewed counts, 2% refusals,
# 90% accuracy with half the interactions labelled inline, thumbs on 20% (a quarter down).
LATENCY_LOG_MEAN = 6.0
LATENCY_LOG_SD = 0.35
TOKENS_LOG_MEAN = math.log(180.0)
TOKENS_LOG_SD = 0.6
REFUSAL_RATE = 0.02
ERROR_RATE = 0.10
LABEL_SHARE = 0.5
FEEDBACK_SHARE = 0.2
NEGATIVE_SHARE = 0.25
EMBEDDING_DIM = 32
TOPICS = 8
NOISE = 0.15  # per dimension, around a topic's centre

SIGNALS = ("latency", "output_length", "refusal_rate", "negative_feedback_rate",
           "error_rate", "embedding")


@dataclass(frozen=True)
class Shift:
    """A real change from the ``start``-th interaction on (``ramp`` > 0: reached gradually).

    ``size`` by ``what``: ``mean`` — standard deviations of the signal's noise (latency:
    of log latency; output_length: of log length); ``spread`` — factor on that SD;
    ``rate`` — the new rate (refusal_rate, error_rate); ``topic`` — share of traffic on a
    topic the reference never saw.
    """

    signal: str
    what: str
    size: float
    start: int
    ramp: int = 0

    def weight(self, n: int) -> np.ndarray:
        """0 before the shift, 1 once it is complete, linear along a ramp."""
        i = np.arange(n, dtype=np.float64)
        if self.ramp <= 0:
            return (i >= self.start).astype(np.float64)
        return np.clip((i - self.start + 1) / self.ramp, 0.0, 1.0)


@dataclass(frozen=True)
class Case:
    """One background, its parameters, and at most one real shift on top of it.

    ``rate`` is interactions per second of this model: it spaces ``ts``, which the
    seasonal backgrounds read (a daily cycle at 1/s is 86,400 interactions long).
    """

    name: str
    background: str
    params: tuple[tuple[str, float], ...] = ()
    shift: Shift | None = None
    rate: float = 1.0

    def param(self, key: str, default: float) -> float:
        return dict(self.params).get(key, default)

    def with_shift(self, shift: Shift | None, name: str | None = None) -> Case:
        return Case(name or self.name, self.background, self.params, shift, self.rate)


@dataclass
class Columns:
    """One model's stream: one row per interaction, NaN where a signal is absent."""

    ts: np.ndarray
    latency_ms: np.ndarray
    output_tokens: np.ndarray
    refusal: np.ndarray
    feedback: np.ndarray
    correct: np.ndarray
    embeddings: np.ndarray  # (n, dim) float32, every row has one
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def chunk(self, a: int, b: int) -> dict[str, Any]:
        """``observe_columns`` keyword arguments for rows [a, b)."""
        return {"latency_ms": self.latency_ms[a:b], "output_tokens": self.output_tokens[a:b],
                "refusal": self.refusal[a:b], "feedback": self.feedback[a:b],
                "correct": self.correct[a:b], "embeddings": self.embeddings[a:b],
                "embedding_rows": np.arange(b - a, dtype=np.int64)}


# -- latent processes -----------------------------------------------------------------------
def ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """A stationary AR(1) with a standard normal marginal."""
    if rho == 0.0:
        return rng.standard_normal(n)
    from scipy.signal import lfilter  # river depends on scipy

    e = rng.standard_normal(n) * math.sqrt(1.0 - rho * rho)
    zi = np.array([rho * rng.standard_normal()])
    return np.asarray(lfilter([1.0], [1.0, -rho], e, zi=zi)[0])


def _blocks(rng: np.random.Generator, n: int, length: float, geometric: bool) -> np.ndarray:
    """A block index per row: blocks of ``length`` rows (or geometric with that mean)."""
    if not geometric:
        return np.arange(n) // int(length)
    sizes = rng.geometric(1.0 / length, size=int(n / length * 2) + 16)
    return np.repeat(np.arange(sizes.shape[0]), sizes)[:n]


def _gamma_mean_cv(rng: np.random.Generator, mean: float, cv: float, k: int) -> np.ndarray:
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, mean / shape, size=k)


def _markov_choice(rng: np.random.Generator, n: int, k: int, stay: float,
                   weights: np.ndarray) -> np.ndarray:
    """A category per row that stays the same with probability ``stay``, else is redrawn
    from ``weights`` (its stationary law): the mix drifts and comes back."""
    redraw = rng.random(n) >= stay
    redraw[0] = True
    draws = rng.choice(k, size=int(redraw.sum()), p=weights)
    return draws[np.cumsum(redraw) - 1]


def _river_file(name: str) -> Path:
    import river.datasets

    return Path(river.datasets.__file__).parent / name


def water_flow(outages: bool = False) -> np.ndarray:
    """Hourly water flow (l/s) of a real pipe network, 1,268 hours (river.datasets).

    The series holds three outages (hours 94-110, 212-223 and 872-886, the flow down to
    a quarter): real events, the data set's anomalies. Without ``outages`` (the benign
    background) those stretches are cut out and the rest joined, 1,224 hours."""
    with open(_river_file("water-flow.csv"), newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    w = np.array([float(r[1]) for r in rows])
    if outages:
        return w
    keep = np.ones(w.shape[0], dtype=bool)
    for a, b in WATER_FLOW_OUTAGES:
        keep[a:b + 1] = False
    return w[keep]


WATER_FLOW_OUTAGES = ((93, 110), (211, 223), (871, 886))  # hours, inclusive


def sp500_returns() -> np.ndarray:
    """Daily returns (%) of 10 large US stocks, 1,257 days each, one stock after another,
    each standardised by its own SD (river.datasets.SP500)."""
    with gzip.open(_river_file("sp500.csv.gz"), "rt", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    a = np.array([[float(x) for x in r[1:11]] for r in rows])
    a = (a - a.mean(axis=0)) / a.std(axis=0)
    return a.T.reshape(-1)


# -- backgrounds ------------------------------------------------------------------------------
# Each returns the latent pieces it changes; the rest stay at their stationary defaults.
def _latent(case: Case, rng: np.random.Generator, n: int, ts: np.ndarray) -> dict[str, Any]:
    bg = case.background
    out: dict[str, Any] = {}
    if bg == "iid":
        pass
    elif bg == "latency_ar":
        out["latency_z"] = ar1(rng, n, case.param("rho", 0.6))
    elif bg == "latency_daily":
        amp = case.param("amplitude", 0.3)
        out["latency_z"] = rng.standard_normal(n) + amp * np.sin(2 * np.pi * ts / DAY_S)
    elif bg == "latency_weekly":
        amp = case.param("amplitude", 0.5)
        out["latency_z"] = rng.standard_normal(n) + amp * (
            0.6 * np.sin(2 * np.pi * ts / WEEK_S) + 0.4 * np.sin(2 * np.pi * ts / DAY_S))
    elif bg == "latency_heavy":
        # Student t with 3 degrees of freedom, scaled to unit SD, and 0.1% outliers at 20x.
        z = rng.standard_t(3, n) / math.sqrt(3.0)
        out["latency_z"] = z
        out["latency_factor"] = np.where(rng.random(n) < 0.001, 20.0, 1.0)
    elif bg == "timeouts":
        share = case.param("share", 0.005)
        out["latency_factor"] = np.where(rng.random(n) < share, case.param("factor", 8.0), 1.0)
    elif bg == "latency_ar_daily":
        amp = case.param("amplitude", 0.3)
        out["latency_z"] = (ar1(rng, n, case.param("rho", 0.6))
                            + amp * np.sin(2 * np.pi * ts / DAY_S))
    elif bg == "water_flow":
        # The hourly series, interpolated to the interactions, standardised by its robust SD
        # (IQR / 1.349), plus independent noise of the same SD.
        w = water_flow(outages=bool(case.param("outages", 0.0)))
        hours = (ts - ts[0]) / 3600.0
        hours = hours % (w.shape[0] - 1)
        level = np.interp(hours, np.arange(w.shape[0]), w)
        q1, med, q3 = np.percentile(w, [25, 50, 75])
        out["latency_z"] = (level - med) / ((q3 - q1) / 1.349) / math.sqrt(2.0) \
            + rng.standard_normal(n) / math.sqrt(2.0)
    elif bg == "sp500":
        r = sp500_returns()
        out["latency_z"] = np.resize(r, n)
    elif bg == "error_sessions":
        sess = _blocks(rng, n, case.param("length", 30.0), geometric=True)
        p = _gamma_mean_cv(rng, ERROR_RATE, case.param("cv", 0.25), int(sess[-1]) + 1)
        out["error_p"] = np.clip(p[sess], 0.0, 1.0)
    elif bg == "refusal_blocks":
        blk = _blocks(rng, n, case.param("length", 1000.0), geometric=False)
        p = _gamma_mean_cv(rng, REFUSAL_RATE, case.param("cv", 0.3), int(blk[-1]) + 1)
        out["refusal_p"] = np.clip(p[blk], 0.0, 1.0)
    elif bg == "error_bad_hours":
        amp = case.param("amplitude", 0.3)
        out["error_p"] = ERROR_RATE * (1.0 + amp * np.sin(2 * np.pi * ts / DAY_S))
    elif bg == "template_mix":
        # Two prompt templates, short and long answers, drawn per interaction; the long
        # one's share wanders around 50% (its logit an AR(1) of correlation time ``tau``
        # interactions and SD ``sd``) and comes back.
        tau = case.param("tau", 2000.0)
        sd = case.param("sd", 0.5)
        long_share = 1.0 / (1.0 + np.exp(-sd * ar1(rng, n, math.exp(-1.0 / tau))))
        tpl = rng.random(n) < long_share
        out["tokens_log_mean"] = np.where(tpl, math.log(320.0), math.log(80.0))
        out["tokens_log_sd"] = 0.35
    elif bg == "template_sessions":
        # The same two templates, used in sessions: which one is in use persists (mean
        # run ``run`` interactions), stationary 50/50 -- a mix that jumps.
        tpl = _markov_choice(rng, n, 2, 1.0 - 1.0 / case.param("run", 200.0),
                             np.array([0.5, 0.5]))
        out["tokens_log_mean"] = np.where(tpl == 0, math.log(80.0), math.log(320.0))
        out["tokens_log_sd"] = 0.35
    elif bg == "topic_mix":
        out["topic_tau"] = case.param("tau", 2000.0)
    elif bg == "topic_sessions":
        out["topic_stay"] = 1.0 - 1.0 / case.param("run", 100.0)
    else:
        raise ValueError(f"unknown background {bg!r}")
    return out


def generate(case: Case, n: int, seed: int) -> Columns:
    """One model's stream of ``n`` interactions of ``case``, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    ts = START_TS + np.arange(n, dtype=np.float64) / case.rate
    lat = _latent(case, rng, n, ts)
    sh = case.shift
    w = sh.weight(n) if sh is not None else np.zeros(n)

    def shifted(signal: str, what: str) -> np.ndarray | None:
        if sh is None or sh.signal != signal or sh.what != what:
            return None
        return w

    # latency: log latency = mean + sd * z, the shift acting on z (the noise).
    z = lat.get("latency_z")
    if z is None:
        z = rng.standard_normal(n)
    if (s := shifted("latency", "mean")) is not None:
        z = z + sh.size * s  # type: ignore[union-attr]
    if (s := shifted("latency", "spread")) is not None:
        z = z * (1.0 + (sh.size - 1.0) * s)  # type: ignore[union-attr]
    latency = np.exp(LATENCY_LOG_MEAN + LATENCY_LOG_SD * z) * lat.get("latency_factor", 1.0)

    # output tokens: a Poisson count around a lognormal length.
    tmean = lat.get("tokens_log_mean", TOKENS_LOG_MEAN)
    tsd = lat.get("tokens_log_sd", TOKENS_LOG_SD)
    zt = rng.standard_normal(n)
    if (s := shifted("output_length", "mean")) is not None:
        zt = zt + sh.size * s  # type: ignore[union-attr]
    if (s := shifted("output_length", "spread")) is not None:
        zt = zt * (1.0 + (sh.size - 1.0) * s)  # type: ignore[union-attr]
    tokens = rng.poisson(np.exp(tmean + tsd * zt)).astype(np.float64)

    def rate(signal: str, base: float | np.ndarray) -> np.ndarray:
        p = np.broadcast_to(np.asarray(base, dtype=np.float64), (n,))
        if (s := shifted(signal, "rate")) is not None:
            p = p + (sh.size - p) * s  # type: ignore[union-attr]
        return p

    refusal = (rng.random(n) < rate("refusal_rate", lat.get("refusal_p", REFUSAL_RATE))
               ).astype(np.float64)
    error = rng.random(n) < rate("error_rate", lat.get("error_p", ERROR_RATE))
    correct = np.where(rng.random(n) < LABEL_SHARE, (~error).astype(np.float64), np.nan)
    neg = rng.random(n) < rate("negative_feedback_rate", NEGATIVE_SHARE * FEEDBACK_SHARE)
    has_fb = neg | (rng.random(n) < FEEDBACK_SHARE * (1 - NEGATIVE_SHARE))
    feedback = np.where(neg, -1.0, np.where(has_fb, 1.0, np.nan))

    emb = _embeddings(rng, n, lat.get("topic_stay", 0.0), lat.get("topic_tau", 0.0),
                      shifted("embedding", "topic"), sh.size if sh is not None else 0.0, seed)
    return Columns(ts, latency, tokens, refusal, feedback, correct, emb)


def _embeddings(rng: np.random.Generator, n: int, stay: float, tau: float,
                new_w: np.ndarray | None, share: float, seed: int) -> np.ndarray:
    """A mixture of topics around a shared direction (cosines are anisotropic, as real
    sentence embeddings are); an unseen topic takes ``share * new_w`` of the traffic.
    ``stay`` > 0: topics persist from one interaction to the next (sessions); ``tau`` > 0:
    the topics' shares wander (log-weights AR(1) with that correlation time, SD 0.5)."""
    crng = np.random.default_rng(10_000 + seed)
    common = crng.standard_normal(EMBEDDING_DIM)
    common /= np.linalg.norm(common)
    centres = crng.standard_normal((TOPICS + 1, EMBEDDING_DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres = 0.6 * common + 0.8 * centres
    weights = crng.dirichlet(np.full(TOPICS, 3.0))
    if stay > 0:
        topic = _markov_choice(rng, n, TOPICS, stay, weights)
    elif tau > 0:
        rho = math.exp(-1.0 / tau)
        logw = np.log(weights)[None, :] + 0.5 * np.column_stack(
            [ar1(rng, n, rho) for _ in range(TOPICS)])
        w = np.exp(logw)
        cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
        topic = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), TOPICS - 1)
    else:
        topic = rng.choice(TOPICS, size=n, p=weights)
    if new_w is not None:
        topic = np.where(rng.random(n) < share * new_w, TOPICS, topic)
    x = centres[topic] + NOISE * rng.standard_normal((n, EMBEDDING_DIM))
    return x.astype(np.float32)


# -- the suite ------------------------------------------------------------------------------
BENIGN: tuple[Case, ...] = (
    Case("i.i.d. control", "iid"),
    Case("latency AR(1) rho=0.3", "latency_ar", (("rho", 0.3),)),
    Case("latency AR(1) rho=0.6", "latency_ar", (("rho", 0.6),)),
    Case("latency AR(1) rho=0.9", "latency_ar", (("rho", 0.9),)),
    Case("latency daily cycle 0.3 sd", "latency_daily", (("amplitude", 0.3),), rate=1.0),
    Case("latency daily cycle 0.5 sd", "latency_daily", (("amplitude", 0.5),), rate=1.0),
    Case("latency weekly cycle 0.5 sd", "latency_weekly", (("amplitude", 0.5),), rate=0.2),
    Case("latency AR(1) 0.6 + daily 0.3 sd", "latency_ar_daily",
         (("rho", 0.6), ("amplitude", 0.3)), rate=1.0),
    Case("latency t3 tails + 0.1% outliers", "latency_heavy"),
    Case("0.5% timeouts at 8x latency", "timeouts"),
    Case("error rate by session (CV 25%)", "error_sessions", (("cv", 0.25), ("length", 300.0))),
    Case("error rate bad hours (+-30%)", "error_bad_hours", (("amplitude", 0.3),), rate=1.0),
    Case("refusal rate by block of 1,000 (CV 30%)", "refusal_blocks",
         (("cv", 0.3), ("length", 1000.0))),
    Case("prompt templates, share drifts and returns", "template_mix",
         (("tau", 1000.0), ("sd", 0.25))),
    Case("embedding topic shares drift and return", "topic_mix", (("tau", 2000.0),)),
    Case("real: water flow (river), latency", "water_flow", rate=40 / 3600.0),
    Case("real: S&P 500 returns (river), latency", "sp500"),
)
# Harder than the targets ask: a mix that jumps (the same template or topic for a session of
# interactions, then another) -- a linear fit's residuals come in bursts after each jump.
STRESS: tuple[Case, ...] = (
    Case("prompt templates in sessions of ~200", "template_sessions", (("run", 200.0),)),
    Case("embedding topics in sessions of ~100", "topic_sessions", (("run", 100.0),)),
    Case("real: water flow with its 3 outages", "water_flow", (("outages", 1.0),),
         rate=40 / 3600.0),
)
