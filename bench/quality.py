"""Detection quality: driftline's monitor vs river's default detectors, on the same seeded streams.

Every scenario is a seeded stream with a change at event 50,000 (for accuracy:
the 50,000th labelled event); a detection later than 5,000 events after it is a
miss. The monitor learns its reference from the stream itself (the *estimated*
reference, never the true parameters). Stationary streams measure false alarms
per million events per signal. River's detectors run with default parameters on
standardised inputs (log-value z-scores from the same warm-up; binary outcomes
for rates; cosine distance to the warm-up centroid for embeddings).

    .venv/bin/python bench/quality.py            # full suite, 30 runs, ~15-20 min on 2 cores
    .venv/bin/python bench/quality.py --quick    # 8 runs, short stationary streams
    .venv/bin/python bench/quality.py --ci       # driftline only, seeded, ~1-2 min: CI's gate

KSWIN costs ~0.8 ms per update, so it runs only on mean-shift scenarios, from
1,000 events before the change, and on 20,000 stationary events per signal.

The run ends with a gate (``bench/gate.py``): each of driftline's figures beside its
target, exit status 1 when one is missed. A full run checks the product targets (the
README's: delays, at most 5% missed, at most 1 false alarm per 1M events per signal).
``--ci`` checks regression bounds set just outside the values measured on the same seeds
(:data:`CI_BOUNDS`; the streams are seeded and replay is deterministic, so a change
that makes any delay, miss count or false-alarm count worse fails); where a product
target is tighter, it applies. A change that moves the figures on purpose updates the
bounds in the same commit, with the new values as printed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one core per worker

import argparse
import math
import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from driftline.detectors import ModelMonitor, MonitorConfig
from gate import Gate
from progress import progress
from river import drift

CHANGE = 50_000
HORIZON = 5_000
RAMP = 2_000
DIM = 384
KSWIN_LEAD = 1_000


@dataclass(frozen=True)
class Scenario:
    name: str
    signal: str  # latency | output_length | refusal_rate | error_rate | embedding
    param: float  # shift (sd), spread ratio, new rate, or unseen share
    what: str  # mean | spread | rate | topic
    gradual: bool = False
    median: float | None = None  # product targets on driftline's delay (events)
    p90: float | None = None


SCENARIOS = [
    Scenario("latency mean +1σ", "latency", 1.0, "mean", median=40, p90=60),
    Scenario("latency mean +0.5σ", "latency", 0.5, "mean", median=120, p90=200),
    Scenario("latency mean -1σ", "latency", -1.0, "mean"),
    Scenario("latency spread ×1.5", "latency", 1.5, "spread"),
    Scenario("latency spread ×0.6", "latency", 0.6, "spread"),
    Scenario("latency mean +1σ gradual", "latency", 1.0, "mean", True),
    Scenario("latency spread ×1.5 gradual", "latency", 1.5, "spread", True),
    Scenario("output length +35% (0.5σ)", "output_length", 0.5, "mean"),
    Scenario("output length +35% gradual", "output_length", 0.5, "mean", True),
    Scenario("refusal 2% → 4%", "refusal_rate", 0.04, "rate"),
    Scenario("refusal 2% → 4% gradual", "refusal_rate", 0.04, "rate", True),
    Scenario("accuracy 90% → 80%", "error_rate", 0.20, "rate", median=300, p90=500),
    Scenario("accuracy 90% → 80% gradual", "error_rate", 0.20, "rate", True),
    Scenario("unseen topic 5%", "embedding", 0.05, "topic", median=800),
    Scenario("unseen topic 10%", "embedding", 0.10, "topic", median=300, p90=500),
    Scenario("unseen topic 30%", "embedding", 0.30, "topic"),
    Scenario("unseen topic 10% gradual", "embedding", 0.10, "topic", True),
]
STATIONARY = ["latency", "output_length", "refusal_rate", "error_rate", "embedding"]
RIVER_SCALAR = ["ADWIN", "PageHinkley", "KSWIN"]
RIVER_BINARY = ["ADWIN", "DDM", "HDDM_A"]
RIVER_EMBED = ["ADWIN", "PageHinkley"]
BASE_RATE = {"refusal_rate": 0.02, "error_rate": 0.10}


# -- streams ---------------------------------------------------------------------------
def _ramp(n: int, start: int, gradual: bool) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    if start >= n:
        return np.zeros(n)
    if not gradual:
        return (t >= start).astype(np.float64)
    return np.clip((t - start) / RAMP, 0.0, 1.0)


def scalar_stream(rng: np.random.Generator, sc: Scenario | None, signal: str, n: int,
                  start: int) -> np.ndarray:
    """Lognormal latency (ms) or skewed token counts, with the scenario's change."""
    s = _ramp(n, start, bool(sc and sc.gradual)) if sc else np.zeros(n)
    z = rng.standard_normal(n)
    if sc and sc.what == "mean":
        z = z + sc.param * s
    elif sc and sc.what == "spread":
        z = z * (1.0 + (sc.param - 1.0) * s)
    if signal == "latency":
        return np.exp(5.0 + 0.5 * z)
    # Output tokens: Poisson around a lognormal length (0.6 log-sd), i.e. skewed counts.
    return rng.poisson(np.exp(5.3 + 0.6 * z)).astype(np.float64)


