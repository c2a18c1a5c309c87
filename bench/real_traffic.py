"""Detection on production-shaped traffic: false alarms on benign streams, delays of real shifts.

Every case is a seeded stream of ``driftline.streams.offline.traffic`` — autocorrelated,
seasonal, overdispersed, heavy-tailed, mixes that move and return, two real series from
the river wheel — run through whole model monitors the way the worker and ``driftline
replay`` run them (columns in runs of 500). A benign case counts false alarms per signal;
a shifted case injects a real change and measures the delay to the first alarm on that
signal (later than the horizon: missed). Side by side: today's detectors (the i.i.d.
calibration, ``MonitorConfig.independent()``), driftline's default, and river's ADWIN and
Page-Hinkley on latency and output length (``DRIFTLINE_DETECTORS``) with thresholds from
the same budget. Cycles: driftline's monitors are seeded with two periods of history
(``ModelMonitor.learn_history``), the weekly case with a weekly profile configured.

    .venv/bin/python bench/real_traffic.py            # the full suite (~30 min on 2 cores)
    .venv/bin/python bench/real_traffic.py --quick    # fewer events and seeds (~10 min)
    .venv/bin/python bench/real_traffic.py --ci       # CI's gate (~1 min): regression bounds

Targets (issue 17): every benign case within 2x the configured budget per signal (judged
at 95% confidence: a handful of alarms cannot show a rate); i.i.d. delays within 1.25x of
today's; AR(1) rho=0.6 +1 sd latency median delay <= 250; the 4,000-event ramp to +1 sd
median <= 600 — below what any test can do at a 1e-6 budget (the log-likelihood a ramp
of slope 1/4000 sd has gathered after t events is t^3 / (6 * 4000^2), which reaches
log(1e6) only at t ~ 1,100), so it is printed as missed. ``--ci`` checks regression bounds
just outside the values measured on the commit that set them (``--ci --propose-bounds``).
The exit status is the gate's: non-zero when a target was missed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import multiprocessing as mp
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
from driftline.detectors import ModelMonitor, MonitorConfig
from driftline.streams.offline import traffic
from driftline.streams.offline.traffic import Case, Shift
from gate import Gate
from progress import progress

RUN = 500  # interactions per call, as a caught-up worker feeds them
WARMUP = MonitorConfig().warmup
# river's detectors watch the scalar signals (rates and embeddings keep driftline's).
RIVER_SIGNALS = ("latency", "output_length")
# Backgrounds with a cycle: driftline's monitors are seeded with two periods of history
# before them (``ModelMonitor.learn_history``), as a deploy seeded from the store or a
# topic's retained history is; the weekly one is run with a weekly profile configured.
SEASONAL = {"latency_daily": 86_400.0, "latency_ar_daily": 86_400.0,
            "latency_weekly": 7 * 86_400.0}
WEEKLY_BINS = 168  # (hours of a week; DRIFTLINE_SEASON_BINS)


def configs() -> dict[str, MonitorConfig]:
    def river(kind: str) -> str:
        return ",".join(f"{s}={kind}" for s in RIVER_SIGNALS)

    return {"today": MonitorConfig.independent(), "driftline": MonitorConfig(),
            "adwin": MonitorConfig(detectors=river("adwin")),
            "page_hinkley": MonitorConfig(detectors=river("page_hinkley"))}


def config_for(name: str, case: Case) -> MonitorConfig:
    cfg = configs()[name]
    period = SEASONAL.get(case.background)
    if period is not None and cfg.season_period_s > 0 and period != cfg.season_period_s:
        cfg = replace(cfg, season_period_s=period, season_bins=WEEKLY_BINS)
    return cfg


def watched(name: str, case: Case) -> bool:
    """Whether ``name`` is run on ``case``: river's detectors only where they watch the
    signal that matters (the shifted one; a benign background of latency or length)."""
    if name not in ("adwin", "page_hinkley"):
        return True
    if case.shift is not None:
        return case.shift.signal in RIVER_SIGNALS
    return case.background.startswith(("latency", "timeouts", "template", "water", "sp500"))


@dataclass(frozen=True)
class Job:
    config: str
    case: Case
    seed: int
    events: int


def history_events(name: str, case: Case) -> int:
    """Interactions of history a monitor is seeded with before the run (two periods)."""
    period = SEASONAL.get(case.background)
    if period is None or config_for(name, case).season_period_s <= 0:
        return 0
    return int(2 * period * case.rate)


def run_one(job: Job) -> tuple[str, str, int, Counter[str], dict[str, int]]:
    """Alarms per signal (before the shift, if any) and the first alarm index per signal at
    or after the shift start."""
    cfg = config_for(job.config, job.case)
    h = history_events(job.config, job.case)
    case = job.case
    if h and case.shift is not None:
        case = case.with_shift(replace(case.shift, start=case.shift.start + h))
    cols = traffic.generate(case, h + job.events, job.seed)
    mon = ModelMonitor("m", cfg)
    if h:
        past = cols.chunk(0, h)
        mon.learn_history(cols.ts[:h], **{k: v for k, v in past.items()
                                          if k not in ("embeddings", "embedding_rows")})
    ids = [str(i) for i in range(job.events)]
    start = job.case.shift.start if job.case.shift else job.events
    before: Counter[str] = Counter()
    first: dict[str, int] = {}
    for a in range(0, job.events, RUN):
        b = min(a + RUN, job.events)
        for f in mon.observe_columns(ids[a:b], cols.ts[h + a:h + b], **cols.chunk(h + a, h + b)):
            i = int(f.event_id)
            if job.config in ("adwin", "page_hinkley") and f.signal not in RIVER_SIGNALS:
                continue  # (driftline's own detectors there: counted in its column)
            if i < start:
                before[f.signal] += 1
            else:
                first.setdefault(f.signal, i - start)
    return job.config, job.case.name, job.seed, before, first


Result = tuple[str, str, int, Counter[str], dict[str, int]]


def _pool_map(jobs: list[Job], workers: int) -> list[Result]:
    t0 = time.perf_counter()
    out: list[Result] = []
    if workers <= 1:
        for j in jobs:
            out.append(run_one(j))
            progress(len(out), len(jobs), t0)
        return out
    with mp.get_context("fork").Pool(workers) as pool:
        for r in pool.imap(run_one, jobs, chunksize=1):
            out.append(r)
            progress(len(out), len(jobs), t0)
    return out


SHIFTS = {
    "latency +1 sd": Shift("latency", "mean", 1.0, 0),
    "latency +0.5 sd": Shift("latency", "mean", 0.5, 0),
    "latency spread x1.5": Shift("latency", "spread", 1.5, 0),
    "latency ramp +1 sd over 4,000": Shift("latency", "mean", 1.0, 0, ramp=4000),
    "error rate 10% -> 20%": Shift("error_rate", "rate", 0.20, 0),
    "refusal 2% -> 4%": Shift("refusal_rate", "rate", 0.04, 0),
    "output length +0.5 sd": Shift("output_length", "mean", 0.5, 0),
    "new embedding topic 10%": Shift("embedding", "topic", 0.10, 0),
}
# (background case, shift) pairs: every shift on i.i.d. data, and each on backgrounds of
# its own signal.
PAIRS = [
    ("i.i.d. control", s) for s in SHIFTS
] + [
    ("latency AR(1) rho=0.6", "latency +1 sd"),
    ("latency AR(1) rho=0.6", "latency ramp +1 sd over 4,000"),
    ("latency AR(1) rho=0.9", "latency +1 sd"),
    ("latency daily cycle 0.5 sd", "latency +1 sd"),
    ("latency t3 tails + 0.1% outliers", "latency +1 sd"),
    ("0.5% timeouts at 8x latency", "latency +1 sd"),
    ("real: water flow (river), latency", "latency +1 sd"),
    ("real: S&P 500 returns (river), latency", "latency spread x1.5"),
    ("error rate by session (CV 25%)", "error rate 10% -> 20%"),
    ("refusal rate by block of 1,000 (CV 30%)", "refusal 2% -> 4%"),
    ("prompt templates, share drifts and returns", "output length +0.5 sd"),
    ("embedding topic shares drift and return", "new embedding topic 10%"),
]
SHIFT_AT = 20_000
HORIZON = 8_000


def shift_cases() -> list[Case]:
    by_name = {c.name: c for c in traffic.BENIGN}
    out = []
    for bg, sname in PAIRS:
        s = replace(SHIFTS[sname], start=SHIFT_AT)
        out.append(by_name[bg].with_shift(s, f"{bg} | {sname}"))
    return out


def _fa_counts(results: list[Result], cfg: str, case: str) -> Counter[str]:
    tot: Counter[str] = Counter()
    for c, name, _, before, _ in results:
        if c == cfg and name == case:
            tot.update(before)
    return tot


def benign_table(results: list[Result], cases: list[Case], events: int, seeds: int,
                 names: list[str]) -> list[str]:
    """False alarms per 1M events (all signals, and the worst one), and the worst signal's
    false alarms per model per day at the case's rate (driftline)."""
    n = seeds * (events - WARMUP)
    lines = [f"{'benign case':44s} {'rate/s':>7s}  " + "  ".join(
        f"{c:>22s}" for c in names) + "   worst signal (driftline)"]
    for case in cases:
        row = f"{case.name:44s} {case.rate:7.3g}  "
        worst = ""
        for cfg in names:
            if not watched(cfg, case):
                row += f"{'':>22s}  "
                continue
            tot = _fa_counts(results, cfg, case.name)
            worst_sig, worst_n = max(tot.items(), key=lambda kv: kv[1], default=("-", 0))
            row += f"{sum(tot.values()) / n * 1e6:10.1f} ({worst_n / n * 1e6:7.1f} max)  "
            if cfg == "driftline":
                per_day = worst_n / n * case.rate * 86400
                worst = f"{worst_sig} {worst_n / n * 1e6:.1f}/1M, {per_day:.3f}/model/day"
        lines.append(row + " " + worst)
    return lines


