"""Calibration: configured against realized run length, 1e4 to 1e9 events between false alarms.

For each target (events between false alarms per detector) the thresholds come from
``driftline.detectors.calibration`` as a monitor computes them: for a reference *estimated*
from a warm-up of ``--warmup`` values, averaged over the warm-up's estimation error. The
realized run length is measured the way a fleet of freshly warmed-up monitors meets it:
every repetition draws a new reference (``--warmup`` independent values), builds the
detector's increment table from it exactly as ``ScalarSignal`` does, and runs the CUSUM over
fresh in-control values in a compiled loop, restarting after each alarm. The same fleets
are then computed exactly (a reference is its gaps' probabilities; each one's run length
from the Markov chain), 400 references a row at any target. The Bernoulli
detector's run length at the true rate is exact (the skip-free recursion) for every count
its warm-up can draw, averaged with the count's binomial probability, so 1e9 costs
nothing there.

A second table prices each budget in detection delay (median over seeded runs, whole
monitors on ``streams.offline.traffic``), which is how the default was chosen.

    .venv/bin/python bench/calibration.py              # 1e4..1e9 (~25 min on 2 cores)
    .venv/bin/python bench/calibration.py --quick      # 1e4..1e7, fewer repetitions
    .venv/bin/python bench/calibration.py --adwin      # ADWIN(delta) false alarms per value

Target (judged on the exact rows and the Bernoulli rows; the alarm loop, with 24
references a row, says "off" where its references, not the thresholds, put it outside):
the realized run length is at least the configured one at every target (the lower end of
its 95% interval at most 20% below it) and at most 3x above it (the 20% margin, the
quadrature's safety and, for the Bernoulli grid, whole steps of the threshold).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import multiprocessing as mp
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numba
import numpy as np
from driftline.detectors import ModelMonitor, MonitorConfig, calibration
from driftline.detectors.cusum import SCALE, bernoulli_design
from driftline.detectors.monitor import CALIBRATION_MARGIN
from driftline.detectors.scores import NormalScores, mean_shape, spread_shape
from driftline.streams.offline import traffic
from driftline.streams.offline.traffic import Case, Shift

sys.path.insert(0, str(Path(__file__).resolve().parent))
from progress import progress

SHAPES = {"mean +0.5 sd": mean_shape(0.5), "spread x1.5": spread_shape(1.5),
          "spread x0.67": spread_shape(1 / 1.5)}


@numba.njit(cache=True)
def _run_cusum(ref: np.ndarray, table: np.ndarray, h: int, events: int, seed: int) -> int:
    """Alarms of one CUSUM (increments ``table[column(x)]``, BY_RANK) over ``events`` fresh
    N(0, 1) values, restarting at 0 after each alarm: the readable reference of
    :func:`_run_cusum_alias`, which the tests compare it with."""
    np.random.seed(seed)
    n = ref.shape[0] - 1
    s = 0
    alarms = 0
    for _ in range(events):
        v = np.random.standard_normal()
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if ref[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        c = 2 * lo + (1 if ref[lo] == v else 0)
        s += table[c]
        if s < 0:
            s = 0
        if s >= h:
            alarms += 1
            s = 0
    return alarms


def interval_increments(ref: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The increment a fresh N(0, 1) value adds, by the gap of the reference it falls in,
    and the probability of each gap: a value below the k-th reference value and above the
    one before has rank column ``2k`` (a tie has probability 0)."""
    from scipy.special import ndtr

    edges = np.concatenate([[-np.inf], ref[:-1], [np.inf]])  # (ref ends with +inf)
    prob = np.diff(ndtr(edges))
    return table[0:2 * prob.shape[0]:2].copy(), prob / prob.sum()