def rate_stream(rng: np.random.Generator, sc: Scenario | None, signal: str, n: int,
                start: int) -> np.ndarray:
    p0 = BASE_RATE[signal]
    s = _ramp(n, start, bool(sc and sc.gradual)) if sc else np.zeros(n)
    p = p0 + ((sc.param - p0) * s if sc else 0.0)
    return (rng.random(n) < p).astype(np.float64)


class Topics:
    """A mixture of topics in 384-d with a shared component (cosines are anisotropic)."""

    def __init__(self, seed: int, k: int = 16) -> None:
        rng = np.random.default_rng(10_000 + seed)
        common = rng.standard_normal(DIM)
        common /= np.linalg.norm(common)
        dirs = rng.standard_normal((k + 1, DIM))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        c = 0.6 * common + dirs
        self.centers = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)
        w = rng.dirichlet(np.full(k, 1.5))
        self.weights = w
        self.noise = rng.uniform(0.045, 0.075, k + 1).astype(np.float32)
        self.k = k

    def sample(self, rng: np.random.Generator, share: np.ndarray) -> np.ndarray:
        n = share.shape[0]
        lab = rng.choice(self.k, size=n, p=self.weights)
        lab = np.where(rng.random(n) < share, self.k, lab)
        x = rng.standard_normal((n, DIM), dtype=np.float32) * self.noise[lab, None]
        x += self.centers[lab]
        return x


def embedding_stream(rng: np.random.Generator, topics: Topics, sc: Scenario | None, n: int,
                     start: int) -> np.ndarray:
    s = _ramp(n, start, bool(sc and sc.gradual)) if sc else np.zeros(n)
    share = sc.param * s if sc else np.zeros(n)
    return topics.sample(rng, share)


# -- detectors -------------------------------------------------------------------------
def ours(signal: str, values: np.ndarray) -> list[int]:
    """Indices of driftline's findings on one signal (the monitor, as deployed)."""
    n = values.shape[0]
    mon = ModelMonitor("bench", MonitorConfig())
    ids = [str(i) for i in range(n)]
    ts = np.zeros(n)
    if signal == "embedding":
        out = []
        for a in range(0, n, 20_000):
            out += mon.observe_columns(ids[a: a + 20_000], ts[a: a + 20_000],
                                       embeddings=values[a: a + 20_000],
                                       embedding_rows=np.arange(min(20_000, n - a)))
    else:
        col = {"latency": "latency_ms", "output_length": "output_tokens",
               "refusal_rate": "refusal", "error_rate": "correct"}[signal]
        v = 1.0 - values if signal == "error_rate" else values
        out = mon.observe_columns(ids, ts, **{col: v})
    return [int(f.event_id) for f in out if f.signal == signal]


def river_detector(name: str) -> Any:
    return {"ADWIN": drift.ADWIN, "PageHinkley": drift.PageHinkley, "KSWIN": drift.KSWIN,
            "DDM": drift.binary.DDM, "HDDM_A": drift.binary.HDDMA}[name]()


def river_alarms(name: str, xs: np.ndarray, stop_after: int | None = None) -> list[int]:
    det = river_detector(name)
    out = []
    for i, x in enumerate(xs.tolist()):
        det.update(x)
        if det.drift_detected:
            out.append(i)
            if stop_after is not None and i >= stop_after:
                break
    return out