def _delays(results: list[Result], cfg: str, case: Case) -> list[int | None]:
    sig = case.shift.signal  # type: ignore[union-attr]
    return [first.get(sig) for c, name, _, _, first in results
            if c == cfg and name == case.name]


def _summary(delays: list[int | None]) -> tuple[float | None, float | None, float]:
    hit = np.array([d for d in delays if d is not None and d < HORIZON], dtype=float)
    miss = 1.0 - hit.size / max(len(delays), 1)
    if not hit.size:
        return None, None, miss
    return float(np.median(hit)), float(np.percentile(hit, 90)), miss


def shift_table(results: list[Result], cases: list[Case], names: list[str]) -> list[str]:
    lines = [f"{'case | shift':76s} " + "  ".join(f"{c + ' median/p90/miss':>28s}"
                                                 for c in names)]
    for case in cases:
        row = f"{case.name:76s} "
        for cfg in names:
            if not watched(cfg, case):
                row += f"{'':>28s}  "
                continue
            med, p90, miss = _summary(_delays(results, cfg, case))
            if med is not None:
                row += f"{med:10.0f} {p90:7.0f} {miss:7.0%}    "
            else:
                row += f"{'-':>10s} {'-':>7s} {miss:7.0%}    "
        lines.append(row)
    return lines