def alias_table(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction): one uniform draws from ``prob``."""
    n = prob.shape[0]
    scaled = prob * n
    keep = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        keep[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return keep, alias


@numba.njit(cache=True)
def _run_cusum_alias(keep: np.ndarray, alias: np.ndarray, inc: np.ndarray, h: int,
                     events: int, seed: int) -> int:
    """:func:`_run_cusum` with each value's gap of the reference drawn from the gaps'
    probabilities (an alias table) instead of ranking a normal draw: the same distribution
    of increments at ~12 ns a value, so that 1e9 events between false alarms can be met
    tens of times. Uniforms from xoshiro256+ (its top 53 bits), seeded by splitmix64."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    z = np.uint64(seed)
    st = np.empty(4, np.uint64)
    for j in range(4):
        z = z + golden
        x = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        st[j] = x ^ (x >> np.uint64(31))
    s0, s1, s2, s3 = st[0], st[1], st[2], st[3]
    n = keep.shape[0]
    s = 0
    alarms = 0
    for _ in range(events):
        r = s0 + s3
        t = s1 << np.uint64(17)
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = (s3 << np.uint64(45)) | (s3 >> np.uint64(19))
        u = float(r >> np.uint64(11)) * (n / 9007199254740992.0)
        i = int(u)
        k = i if u - i < keep[i] else alias[i]
        s += inc[k]
        if s < 0:
            s = 0
        if s >= h:
            alarms += 1
            s = 0
    return alarms


def _scalar_job(args: tuple[str, float, int, int, int]) -> tuple[str, float, int, int]:
    name, arl, warmup, events, seed = args
    rng = np.random.default_rng(seed)
    scores = NormalScores(rng.standard_normal(warmup))
    shape = SHAPES[name]
    # As a monitor sets it: the budget less its calibration margin.
    h = calibration.normal_cusum_threshold(shape, CALIBRATION_MARGIN / arl, warmup)
    table = np.ascontiguousarray(scores.table(shape)[None, :][0])
    inc, prob = interval_increments(scores.ext, table)
    keep, alias = alias_table(prob)
    alarms = _run_cusum_alias(keep, alias, inc, int(h * SCALE), events, seed)
    return name, arl, alarms, events


def scalar_rows(targets: list[float], warmup: int, reps: int, pool: mp.pool.Pool
                ) -> list[str]:
    jobs = []
    for name in SHAPES:
        for arl in targets:
            # ~60 expected alarms at the configured rate, spread over the repetitions.
            per = int(max(60 * arl / reps, 200_000))
            jobs += [(name, arl, warmup, per, 1000 * i + int(math.log10(arl)))
                     for i in range(reps)]
    # The longest first, so that the two workers finish together; progress on stderr.
    jobs.sort(key=lambda j: -j[3])
    res, t0 = [], time.perf_counter()
    for r in pool.imap_unordered(_scalar_job, jobs, chunksize=1):
        res.append(r)
        progress(len(res), len(jobs), t0)
    lines = []
    for name in SHAPES:
        for arl in targets:
            a = sum(r[2] for r in res if r[0] == name and r[1] == arl)
            n = sum(r[3] for r in res if r[0] == name and r[1] == arl)
            lines.append(_row(name, arl, a, n))
    return lines


def _row(name: str, arl: float, alarms: int, events: int) -> str:
    """A row of the alarm loop. Its interval counts the alarms' noise only, not which
    references were drawn (a few of 24 make most of the alarms at 1e8): outside the
    target it says "off", and the exact rows, over 400 references, judge."""
    realized = events / max(alarms, 1)
    lo = events / (alarms + 1.96 * math.sqrt(alarms) + 2) if alarms else events / 3.0
    ok = lo >= 0.8 * arl and realized <= 3.0 * arl
    return (f"{name:24s} {arl:8.0e} {events:14,d} {alarms:7d} {realized:12.3g} "
            f"{lo:12.3g} {realized / arl:7.2f}  {'ok' if ok else 'off'}")


def gap_cdf(inc: np.ndarray, prob: np.ndarray) -> Any:
    """The distribution function of an increment that is ``inc[k]`` with probability
    ``prob[k]`` (log-likelihood units)."""
    order = np.argsort(inc)
    values, cum = inc[order], np.cumsum(prob[order])

    def cdf(t: np.ndarray) -> np.ndarray:
        i = np.searchsorted(values, t, "right")
        return np.where(i > 0, cum[np.maximum(i - 1, 0)], 0.0)

    return cdf


FLEET_STATES = 2000  # the chain's cells when judging thresholds (finer than theirs)