def river_inputs(signal: str, values: np.ndarray, warm: int = 2000) -> np.ndarray:
    """What river's detectors see: z-scores of log values, outcomes, centroid distance."""
    if signal in ("latency", "output_length"):
        lv = np.log1p(values)
        return (lv - lv[:warm].mean()) / (lv[:warm].std() or 1.0)
    if signal == "embedding":
        u = values / np.linalg.norm(values, axis=1, keepdims=True)
        c = u[:warm].mean(axis=0)
        c /= np.linalg.norm(c)
        return (1.0 - u @ c).astype(np.float64)
    return values


def river_names(signal: str) -> list[str]:
    if signal in ("latency", "output_length"):
        return RIVER_SCALAR
    if signal == "embedding":
        return RIVER_EMBED
    return RIVER_BINARY


# -- tasks -----------------------------------------------------------------------------
def change_task(args: tuple[int, int, bool]
                ) -> tuple[int, dict[str, tuple[int | None, int, int]]]:
    """One run of one scenario: per detector (delay or None, false alarms, pre-change events)."""
    si, run, with_river = args
    sc = SCENARIOS[si]
    rng = np.random.default_rng(1000 * si + run)
    n = CHANGE + HORIZON
    if sc.signal == "embedding":
        values = embedding_stream(rng, Topics(run), sc, n, CHANGE)
    elif sc.what == "rate":
        values = rate_stream(rng, sc, sc.signal, n, CHANGE)
    else:
        values = scalar_stream(rng, sc, sc.signal, n, CHANGE)
    res: dict[str, tuple[int | None, int, int]] = {}
    mon_alarms = ours(sc.signal, values)
    res["driftline"] = _score(mon_alarms, _warm_end(sc.signal, values))
    if not with_river:
        return si, res
    xs = river_inputs(sc.signal, values)
    for name in river_names(sc.signal):
        if name == "KSWIN":
            if sc.what != "mean" or sc.gradual or sc.signal != "latency":
                continue
            a0 = CHANGE - KSWIN_LEAD
            al = [a0 + i for i in river_alarms(name, xs[a0:], stop_after=KSWIN_LEAD)]
            res[name] = _score(al, a0)
        else:
            res[name] = _score(river_alarms(name, xs), 0)
    return si, res


def _warm_end(signal: str, values: np.ndarray) -> int:
    """First monitored index of the monitor (its reference comes before)."""
    cfg = MonitorConfig()
    if signal == "embedding":
        return cfg.warmup // 2 + cfg.warmup
    if signal in ("refusal_rate", "error_rate"):
        ev = np.cumsum(values)
        idx = np.arange(1, values.shape[0] + 1)
        ok = (idx >= cfg.warmup) & ((ev >= cfg.rate_min_events) | (idx >= 10 * cfg.warmup))
        return int(ok.argmax()) + 1
    return cfg.warmup


def _score(alarms: list[int], start: int) -> tuple[int | None, int, int]:
    fa = sum(1 for a in alarms if start <= a < CHANGE)
    after = [a - CHANGE for a in alarms if a >= CHANGE]
    delay = after[0] if after and after[0] < HORIZON else None
    return delay, fa, max(CHANGE - start, 0)


def stationary_task(args: tuple[str, int, int, bool]) -> tuple[str, dict[str, tuple[int, int]]]:
    """A long stationary stream: per detector (false alarms, monitored events)."""
    signal, seed, n, with_river = args
    rng = np.random.default_rng(77_000 + seed)
    if signal in BASE_RATE:
        values = rate_stream(rng, None, signal, n, n)
    elif signal == "embedding":
        values = np.zeros(0)
    else:
        values = scalar_stream(rng, None, signal, n, n)
    res: dict[str, tuple[int, int]] = {}
    if signal == "embedding":
        return signal, _stationary_embedding(seed, n, with_river)
    al = ours(signal, values)
    w = _warm_end(signal, values)
    # After a (false) alarm the signal re-warms: those events are not monitored.
    res["driftline"] = (len(al), n - w * (1 + len(al)))
    if with_river:
        xs = river_inputs(signal, values)
        for name in river_names(signal):
            m = min(n, 20_000) if name == "KSWIN" else n
            res[name] = (len(river_alarms(name, xs[:m])), m)
    return signal, res


