"""The compiled kernels against the readable definition they implement
(``cusum.reference_scan``): first alarm, statistic and run length, bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from driftline.detectors import kernels
from driftline.detectors.cusum import Cusum, reference_scan
from driftline.detectors.kernels import scan_many


def _bank(rng: np.random.Generator, k: int) -> list[Cusum]:
    dets = []
    for j in range(k):
        h = int(rng.integers(5, 400))
        s = int(rng.integers(0, h))
        dets.append(Cusum(f"d{j}", h, s=s, run=int(rng.integers(0, 50)) if s else 0))
    return dets


@pytest.mark.parametrize("seed", range(200))
def test_compiled_scan_equals_the_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    n = int(rng.integers(0, 120))
    # Drifts up, down or not at all; exact zeros on purpose (the statistic lands on 0).
    inc = rng.integers(-30, 30, size=(k, n)) + int(rng.integers(-8, 9))
    inc[rng.random((k, n)) < 0.1] = 0
    dets = _bank(rng, k)
    incs: np.ndarray | list[np.ndarray] = inc if seed % 2 else list(inc)
    compiled = scan_many(dets, incs)
    assert compiled == reference_scan(dets, inc.tolist())
    assert all(type(v) is int for row in compiled for v in row)  # (state stays plain ints)


def test_scan_refuses_float_increments() -> None:
    with pytest.raises(TypeError, match="integers"):
        scan_many([Cusum("d", 10)], [np.array([0.5, 2.0])])


def test_loop_scan_reports_the_first_alarm_and_the_run_since_zero() -> None:
    det = Cusum("up", h=10, s=3, run=4)
    # 3+2=5 (run 5), 5-7 -> 0 (run 0), 4 (1), 8 (2), 12 >= 10: alarm at index 4 (run 3)
    assert scan_many([det], [np.array([2, -7, 4, 4, 4, 100])]) == [(4, 12, 3)]
    # No alarm: the state at the end.
    assert scan_many([det], [np.array([1, 1])]) == [(-1, 5, 6)]


@pytest.mark.parametrize("n", [1, 2, 7, 200, 2001])
def test_reference_median_is_numpys(n: int) -> None:
    from driftline.detectors.scores import NormalScores

    rng = np.random.default_rng(n)
    ref = np.round(rng.lognormal(5.0, 0.5, n))  # ties on purpose
    assert NormalScores(ref).median() == float(np.median(ref))


def _first_alarm(scans: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    hits = [(sc[0], j) for j, sc in enumerate(scans) if sc[0] >= 0]
    return min(hits) if hits else None


@pytest.mark.parametrize("seed", range(300))
def test_table_scan_equals_scan_many_of_the_looked_up_increments(seed: int) -> None:
    from driftline.detectors.scores import NormalScores

    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    mode = seed % 3
    if mode == kernels.BY_EVENT:
        x = (rng.random(int(rng.integers(0, 150))) < rng.random()).astype(np.float64)
        cols = x > 0.5
        ref = np.full(1, np.inf)
        table = rng.integers(-20, 20, size=(k, 2))
    else:
        ref_vals = rng.normal(size=int(rng.integers(2, 60)))
        if mode == kernels.BY_RANK_TIES:
            ref_vals = np.round(ref_vals, 1)  # ties
            ref_vals[0] = ref_vals[-1]
        scores = NormalScores(ref_vals)
        assert scores.ties == (mode == kernels.BY_RANK_TIES)
        # Values on, between, below and above the reference's.
        x = np.concatenate([rng.choice(ref_vals, 30), rng.normal(size=60) * 1.5, [-9.0, 9.0]])
        rng.shuffle(x)
        cols = scores.positions(x)
        ref = scores.ext
        table = rng.integers(-20, 20, size=(k, 2 * ref_vals.shape[0] + 1))
    table = np.ascontiguousarray(table + int(rng.integers(-6, 7)), dtype=np.int64)
    dets = _bank(rng, k)

    fused = kernels.table_scan(dets, x, table, mode, ref)
    looked_up = scan_many(dets, table[:, cols.astype(np.int64)] if x.shape[0]
                          else np.zeros((k, 0), dtype=np.int64))
    first = _first_alarm(looked_up)
    assert _first_alarm(fused) == first
    if first is None:  # no alarm: every detector's state at the end
        assert fused == looked_up
    else:  # the alarm's statistic and run (the bank is dropped there)
        assert fused[first[1]] == looked_up[first[1]]
    assert all(type(v) is int for row in fused for v in row)


def test_table_scan_refuses_a_table_it_cannot_index() -> None:
    with pytest.raises(TypeError, match="int64"):
        kernels.table_scan([Cusum("d", 10)], np.zeros(2), np.zeros((1, 2)), kernels.BY_EVENT)


@pytest.mark.parametrize("seed", range(6))
def test_monitor_finds_the_same_drifts_however_a_run_is_cut(seed: int) -> None:
    """Every signal fed one cut of a stream or another (seasonal bins, refreshes and alarms
    cut runs too): the same findings and the same state after."""
    from driftline.detectors import ModelMonitor, MonitorConfig

    rng = np.random.default_rng(seed)
    n = 12_000
    shift = rng.integers(3000, 9000)
    up = np.arange(n) >= shift
    cols = {
        "latency_ms": rng.lognormal(5.0 + 0.3 * up * (seed % 2),
                                    0.4 * (1 + 0.6 * up * (seed % 3 == 2))),
        "output_tokens": np.round(rng.lognormal(5.0, 0.5, n)),  # ties in the reference
        "refusal": (rng.random(n) < 0.02 + 0.04 * up).astype(np.float64),
        "feedback": np.where(rng.random(n) < 0.3, rng.integers(-1, 2, n), np.nan),
        "correct": (rng.random(n) < 0.9 - 0.1 * up * (seed % 2 == 0)).astype(np.float64),
    }
    ids = [f"e{i}" for i in range(n)]
    ts = 1_767_225_600.0 + np.arange(n) * 5.0  # 17 hours: the profile's bins fill

    def run(cuts: np.ndarray) -> tuple[list[tuple[str, str, str]], list[tuple[int, ...]]]:
        m = ModelMonitor("m", MonitorConfig(warmup=500, target_false_alarm_rate=1e-4))
        found = []
        for a, b in itertools.pairwise(cuts.tolist()):
            found += m.observe_columns(ids[a:b], ts[a:b],
                                       **{c: v[a:b] for c, v in cols.items()})
        # The detectors' state after: exact (sums of history batches may differ in their
        # last bits with the cut; nothing the detectors decide on does).
        bank = [(d.s, d.run, d.h) for sig in m.signals.values() for d in sig.dets]
        return [(f.signal, f.detector, f.event_id) for f in found], bank

    whole = run(np.array([0, n]))
    assert run(np.unique(np.concatenate([[0, n], rng.integers(0, n, 40)]))) == whole
    assert run(np.append(np.arange(0, n, 7), n)) == whole
    assert any(int(e[1:]) >= shift for _, _, e in whole[0])  # (the stream has a drift)
