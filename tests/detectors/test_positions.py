"""Seeded streams with the default configuration: exact detection positions and delays."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors import ModelMonitor

from tests.detectors import streams


def _findings(column: str, v: np.ndarray) -> list[tuple[str, int]]:
    m = ModelMonitor("m")
    ids = [str(i) for i in range(v.shape[0])]
    if column == "embeddings":
        out = m.observe_columns(ids, np.zeros(v.shape[0]), embeddings=v,
                                embedding_rows=np.arange(v.shape[0]))
    else:
        out = m.observe_columns(ids, np.zeros(v.shape[0]), **{column: v})
    return [(f.detector, int(f.event_id)) for f in out]


@pytest.mark.parametrize(("column", "values", "expected"), [
    # +1 SD in log-latency at 10,000: 44 events (theory: ~35 mean for this design).
    ("latency_ms", streams.latency(11, 12000, 10000, 1.0), [("cusum_mean_up", 10044)]),
    ("latency_ms", streams.latency(12, 12000, 10000, 0.5), [("cusum_mean_up", 10123)]),
    ("latency_ms", streams.latency(13, 12000, 10000, 0.0, 1.5), [("cusum_spread_up", 10047)]),
    # Errors 10% -> 20% at the 15,000th label: 199 labels.
    ("correct", 1.0 - streams.outcomes(14, 20000, 0.1, 0.2, 15000),
     [("bernoulli_cusum_up", 15199)]),
    ("refusal", streams.outcomes(15, 40000, 0.02, 0.04, 30000), [("bernoulli_cusum_up", 31204)]),
    # An unseen topic takes 10% of traffic at 6,000.
    ("embeddings", streams.topics(16, 8000, 64, 0.1, 6000), [("distance_cusum_up", 6098)]),
], ids=["latency+1sd", "latency+0.5sd", "spread*1.5", "accuracy90-80", "refusal2-4",
        "topic10pct"])
def test_detection_position(column: str, values: np.ndarray,
                            expected: list[tuple[str, int]]) -> None:
    assert _findings(column, values) == expected


def test_stationary_latency_stays_quiet() -> None:
    assert _findings("latency_ms", streams.latency(17, 300_000)) == []
