"""river's ADWIN and Page-Hinkley as a signal's detector, through the monitor's own config.

The stream is seeded lognormal latency (log-SD 0.5) with a +1 SD step at event 5,000, fed
as columns the way the worker feeds a batch; warm-up 2,000, the default budget.
"""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors import Finding, ModelMonitor, MonitorConfig, state
from driftline.detectors.river_detectors import (
    ADWIN_FALSE_ALARMS,
    RiverSignal,
    adwin_delta,
    page_hinkley_threshold,
)
from driftline.detectors.scalar import ScalarSignal
from driftline.streams.offline import traffic
from river import drift

CHANGE = 5000
DETECTORS = ["adwin", "page_hinkley"]


def latency(seed: int, n: int, change: int = CHANGE) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal(n)
    z[change:] += 1.0
    return np.exp(5.0 + 0.5 * z)


def feed(m: ModelMonitor, x: np.ndarray, a: int, b: int) -> list[Finding]:
    return m.observe_columns([f"e{i}" for i in range(a, b)],
                             1000.0 + np.arange(a, b, dtype=np.float64), latency_ms=x[a:b])


def monitor(detector: str) -> ModelMonitor:
    return ModelMonitor("m", MonitorConfig(detectors=f"latency={detector}"))


@pytest.mark.parametrize("detector", DETECTORS)
def test_the_config_builds_the_river_detector_for_that_signal_only(detector: str) -> None:
    m = monitor(detector)
    lat, out = m.signals["latency"], m.signals["output_length"]
    assert isinstance(lat, RiverSignal) and lat.detector == detector
    assert type(out) is ScalarSignal
    feed(m, latency(0, 2000), 0, 2000)
    assert [d.name for d in lat.dets] == [detector]
    expect = drift.ADWIN if detector == "adwin" else drift.PageHinkley
    assert isinstance(lat._river, expect)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("detector", DETECTORS)
def test_a_one_sd_shift_is_detected_once(detector: str, seed: int) -> None:
    m = monitor(detector)
    x = latency(seed, 9000)
    assert feed(m, x, 0, CHANGE) == []
    found = feed(m, x, CHANGE, 9000)
    assert [(f.signal, f.detector, f.kind) for f in found] == [("latency", detector, "behavior")]
    delay = int(found[0].event_id[1:]) - CHANGE
    assert 0 <= delay < 100  # (measured: 31-71 at these seeds)
    assert found[0].baseline == pytest.approx(np.exp(5.0), rel=0.03)
    assert found[0].current > found[0].baseline


@pytest.mark.parametrize("detector", DETECTORS)
def test_no_alarm_on_prewhitened_ar1_latency(detector: str) -> None:
    # An AR(1) of 0.6 alarms an i.i.d.-calibrated detector constantly; prewhitened, the
    # river detectors see nearly independent scores and stay within the budget.
    cols = traffic.generate(traffic.Case("ar", "latency_ar", (("rho", 0.6),)), 30_000, seed=4)
    m = monitor(detector)
    found = m.observe_columns([f"e{i}" for i in range(30_000)], cols.ts,
                              latency_ms=cols.latency_ms)
    assert found == []
    assert m.signals["latency"].phase == "monitoring"


def _same_findings(got: list[Finding], expect: list[Finding]) -> None:
    """Equal, but for the ``current`` EWMA (and the severity read from it): a batch cut
    at another place sums its weights in another order (~1e-9 relative)."""
    def key(f: Finding) -> tuple[object, ...]:
        return (f.kind, f.signal, f.detector, f.baseline, f.event_id, f.ts, f.model_version)
    assert [key(f) for f in got] == [key(f) for f in expect]
    for g, e in zip(got, expect, strict=True):
        assert g.current == pytest.approx(e.current, rel=1e-8)
        assert g.severity == pytest.approx(e.severity, rel=1e-8)


def _same_state(a: ModelMonitor, b: ModelMonitor) -> None:
    fa, fb = state.decode(a.snapshot()), state.decode(b.snapshot())
    assert fa.keys() == fb.keys()
    for k, v in fa.items():
        if k.endswith(".ewma"):
            assert v == pytest.approx(fb[k], rel=1e-8, nan_ok=True), k
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":  # (sums: the last bit)
            np.testing.assert_allclose(v, fb[k], rtol=1e-12, err_msg=k)
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, fb[k], err_msg=k)  # (ADWIN's buckets too)
        else:
            assert v == fb[k], k