# -- targets ---------------------------------------------------------------------------
FA_FACTOR = 2.0  # benign: within 2x the configured budget per signal
IID_DELAY_FACTOR = 1.25  # i.i.d. delays within 1.25x of today's
AR_DELAY = 250.0  # AR(1) rho=0.6, +1 sd latency: median delay
RAMP_DELAY = 600.0  # the 4,000-event ramp to +1 sd: median delay
TARGET_CASES = {"latency AR(1) rho=0.6 | latency +1 sd": AR_DELAY,
                "i.i.d. control | latency ramp +1 sd over 4,000": RAMP_DELAY}


def _poisson_low(k: int, conf: float = 0.95) -> float:
    """The lower end of a one-sided ``conf`` interval for a Poisson mean seen as ``k``."""
    if k == 0:
        return 0.0
    from scipy.stats import chi2  # river depends on scipy

    return float(chi2.ppf(1.0 - conf, 2 * k) / 2.0)


def product_gate(results: list[Result], benign: list[Case], shifted: list[Case],
                 events: int, seeds: int) -> Gate:
    """Issue 17's targets. A benign signal misses when its rate is above twice the budget
    with 95% confidence (a count of a few alarms cannot show more)."""
    g = Gate("production-shaped traffic, driftline vs the targets")
    budget = MonitorConfig().target_false_alarm_rate
    n = seeds * (events - WARMUP)
    for case in benign:
        tot = _fa_counts(results, "driftline", case.name)
        sig, k = max(tot.items(), key=lambda kv: kv[1], default=("-", 0))
        g.check(f"{case.name}: worst signal false alarms per 1M (95% low)",
                _poisson_low(k) / n * 1e6, "<=", FA_FACTOR * budget * 1e6,
                note=f"{sig}: {k} in {n:,} events, {k / n * 1e6:.1f}/1M")
    by = {c.name: c for c in shifted}
    for case in shifted:
        if case.name.startswith("i.i.d. control |"):
            ours = _summary(_delays(results, "driftline", case))[0]
            today = _summary(_delays(results, "today", case))[0]
            g.check(f"{case.name}: median delay", ours, "<=",
                    IID_DELAY_FACTOR * today if today is not None else math.nan,
                    note=f"{IID_DELAY_FACTOR}x today's {_fmt(today)}")
    for name, target in TARGET_CASES.items():
        if name in by:
            g.check(f"{name}: median delay",
                    _summary(_delays(results, "driftline", by[name]))[0], "<=", target)
    return g