def fleet_rate(shape: tuple[float, float, float], h: float, warmup: int, refs: int,
               seed: int) -> tuple[float, float]:
    """False alarms per value of a fleet of ``refs`` freshly warmed-up references, and
    the standard error of that mean, exactly for each reference.

    For continuous values the probabilities of a reference's ``warmup + 1`` gaps are
    Dirichlet(1, ..., 1) whatever the distribution, and each gap's increment is fixed by
    its rank (the normal score of a half rank, as ``NormalScores`` gives it), so a
    reference is its gap probabilities; its run length is the Markov chain's on that
    discrete increment (``calibration.chain_arl``). The same fleet the alarm loop above
    samples, at no cost per event: 1e9 is as cheap as 1e4."""
    scores = NormalScores(np.random.default_rng(0).standard_normal(warmup))
    c2, c1, c0 = shape
    inc = (c2 * scores.z**2 + c1 * scores.z + c0)[0::2]  # gap k: rank column 2k
    rng = np.random.default_rng(seed)
    rates = np.empty(refs)
    for r in range(refs):
        gaps = rng.exponential(size=warmup + 1)
        rates[r] = 1.0 / calibration.chain_arl(gap_cdf(inc, gaps / gaps.sum()), h,
                                               states=FLEET_STATES)
    return float(rates.mean()), float(rates.std(ddof=1) / math.sqrt(refs))


def _fleet_job(args: tuple[str, float, int, int]) -> str:
    name, arl, warmup, refs = args
    shape = SHAPES[name]
    h = calibration.normal_cusum_threshold(shape, CALIBRATION_MARGIN / arl, warmup)
    rate, se = fleet_rate(shape, h, warmup, refs, seed=int(math.log10(arl)))
    realized, lo = 1.0 / rate, 1.0 / (rate + 1.96 * se)
    ok = lo >= 0.8 * arl and realized <= 3.0 * arl
    return (f"{name:24s} {arl:8.0e} {f'({refs} refs)':>14s} {'-':>7s} {realized:12.3g} "
            f"{lo:12.3g} {realized / arl:7.2f}  {'ok' if ok else 'MISSED'}")


def fleet_rows(targets: list[float], warmup: int, refs: int, pool: mp.pool.Pool
               ) -> list[str]:
    """:func:`fleet_rate` rows for every shape and target (the same table's columns)."""
    return pool.map(_fleet_job, [(name, arl, warmup, refs) for name in SHAPES
                                 for arl in targets], chunksize=1)


def bernoulli_rows(targets: list[float], warmup_events: int) -> list[str]:
    """Up-CUSUM from p0 = 0.1 to 0.2, its reference rate from a warm-up of
    ``warmup_events`` expected events: the false-alarm rate at the true rate, exact for
    every count the warm-up can draw (7 standard errors either side), averaged with the
    count's binomial probability."""
    from scipy.stats import binom

    p_true = 0.1
    n = int(warmup_events / p_true)
    sd = math.sqrt(n * p_true * (1 - p_true))
    ks = np.arange(max(1, int(n * p_true - 7 * sd)), int(n * p_true + 7 * sd) + 1)
    weights = binom.pmf(ks, n, p_true)
    lines = []
    for arl in targets:
        rate = 0.0
        for k, q in zip(ks.tolist(), weights.tolist(), strict=True):
            p0 = k / n
            a, unit = bernoulli_design(p0, 2.0)
            h = calibration.bernoulli_threshold(a, unit, p0, float(k),
                                                CALIBRATION_MARGIN / arl, True)
            with np.errstate(all="ignore"):
                run = calibration.bernoulli_arls(a, p_true, h, True)[h - 1]
            rate += q * (1.0 / run if run > 0 and math.isfinite(run) else 0.0)
        realized = 1.0 / max(rate, 1e-300)
        ok = 0.8 * arl <= realized <= 3.0 * arl
        lines.append(f"{'bernoulli 10% -> 20%':24s} {arl:8.0e} {'(exact)':>14s} {'-':>7s} "
                     f"{realized:12.3g} {'-':>12s} {realized / arl:7.2f}  "
                     f"{'ok' if ok else 'MISSED'}")
    return lines


# -- budget versus delay ---------------------------------------------------------------------
DELAY_SHIFTS = {
    "latency +1 sd": Shift("latency", "mean", 1.0, 20_000),
    "latency +0.5 sd": Shift("latency", "mean", 0.5, 20_000),
    "error 10% -> 20%": Shift("error_rate", "rate", 0.2, 20_000),
    "refusal 2% -> 4%": Shift("refusal_rate", "rate", 0.04, 20_000),
}