def _stationary_embedding(seed: int, n: int, with_river: bool) -> dict[str, tuple[int, int]]:
    """Embeddings in chunks (300k x 384 floats would not fit comfortably at once)."""
    rng = np.random.default_rng(77_000 + seed)
    topics = Topics(seed)
    mon = ModelMonitor("bench", MonitorConfig())
    dets = {name: river_detector(name) for name in RIVER_EMBED} if with_river else {}
    fas = dict.fromkeys(dets, 0)
    alarms = 0
    centroid: np.ndarray | None = None
    step = 20_000
    for a in range(0, n, step):
        x = topics.sample(rng, np.zeros(min(step, n - a)))
        ids = [str(a + i) for i in range(x.shape[0])]
        found = mon.observe_columns(ids, np.zeros(x.shape[0]), embeddings=x,
                                    embedding_rows=np.arange(x.shape[0]))
        alarms += sum(1 for f in found if f.signal == "embedding")
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        if centroid is None:
            centroid = u[:2000].mean(axis=0)
            centroid /= np.linalg.norm(centroid)
        for name, det in dets.items():
            for v in (1.0 - u @ centroid).astype(np.float64).tolist():
                det.update(v)
                fas[name] += det.drift_detected
    w = _warm_end("embedding", np.zeros(0))
    res = {"driftline": (alarms, n - w * (1 + alarms))}
    for name in dets:
        res[name] = (fas[name], n)
    return res


# -- targets ---------------------------------------------------------------------------
MAX_MISS = 0.05  # product target: share of runs with no detection within HORIZON
MAX_FA_PER_M = 1.0  # product target: false alarms per 1M stationary events per signal

# ``--ci``: what it runs, and the regression bounds it checks, set just outside the values
# it measured (printed beside them) on the commit that last changed them.
CI_RUNS = {"runs": 30, "embedding_runs": 8, "stationary": 3_000_000,
           "embedding_stationary": 300_000}
# CI_BOUNDS: scenario -> (median delay, p90 delay, missed runs, false alarms before the
# change, over all runs); CI_STATIONARY: signal -> false alarms in its stationary events.
# As printed by ``--ci --propose-bounds`` (delays +10%, one false alarm more than counted).
CI_BOUNDS: dict[str, tuple[float, float, int, int]] = {
    "latency mean +1σ": (41, 53, 0, 2),
    "latency mean +0.5σ": (100, 163, 0, 2),
    "latency mean -1σ": (40, 52, 0, 1),
    "latency spread ×1.5": (77, 134, 0, 1),
    "latency spread ×0.6": (83, 111, 0, 1),
    "latency mean +1σ gradual": (827, 984, 0, 1),
    "latency spread ×1.5 gradual": (1175, 1343, 0, 3),
    "output length +35% (0.5σ)": (103, 189, 0, 2),
    "output length +35% gradual": (1326, 1605, 0, 1),
    "refusal 2% → 4%": (1215, 2482, 0, 2),
    "refusal 2% → 4% gradual": (2583, 3634, 0, 2),
    "accuracy 90% → 80%": (247, 445, 0, 3),
    "accuracy 90% → 80% gradual": (1369, 1743, 0, 2),
    "unseen topic 5%": (612, 867, 0, 1),
    "unseen topic 10%": (173, 238, 0, 1),
    "unseen topic 30%": (52, 62, 0, 3),
    "unseen topic 10% gradual": (1111, 1260, 0, 1),
}
CI_STATIONARY: dict[str, int] = {
    "latency": 3,
    "output_length": 3,
    "refusal_rate": 3,
    "error_rate": 2,
    "embedding": 1,
}
# gate: detection quality, driftline vs CI bounds (seeded, deterministic)


@dataclass(frozen=True)
class Summary:
    """driftline's (or a river detector's) figures on one scenario, over its runs."""

    runs: int
    median: float | None
    p90: float | None
    missed: int
    false_alarms: int
    events: int  # monitored events before the change, all runs

    @classmethod
    def of(cls, rows: list[tuple[int | None, int, int]]) -> Summary:
        delays = np.array([d for d, _, _ in rows if d is not None], dtype=np.float64)
        return cls(len(rows),
                   float(np.median(delays)) if delays.size else None,
                   float(np.percentile(delays, 90)) if delays.size else None,
                   len(rows) - delays.shape[0], sum(f for _, f, _ in rows),
                   sum(e for _, _, e in rows))