# ``--ci``: a smaller seeded run, checked against regression bounds just outside the values
# it measured on the commit that last changed them (``--ci --propose-bounds`` prints them).
CI_RUN = {"seeds": 2, "events": 100_000, "shift_seeds": 6}
CI_CASES = ("i.i.d. control", "latency AR(1) rho=0.6", "latency AR(1) rho=0.9",
            "latency daily cycle 0.5 sd", "error rate by session (CV 25%)",
            "refusal rate by block of 1,000 (CV 30%)",
            "prompt templates, share drifts and returns",
            "real: S&P 500 returns (river), latency")
# case -> false alarms (all signals, all seeds); case | shift -> (median delay, missed runs)
CI_BENIGN: dict[str, int] = {
    "i.i.d. control": 1,
    "latency AR(1) rho=0.6": 1,
    "latency AR(1) rho=0.9": 1,
    "latency daily cycle 0.5 sd": 2,
    "error rate by session (CV 25%)": 3,
    "refusal rate by block of 1,000 (CV 30%)": 4,
    "prompt templates, share drifts and returns": 7,
    "real: S&P 500 returns (river), latency": 1,
}
CI_SHIFTS: dict[str, tuple[float, int]] = {
    "i.i.d. control | latency +1 sd": (36, 0),
    "i.i.d. control | latency +0.5 sd": (108, 0),
    "i.i.d. control | latency spread x1.5": (67, 0),
    "i.i.d. control | latency ramp +1 sd over 4,000": (1472, 0),
    "i.i.d. control | error rate 10% -> 20%": (701, 0),
    "i.i.d. control | refusal 2% -> 4%": (1670, 0),
    "i.i.d. control | output length +0.5 sd": (85, 0),
    "i.i.d. control | new embedding topic 10%": (154, 0),
    "latency AR(1) rho=0.6 | latency +1 sd": (86, 0),
    "latency AR(1) rho=0.6 | latency ramp +1 sd over 4,000": (2082, 0),
    "latency AR(1) rho=0.9 | latency +1 sd": (1275, 0),
    "latency daily cycle 0.5 sd | latency +1 sd": (40, 0),
    "real: S&P 500 returns (river), latency | latency spread x1.5": (634, 0),
    "error rate by session (CV 25%) | error rate 10% -> 20%": (805, 0),
    "refusal rate by block of 1,000 (CV 30%) | refusal 2% -> 4%": (1083, 1),
    "prompt templates, share drifts and returns | output length +0.5 sd": (1092, 0),
}


