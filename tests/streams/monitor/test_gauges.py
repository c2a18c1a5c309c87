"""The per-model gauges follow the models this worker holds: a model that leaves (its
partition revoked, its monitor forgotten) takes its signal and segment series with it."""

from __future__ import annotations

import math

import numpy as np
import orjson
from driftline.detectors import MonitorConfig
from driftline.detectors.segments import SegmentPlan
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.gauges import ModelGauges
from driftline.streams.monitor.processor import MonitorProcessor
from prometheus_client import CollectorRegistry

T0 = 1_767_225_600.0
IT = "t.interactions"
SEGMENT_FAMILIES = ("driftline_segment_detector_statistic",
                    "driftline_segment_detector_threshold", "driftline_segment_signal_baseline",
                    "driftline_segment_signal_current",
                    "driftline_segment_monitors", "driftline_segment_values_tracked",
                    "driftline_segment_state_bytes")


def _records(models: dict[str, int], n: int) -> list[Record]:
    """``n`` interactions per model (model -> partition), two tenants each."""
    rng = np.random.default_rng(11)
    out = []
    for i in range(n):
        for model, part in models.items():
            doc = {"event_id": f"{model}-{i}", "model_id": model, "ts": T0 + i,
                   "latency_ms": round(float(rng.lognormal(math.log(300.0), 0.3)), 3),
                   "output_tokens": int(rng.integers(50, 400)),
                   "metadata": {"tenant": ("a", "b")[i % 2]}}
            out.append(Record(IT, part, i, model.encode(), orjson.dumps(doc)))
    return out


def _series(reg: CollectorRegistry, names: tuple[str, ...]) -> dict[str, set[str]]:
    """model -> the gauges of ``names`` with a sample for it."""
    out: dict[str, set[str]] = {}
    for family in reg.collect():
        for s in family.samples:
            if s.name in names:
                out.setdefault(s.labels["model"], set()).add(s.name)
    return out


def test_a_forgotten_model_loses_its_signal_and_segment_gauges() -> None:
    reg = CollectorRegistry()
    metrics = Metrics(reg)
    proc = MonitorProcessor(interactions_topic=IT, feedback_topic="t.feedback",
                            updates_topic="t.model-updates",
                            monitor_config=MonitorConfig(warmup=40), metrics=metrics,
                            segments=SegmentPlan.parse("metadata.tenant"),
                            clock=lambda: T0 + 10_000)
    gauges = ModelGauges(proc, metrics)
    proc.process(_records({"stay": 0, "go": 1}, 120))
    proc.flush()
    gauges.mark(proc.models)
    before = _series(reg, SEGMENT_FAMILIES)
    assert before == {"stay": set(SEGMENT_FAMILIES), "go": set(SEGMENT_FAMILIES)}
    assert reg.get_sample_value("driftline_segment_monitors", {"model": "go"}) >= 2
    assert set(_series(reg, ("driftline_detector_statistic",))) == {"stay", "go"}

    # The agent's revocation: mark the partition's models, then forget them.
    gauges.mark(m for m, st in proc.models.items() if st.partition == 1)
    proc.forget_partitions({1})
    assert sorted(proc.models) == ["stay"]
    assert _series(reg, SEGMENT_FAMILIES) == {"stay": set(SEGMENT_FAMILIES)}
    assert set(_series(reg, ("driftline_detector_statistic",))) == {"stay"}