def product_gate(sel: list[int], change: dict[int, Summary],
                 stat: dict[str, tuple[int, int]]) -> Gate:
    """The README's targets: delays, at most 5% missed, at most 1 false alarm per 1M."""
    g = Gate("detection quality, driftline vs the product targets")
    for sig, (fa, ev) in stat.items():
        g.check(f"{sig}: stationary false alarms per 1M", fa / max(ev, 1) * 1e6, "<=",
                MAX_FA_PER_M, note=f"{fa} in {ev:,} events")
    for si in sel:
        sc, s = SCENARIOS[si], change[si]
        if sc.median is not None:
            g.check(f"{sc.name}: median delay", s.median, "<=", sc.median)
        if sc.p90 is not None:
            g.check(f"{sc.name}: p90 delay", s.p90, "<=", sc.p90)
        g.check(f"{sc.name}: missed", s.missed / max(s.runs, 1), "<=", MAX_MISS,
                note=f"{s.missed} of {s.runs} runs")
    return g


def ci_gate(sel: list[int], change: dict[int, Summary],
            stat: dict[str, tuple[int, int]]) -> Gate:
    """Regression bounds just outside today's values (a product target, where tighter)."""
    g = Gate("detection quality, driftline vs CI bounds (seeded, deterministic)")
    for sig, (fa, ev) in stat.items():
        bound = CI_STATIONARY.get(sig)
        g.check(f"{sig}: stationary false alarms", fa, "<=",
                math.nan if bound is None else bound,
                note=f"in {ev:,} events" + ("" if bound is not None else "; no bound set"))
    for si in sel:
        sc, s = SCENARIOS[si], change[si]
        b = CI_BOUNDS.get(sc.name)
        if b is None:
            g.check(f"{sc.name}: (no CI bound set)", None, "<=", math.nan)
            continue
        med, p90, missed, fa = b
        g.check(f"{sc.name}: median delay", s.median, "<=", min(med, sc.median or math.inf),
                note="" if sc.median is None else f"target ≤ {sc.median:,.0f}")
        g.check(f"{sc.name}: p90 delay", s.p90, "<=", min(p90, sc.p90 or math.inf),
                note="" if sc.p90 is None else f"target ≤ {sc.p90:,.0f}")
        g.check(f"{sc.name}: missed runs", s.missed, "<=",
                min(missed, math.floor(MAX_MISS * s.runs)), note=f"of {s.runs}")
        g.check(f"{sc.name}: false alarms before the change", s.false_alarms, "<=", fa,
                note=f"in {s.events:,} events")
    return g


def proposed_bounds(sel: list[int], change: dict[int, Summary],
                    stat: dict[str, tuple[int, int]]) -> str:
    """CI bounds just outside this run's values: delays +10% (rounded up), missed runs
    as they are, one false alarm more than counted."""
    lines = ["CI_BOUNDS: dict[str, tuple[float, float, int, int]] = {"]
    for si in sel:
        s = change[si]
        med = math.ceil(1.1 * s.median) if s.median is not None else 0
        p90 = math.ceil(1.1 * s.p90) if s.p90 is not None else 0
        lines.append(f"    {SCENARIOS[si].name!r}: ({med}, {p90}, {s.missed}, "
                     f"{s.false_alarms + 1}),")
    lines += ["}", "CI_STATIONARY: dict[str, int] = {"]
    lines += [f"    {sig!r}: {fa + 1}," for sig, (fa, _) in stat.items()]
    return "\n".join([*lines, "}"])