def _split_run(detector: str, x: np.ndarray, cuts: tuple[int, ...]
               ) -> tuple[ModelMonitor, list[Finding]]:
    m, got, start = monitor(detector), [], 0
    for cut in (*cuts, x.shape[0]):
        got += feed(m, x, start, cut)
        if cut < x.shape[0]:
            m = ModelMonitor.restore(m.snapshot())
        start = cut
    return m, got


# The step is found at e5039 (ADWIN) and e5033 (Page-Hinkley) on this stream.
@pytest.mark.parametrize("cuts", [(1999,), (3000,), (CHANGE + 20,), (CHANGE + 300,),
                                  (2500, 5030, 7000)])
@pytest.mark.parametrize("detector", DETECTORS)
def test_snapshot_and_restore_continue_identically(detector: str, cuts: tuple[int, ...]) -> None:
    x = latency(1, 9000)
    whole = monitor(detector)
    expect = feed(whole, x, 0, 9000)
    assert [f.event_id for f in expect] == ["e5039" if detector == "adwin" else "e5033"]
    m, got = _split_run(detector, x, cuts)
    _same_findings(got, expect)
    _same_state(m, whole)


# At the end of the warm-up, and right after the alarm (the detector just made anew).
@pytest.mark.parametrize(("detector", "cut"), [("adwin", 2000), ("adwin", 5040),
                                               ("page_hinkley", 2000), ("page_hinkley", 5034)])
def test_a_restore_right_after_a_fresh_start_continues_identically(detector: str,
                                                                  cut: int) -> None:
    x = latency(1, 9000)
    whole = monitor(detector)
    expect = feed(whole, x, 0, 9000)
    m, got = _split_run(detector, x, (cut,))
    _same_findings(got, expect)
    _same_state(m, whole)


def test_adwin_delta_meets_the_measured_false_alarm_rates() -> None:
    for delta, fa in ADWIN_FALSE_ALARMS:
        assert adwin_delta(fa) == pytest.approx(delta, rel=1e-9)
    # Between the points: log-log interpolation; beyond them: the end segments, capped.
    mid = adwin_delta(1e-5)
    assert 0.01 < mid < 0.05
    assert adwin_delta(6.0e-8) == pytest.approx(0.002 * 0.1 ** (np.log(0.01 / 0.002) /
                                                                 np.log(3.4e-6 / 6.0e-7)),
                                                rel=1e-6)
    assert adwin_delta(0.01) == 0.99
    rates = np.logspace(-9, -3, 20)
    assert np.all(np.diff([adwin_delta(float(r)) for r in rates]) > 0)


def test_page_hinkley_threshold_grows_as_the_budget_shrinks() -> None:
    hs = [page_hinkley_threshold(fa, 0.25, 2000) for fa in (1e-4, 1e-5, 1e-6)]
    assert hs[0] < hs[1] < hs[2]
    # Each step of 10x in the budget costs about ln(10) / (2 * 0.25) in a CUSUM of z - 0.25.
    assert hs[2] - hs[1] == pytest.approx(np.log(10) / 0.5, rel=0.15)


def test_bad_detector_choices_are_refused() -> None:
    with pytest.raises(ValueError, match=r"detectors: 'latency=kswin' is not <signal>=<detector>"):
        MonitorConfig(detectors="latency=kswin")
    with pytest.raises(ValueError, match=r"detectors: 'refusal_rate=adwin' is not"):
        MonitorConfig(detectors="refusal_rate=adwin")
    with pytest.raises(ValueError, match=r"detectors: 'latency' is not"):
        MonitorConfig(detectors="latency")
    with pytest.raises(ValueError, match="unknown river detector 'cusum'"):
        RiverSignal("cusum", "latency", 1e-6, 2000)
    config = MonitorConfig(detectors=" latency = adwin , output_length=page_hinkley ")
    assert config.detector_choices() == {"latency": "adwin", "output_length": "page_hinkley"}