def _delay_job(args: tuple[float, str, int]) -> tuple[float, str, int | None]:
    fa, name, seed = args
    sh = DELAY_SHIFTS[name]
    case = Case("iid", "iid", shift=sh)
    n = sh.start + 12_000
    cols = traffic.generate(case, n, seed)
    mon = ModelMonitor("m", replace(MonitorConfig(), target_false_alarm_rate=fa))
    ids = [str(i) for i in range(n)]
    for a in range(0, n, 500):
        for f in mon.observe_columns(ids[a:a + 500], cols.ts[a:a + 500], **cols.chunk(a, a + 500)):
            if f.signal == sh.signal and int(f.event_id) >= sh.start:
                return fa, name, int(f.event_id) - sh.start
    return fa, name, None


def delay_rows(budgets: list[float], seeds: int, pool: mp.pool.Pool) -> list[str]:
    res = pool.map(_delay_job, [(b, n, s) for b in budgets for n in DELAY_SHIFTS
                                for s in range(seeds)], chunksize=1)
    lines = [f"{'events between false alarms':>28s} " + "".join(f"{n:>18s}" for n in DELAY_SHIFTS)
             + "   fleet of 100 models at 10/s (6e8 events a week, 6 signals)"]
    for b in budgets:
        cells = []
        for n in DELAY_SHIFTS:
            d = [x for fa, nm, x in res if fa == b and nm == n and x is not None]
            cells.append(f"{np.median(d):18.0f}" if d else f"{'missed':>18s}")
        week = 100 * 10 * 86400 * 7 * 6 * b
        lines.append(f"{1 / b:28.0e} " + "".join(cells) + f"   {week:,.1f} false alarms a week")
    return lines


def adwin_rows(n: int, pool: mp.pool.Pool) -> list[str]:
    deltas = [0.002, 0.01, 0.05, 0.2, 0.5, 0.9]
    res = pool.map(_adwin_job, [(d, s, n) for d in deltas for s in range(4)], chunksize=1)
    return [f"ADWIN(delta={d}): {sum(k for dd, k in res if dd == d)} alarms in {4 * n:,} "
            f"N(0, 1) values = {sum(k for dd, k in res if dd == d) / (4 * n):.3g} a value"
            for d in deltas]


def _adwin_job(args: tuple[float, int, int]) -> tuple[float, int]:
    from river import drift

    delta, seed, n = args
    x = np.random.default_rng(seed).standard_normal(n).tolist()
    det, k = drift.ADWIN(delta=delta), 0
    for v in x:
        det.update(v)
        k += det.drift_detected
    return delta, k


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1e4..1e7 and fewer repetitions")
    ap.add_argument("--warmup", type=int, default=MonitorConfig().warmup)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--adwin", action="store_true", help="measure ADWIN's false alarms only")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers) as pool:
        if args.adwin:
            for line in adwin_rows(2_500_000, pool):
                print(line)
            return 0
        targets = [1e4, 1e5, 1e6, 1e7] if args.quick else [1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
        reps = 8 if args.quick else 24
        print(f"configured against realized run length (events between false alarms of one "
              f"detector), references from a warm-up of {args.warmup:,}, {reps} references "
              "a row")
        print(f"{'detector':24s} {'target':>8s} {'events':>14s} {'alarms':>7s} "
              f"{'realized':>12s} {'95% low':>12s} {'ratio':>7s}  target: realized >= 0.8x, "
              "<= 3x")
        lines = scalar_rows(targets, args.warmup, reps, pool)
        lines += bernoulli_rows(targets, 200)
        for line in lines:
            print(line)
        refs = 100 if args.quick else 400
        print()
        print(f"the same fleets exactly: {refs} references a row, each reference's run "
              "length from the Markov chain of its gaps (1e9 costs what 1e4 does); the "
              "95% low end from the references' spread")
        fleet = fleet_rows([1e4, 1e5, 1e6, 1e7, 1e8, 1e9], args.warmup, refs, pool)
        for line in fleet:
            print(line)
        lines += fleet
        print()
        print("what each budget costs in delay (events after the shift, median of "
              f"{6 if args.quick else 20} runs; i.i.d. traffic, whole monitors)")
        budgets = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]
        for line in delay_rows(budgets, 6 if args.quick else 20, pool):
            print(line)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 1 if any("MISSED" in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