# -- report ----------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}" if x >= 10 or x == 0 else f"{x:.2g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--embedding-runs", type=int, default=None,
                    help="runs of the embedding scenarios (default: --runs)")
    ap.add_argument("--quick", action="store_true", help="8 runs, 1.2M stationary events")
    ap.add_argument("--ci", action="store_true",
                    help="driftline only, " + ", ".join(f"{k} {v:,}" for k, v in
                                                        CI_RUNS.items())
                    + "; check the CI bounds")
    ap.add_argument("--stationary", type=int, default=6_000_000,
                    help="stationary events per signal for driftline")
    ap.add_argument("--embedding-stationary", type=int, default=None,
                    help="stationary embedding events (default: half of --stationary)")
    ap.add_argument("--river-stationary", type=int, default=1_000_000,
                    help="stationary events per signal for river's detectors")
    ap.add_argument("--no-river", action="store_true", help="driftline's detectors only")
    ap.add_argument("--propose-bounds", action="store_true",
                    help="with --ci: print CI_BOUNDS and CI_STATIONARY set just outside "
                         "this run's values, to paste when a change moves them on purpose")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default="", help="substring filter on scenario names")
    args = ap.parse_args(argv)
    runs, stat_n = args.runs, args.stationary
    river_n = 0 if args.no_river else args.river_stationary
    if args.quick:
        runs, stat_n, river_n = 8, 1_200_000, 0 if args.no_river else 200_000
    emb_runs = runs if args.embedding_runs is None else args.embedding_runs
    emb_n = stat_n // 2 if args.embedding_stationary is None else args.embedding_stationary
    if args.ci:
        runs, emb_runs = CI_RUNS["runs"], CI_RUNS["embedding_runs"]
        stat_n, emb_n, river_n = CI_RUNS["stationary"], CI_RUNS["embedding_stationary"], 0
    with_river = not (args.ci or args.no_river)
    chunk = 300_000
    t0 = time.perf_counter()
    sel = [i for i, s in enumerate(SCENARIOS) if args.only in s.name]
    tasks_c = [(si, r, with_river) for si in sel
               for r in range(emb_runs if SCENARIOS[si].signal == "embedding" else runs)]
    tasks_s: list[tuple[str, int, int, bool]] = []
    signals = [s for s in STATIONARY if not args.only or any(
        SCENARIOS[i].signal == s for i in sel)]
    for sig in signals:
        # 384-d vectors cost far more to generate: fewer events.
        m = emb_n if sig == "embedding" else stat_n
        for k in range(math.ceil(m / chunk)):
            tasks_s.append((sig, k, min(chunk, m - k * chunk), k * chunk < river_n))
    total = len(tasks_c) + len(tasks_s)
    done = 0
    change: dict[int, list[dict[str, tuple[int | None, int, int]]]] = {i: [] for i in sel}
    stat: dict[str, dict[str, list[int]]] = {}
    ctx = mp.get_context("fork")
    with ctx.Pool(args.workers) as pool:
        for sig, res in pool.imap_unordered(stationary_task, tasks_s):
            for det, (fa, ev) in res.items():
                acc = stat.setdefault(sig, {}).setdefault(det, [0, 0])
                acc[0] += fa
                acc[1] += ev
            done += 1
            progress(done, total, t0)
        for si, res2 in pool.imap_unordered(change_task, tasks_c):
            change[si].append(res2)
            done += 1
            progress(done, total, t0)

    print("# Stationary streams: false alarms per 1M events per signal (target ≤ 1 for driftline)")
    print(f"{'signal':<16}{'detector':<13}{'events':>12}{'alarms':>8}{'FA/1M':>9}")
    for sig in signals:
        for det, (fa, ev) in stat.get(sig, {}).items():
            print(f"{sig:<16}{det:<13}{ev:>12,}{fa:>8}{fa / max(ev, 1) * 1e6:>9.2f}")
    print()
    print(f"# Changes at event {CHANGE:,} ({runs} runs each, embeddings {emb_runs}; miss = no "
          f"detection within {HORIZON:,}; gradual = linear ramp over {RAMP:,}); FA/1M before "
          "the change")
    print(f"{'scenario':<30}{'detector':<13}{'median':>8}{'p90':>8}{'miss':>7}{'FA/1M':>9}")
    ours_summary: dict[int, Summary] = {}
    for si in sel:
        sc = SCENARIOS[si]
        dets = list(change[si][0].keys()) if change[si] else []
        for det in dets:
            s = Summary.of([r[det] for r in change[si] if det in r])
            if det == "driftline":
                ours_summary[si] = s
            fa_m = s.false_alarms / max(s.events, 1) * 1e6
            print(f"{sc.name:<30}{det:<13}{_fmt(s.median):>8}{_fmt(s.p90):>8}"
                  f"{s.missed / max(s.runs, 1):>7.0%}{fa_m:>9.1f}")
    print(f"\n{total} tasks in {time.perf_counter() - t0:.0f} s on {args.workers} workers\n")
    ours_stat = {sig: (v["driftline"][0], v["driftline"][1]) for sig, v in stat.items()
                 if "driftline" in v}
    if args.propose_bounds:
        print(proposed_bounds(sel, ours_summary, ours_stat))
    gate = (ci_gate if args.ci else product_gate)(sel, ours_summary, ours_stat)
    print(gate.table())
    return gate.status()


if __name__ == "__main__":
    raise SystemExit(main())