def ci_gate(results: list[Result], benign: list[Case], shifted: list[Case]) -> Gate:
    g = Gate("production-shaped traffic, driftline vs CI bounds (seeded, deterministic)")
    for case in benign:
        k = sum(_fa_counts(results, "driftline", case.name).values())
        b = CI_BENIGN.get(case.name)
        g.check(f"{case.name}: false alarms", k, "<=", math.nan if b is None else b)
    for case in shifted:
        med, _, miss = _summary(_delays(results, "driftline", case))
        runs = len(_delays(results, "driftline", case))
        bound = CI_SHIFTS.get(case.name)
        g.check(f"{case.name}: median delay", med, "<=",
                math.nan if bound is None else bound[0])
        g.check(f"{case.name}: missed runs", round(miss * runs), "<=",
                math.nan if bound is None else bound[1], note=f"of {runs}")
    return g


def proposed_bounds(results: list[Result], benign: list[Case], shifted: list[Case]) -> str:
    lines = ["CI_BENIGN: dict[str, int] = {"]
    for case in benign:
        k = sum(_fa_counts(results, "driftline", case.name).values())
        lines.append(f"    {case.name!r}: {k + 1},")
    lines += ["}", "CI_SHIFTS: dict[str, tuple[float, int]] = {"]
    for case in shifted:
        d = _delays(results, "driftline", case)
        med, _, miss = _summary(d)
        lines.append(f"    {case.name!r}: ({math.ceil(1.1 * (med or 0))}, "
                     f"{round(miss * len(d))}),")
    return "\n".join([*lines, "}"])


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events and seeds")
    ap.add_argument("--ci", action="store_true",
                    help="driftline and today's only, " + ", ".join(
                        f"{k} {v:,}" for k, v in CI_RUN.items())
                    + ", the CI cases; check the CI bounds")
    ap.add_argument("--propose-bounds", action="store_true",
                    help="with --ci: print CI_BENIGN and CI_SHIFTS just outside this run")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--events", type=int, default=None, help="events per benign run")
    ap.add_argument("--no-river", action="store_true", help="without river's columns")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default="", help="substring filter on case names")
    args = ap.parse_args(argv)
    if args.ci:
        seeds, events, shift_seeds = CI_RUN["seeds"], CI_RUN["events"], CI_RUN["shift_seeds"]
    else:
        seeds = args.seeds or (4 if args.quick else 12)
        events = args.events or (150_000 if args.quick else 600_000)
        shift_seeds = 10 if args.quick else 30
    names = list(configs())
    if args.ci or args.no_river:
        names = ["today", "driftline"]
    benign = [c for c in traffic.BENIGN if args.only in c.name
              and (not args.ci or c.name in CI_CASES)]
    shifted = [c for c in shift_cases() if args.only in c.name
               and (not args.ci or c.name.split(" | ")[0] in CI_CASES)]
    stress = [] if args.ci else [c for c in traffic.STRESS if args.only in c.name]
    jobs = [Job(cfg, c, s, events) for cfg in names for c in benign + stress
            for s in range(seeds) if watched(cfg, c)]
    jobs += [Job(cfg, c, 1000 + s, SHIFT_AT + HORIZON) for cfg in names for c in shifted
             for s in range(shift_seeds) if watched(cfg, c)]
    t0 = time.perf_counter()
    results = _pool_map(jobs, args.workers)
    budget = MonitorConfig().target_false_alarm_rate
    print(f"false alarms per 1M events on benign streams ({seeds} x {events:,} events a case; "
          f"budget {budget * 1e6:g} per 1M per signal; river's columns: latency and output "
          f"length only; cycles seeded with two periods of history)")
    for line in benign_table(results, benign, events, seeds, names):
        print(line)
    if stress:
        print("\nstress (benign by construction, but beyond what a warm-up can learn; "
              "reported, not gated)")
        for line in benign_table(results, stress, events, seeds, names)[1:]:
            print(line)
    print()
    print(f"delays (events after the shift at {SHIFT_AT:,}; missed: none within {HORIZON:,}), "
          f"{shift_seeds} runs a case")
    for line in shift_table(results, shifted, names):
        print(line)
    print(f"\n{len(jobs)} runs in {time.perf_counter() - t0:.0f} s\n")
    if args.ci and args.propose_bounds:
        print(proposed_bounds(results, benign, shifted))
        return 0
    gate = (ci_gate(results, benign, shifted) if args.ci
            else product_gate(results, benign, shifted, events, seeds))
    print(gate.table())
    return gate.status()


if __name__ == "__main__":
    sys.exit(main())
