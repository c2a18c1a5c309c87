"""One contract over every detector: update, reset, snapshot/restore, no NaN, clear errors.

Each case drives one signal's detectors through the monitor (the way the worker
and replay use them); the river-compatible classes get the river contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from driftline.detectors import (
    CUSUM,
    BernoulliCUSUM,
    Finding,
    InvalidValue,
    ModelMonitor,
    MonitorConfig,
    Observation,
)

from tests.detectors import streams

CFG = MonitorConfig(warmup=300, rate_min_events=30)


@dataclass
class Case:
    signal: str
    values: np.ndarray  # one row per event (vectors for embeddings)
    feed: Callable[[ModelMonitor, np.ndarray, int], list[Finding]]
    bad: list[tuple[dict[str, object], str]]  # Observation kwargs -> error match
    # The one detection of the seeded change (at half the stream): detector, event index.
    detection: tuple[str, int]


def _col(name: str) -> Callable[[ModelMonitor, np.ndarray, int], list[Finding]]:
    def feed(m: ModelMonitor, v: np.ndarray, start: int) -> list[Finding]:
        ids = [str(start + i) for i in range(v.shape[0])]
        return m.observe_columns(ids, start + np.arange(v.shape[0], dtype=np.float64),
                                 **{name: v})
    return feed


def _emb(m: ModelMonitor, v: np.ndarray, start: int) -> list[Finding]:
    ids = [str(start + i) for i in range(v.shape[0])]
    return m.observe_columns(ids, np.zeros(v.shape[0]), embeddings=v,
                             embedding_rows=np.arange(v.shape[0]))


def _labels(m: ModelMonitor, v: np.ndarray, start: int) -> list[Finding]:
    out: list[Finding] = []
    for i, x in enumerate(v.tolist()):
        out += m.observe_label(str(start + i), float(start + i), correct=bool(x))
    return out


CASES = {
    "latency": Case("latency", streams.latency(1, 3000, 1500, 1.0), _col("latency_ms"),
                    [({"latency_ms": -1.0}, "latency"), ({"latency_ms": math.nan}, "latency_ms"),
                     ({"latency_ms": math.inf}, "latency")], ("cusum_mean_up", 1525)),
    "output_length": Case("output_length", np.round(streams.latency(2, 3000, 1500, 0.0, 2.0)),
                          _col("output_tokens"), [({"output_tokens": -3}, "output_length")],
                          ("cusum_spread_up", 1540)),
    "refusal_rate": Case("refusal_rate", streams.outcomes(3, 6000, 0.1, 0.3, 3000),
                         _col("refusal"), [({"refusal": "yes"}, "refusal")],
                         ("bernoulli_cusum_up", 3167)),
    "negative_feedback_rate": Case(
        "negative_feedback_rate", -streams.outcomes(4, 6000, 0.2, 0.02, 3000),
        _col("feedback"), [({"feedback": 2}, "feedback")], ("bernoulli_cusum_down", 3124)),
    "error_rate": Case("error_rate", 1.0 - streams.outcomes(5, 6000, 0.1, 0.3, 3000),
                       _labels, [({"correct": 1.5}, "correct")], ("bernoulli_cusum_up", 3069)),
    "embedding": Case("embedding", streams.topics(6, 3000, 16, 0.3, 1500), _emb,
                      [({"embedding": np.full(16, np.nan, dtype=np.float32)}, "embedding"),
                       ({"embedding": np.zeros(4, dtype=np.float32)}, "embedding")],
                      ("distance_cusum_up", 1552)),
}


def _run(case: Case, chunks: list[int]) -> list[tuple[str, str, str]]:
    m = ModelMonitor("m", CFG)
    out: list[Finding] = []
    start = 0
    for size in chunks:
        out += case.feed(m, case.values[start: start + size], start)
        start += size
    out += case.feed(m, case.values[start:], start)
    return [(f.signal, f.detector, f.event_id) for f in out]


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_detects_its_change_once_and_rebaselines(case: Case) -> None:
    # Seeded: the one detection lands on a known event, 26-167 events after the change;
    # re-baselined after it, no second alarm on the same change.
    detector, at = case.detection
    assert _run(case, []) == [(case.signal, detector, str(at))]
    assert at > case.values.shape[0] // 2


def test_batching_does_not_change_detections(case: Case) -> None:
    assert _run(case, [1] * 50 + [7, 333, 1000]) == _run(case, [])


def test_snapshot_restore_continue_equals_uninterrupted(case: Case) -> None:
    whole = ModelMonitor("m", CFG)
    expected = case.feed(whole, case.values, 0)
    for cut in (150, 400, case.values.shape[0] // 2 + 10):
        m = ModelMonitor("m", CFG)
        got = case.feed(m, case.values[:cut], 0)
        m2 = ModelMonitor.restore(m.snapshot())
        assert m2.snapshot() == m.snapshot()
        got += case.feed(m2, case.values[cut:], cut)
        assert got == expected


def test_stats_are_finite_once_monitoring(case: Case) -> None:
    m = ModelMonitor("m", CFG)
    case.feed(m, case.values[: case.values.shape[0] // 2], 0)
    st = m.stats()[case.signal]
    assert st.phase == "monitoring"
    for v in (st.statistic, st.threshold, st.baseline, st.current):
        assert math.isfinite(v)
    assert 0 <= st.statistic < st.threshold


def test_bad_values_are_rejected_without_changing_state(case: Case) -> None:
    m = ModelMonitor("m", CFG)
    case.feed(m, case.values[:400], 0)
    before = m.snapshot()
    for kwargs, match in case.bad:
        obs = Observation("bad", 1.0, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(InvalidValue, match=match):
            m.observe_many([Observation("ok", 1.0, latency_ms=1.0), obs])
    assert m.snapshot() == before


def test_reset_by_deploy() -> None:
    m = ModelMonitor("m", CFG, model_version="v1")
    m.observe_columns([str(i) for i in range(400)], np.zeros(400),
                      latency_ms=streams.latency(9, 400))
    assert m.phase == "monitoring"
    m.deploy("v2")
    assert (m.phase, m.model_version, m.stats()["latency"].phase) == ("warmup", "v2", "warmup")


def test_a_late_notice_of_the_live_version_keeps_the_reference() -> None:
    """Kafka orders no two topics: the deploy notice of v1 can arrive after v1's
    interactions. It must not restart the warm-up (the example's worker, loaded, learned
    a new reference across the example's drift that way and never alarmed)."""
    m = ModelMonitor("m", CFG, model_version="v1")
    m.observe_columns([str(i) for i in range(400)], np.zeros(400),
                      latency_ms=streams.latency(9, 400))
    before = m.snapshot()
    m.deploy("v1")
    assert m.snapshot() == before and m.phase == "monitoring"
    m.deploy("v2")
    assert m.phase == "warmup"


def test_unknown_snapshot_version_is_rejected() -> None:
    data = bytearray(ModelMonitor("m", CFG).snapshot())
    data[4] = 9
    with pytest.raises(ValueError, match="unsupported monitor snapshot version 9"):
        ModelMonitor.restore(bytes(data))
    with pytest.raises(ValueError, match="not a driftline monitor snapshot"):
        ModelMonitor.restore(b"\x80\x04pickle")


@pytest.mark.parametrize("det", [CUSUM(), BernoulliCUSUM()])
def test_river_compatible_detectors(det: CUSUM | BernoulliCUSUM) -> None:
    clone = det.clone()
    assert not clone.drift_detected
    if isinstance(det, CUSUM):
        with pytest.raises(ValueError, match="finite"):
            det.update(math.nan)
        xs: list[float] = list(np.r_[np.zeros(200), np.full(100, 1.5)])
    else:
        xs = [False] * 200 + [True] * 100
    hits = [i for i, x in enumerate(xs) if (det.update(x) or det.drift_detected)]  # type: ignore[func-returns-value]
    assert hits and hits[0] >= 200
