"""A small seeded version of ``bench/real_traffic.py``: production-shaped streams through
whole model monitors, driftline's default against the i.i.d. calibration it replaced.

The streams are seeded and the monitors deterministic, so the counts are exact; the bounds
sit at the issue's targets or just outside the values measured, and the i.i.d. calibration's
counts show each case is one that fooled it."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from driftline.detectors import ModelMonitor, MonitorConfig
from driftline.streams.offline import traffic
from driftline.streams.offline.traffic import Case, Shift

RUN = 500
CASES = {c.name: c for c in traffic.BENIGN}


def _run(case: Case, n: int, seed: int, cfg: MonitorConfig, history: int = 0
         ) -> list[tuple[str, int]]:
    """(signal, index) of every alarm; ``history`` interactions before the monitored ones
    seed the seasonal profiles."""
    if history and case.shift is not None:
        case = case.with_shift(replace(case.shift, start=case.shift.start + history))
    cols = traffic.generate(case, history + n, seed)
    mon = ModelMonitor("m", cfg)
    if history:
        past = cols.chunk(0, history)
        mon.learn_history(cols.ts[:history], latency_ms=past["latency_ms"],
                          output_tokens=past["output_tokens"])
    ids = [str(i) for i in range(n)]
    out = []
    for a in range(0, n, RUN):
        b = min(a + RUN, n)
        for f in mon.observe_columns(ids[a:b], cols.ts[history + a:history + b],
                                     **cols.chunk(history + a, history + b)):
            out.append((f.signal, int(f.event_id)))
    return out


def test_autocorrelated_latency_stays_within_budget_where_the_iid_calibration_does_not() -> None:
    case = CASES["latency AR(1) rho=0.6"]
    ours = Counter(s for s, _ in _run(case, 100_000, 3, MonitorConfig()))
    iid = Counter(s for s, _ in _run(case, 100_000, 3, MonitorConfig.independent()))
    # 1e-6 per signal: ~0.1 expected in 99,000 monitored events a signal.
    assert ours["latency"] <= 1
    assert iid["latency"] >= 10


def test_shift_on_autocorrelated_latency_is_found_within_250_events() -> None:
    case = CASES["latency AR(1) rho=0.6"].with_shift(Shift("latency", "mean", 1.0, 20_000))
    delays = []
    for seed in range(5):
        first = [i - 20_000 for s, i in _run(case, 28_000, 1000 + seed, MonitorConfig())
                 if s == "latency" and i >= 20_000]
        delays.append(first[0] if first else 8_000)
    assert float(np.median(delays)) <= 250  # (the i.i.d. calibration: ~1,000-1,300)
    assert max(delays) < 8_000


def test_error_sessions_are_priced_as_dispersion() -> None:
    case = CASES["error rate by session (CV 25%)"]
    ours = Counter(s for s, _ in _run(case, 100_000, 5, MonitorConfig()))
    iid = Counter(s for s, _ in _run(case, 100_000, 5, MonitorConfig.independent()))
    assert ours["error_rate"] <= 2
    assert iid["error_rate"] >= 3


def test_history_seeds_the_daily_profile_so_a_fresh_deploy_is_not_fooled_by_the_day() -> None:
    case = CASES["latency daily cycle 0.5 sd"]  # one interaction a second
    fresh = _run(case, 86_400, 8, MonitorConfig())
    seeded = _run(case, 86_400, 8, MonitorConfig(), history=2 * 86_400)
    assert seeded == []
    # Without history the first day's cycle is not yet a time of day: it alarms.
    assert len([a for a in fresh if a[0] == "latency"]) >= 1


def test_history_must_come_first_and_in_order() -> None:
    mon = ModelMonitor("m", MonitorConfig())
    ts = np.array([10.0, 5.0])
    with pytest.raises(ValueError, match="ascending"):
        mon.learn_history(ts, latency_ms=np.array([100.0, 120.0]))
    assert mon.learn_history(np.array([0.0, 1.0]), latency_ms=np.array([100.0, np.nan])) == 1
    mon.observe_columns(["a"], np.array([1000.0]), latency_ms=np.array([100.0]))
    with pytest.raises(ValueError, match="history must come before"):
        mon.learn_history(np.array([10.0]), latency_ms=np.array([100.0]))


def test_history_of_a_monitor_without_seasons_takes_nothing() -> None:
    mon = ModelMonitor("m", MonitorConfig.independent())
    assert mon.learn_history(np.array([0.0, 1.0]), latency_ms=np.array([1.0, 2.0])) == 0
