"""Adding a signal is one module and one catalogue entry: the toy signal of
``tests/detectors/toy_signal.py``, registered, flows from the interactions' field to a
drift event and to the /metrics gauges and counters, with no other change."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from driftline.detectors import MonitorConfig, catalogue
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.gauges import ModelGauges
from driftline.streams.monitor.processor import MonitorProcessor
from prometheus_client import CollectorRegistry

from tests.detectors.toy_signal import INPUT_LENGTH

T0 = 1_767_225_600.0
SHIFT_AT = 400


@pytest.fixture
def toy() -> Iterator[None]:
    catalogue.register(INPUT_LENGTH)
    try:
        yield
    finally:
        catalogue.unregister(INPUT_LENGTH.name)


def _records(n: int) -> list[Record]:
    """Interactions whose latency and output length stay put while the prompts double in
    length from ``SHIFT_AT`` on."""
    rng = np.random.default_rng(4)
    out = []
    for i in range(n):
        scale = 2.0 if i >= SHIFT_AT else 1.0
        doc = {"event_id": f"m1-{i}", "model_id": "m1", "ts": T0 + i,
               "latency_ms": round(float(rng.lognormal(math.log(500.0), 0.3)), 3),
               "output_tokens": int(rng.lognormal(math.log(150), 0.5)),
               "input_tokens": int(rng.lognormal(math.log(400 * scale), 0.4))}
        out.append(Record("t.interactions", 0, i, b"m1", orjson.dumps(doc)))
    return out


def test_a_registered_signal_flows_to_a_drift_event_and_a_metric(toy: None) -> None:
    reg = CollectorRegistry()
    metrics = Metrics(reg)
    proc = MonitorProcessor(interactions_topic="t.interactions", feedback_topic="t.feedback",
                            updates_topic="t.model-updates",
                            monitor_config=MonitorConfig(warmup=200), metrics=metrics,
                            clock=lambda: T0 + 10_000)
    ModelGauges(proc, metrics).mark(["m1"])
    assert "input_tokens" in proc.fields  # its column, from the catalogue
    events = []
    records = _records(800)
    for k in range(0, len(records), 100):
        events += proc.process(records[k:k + 100]).drift_events
    events += proc.flush().drift_events
    toy_events = [ev for _, ev in events if ev["signal"] == "input_length"]
    assert [ev["signal"] for _, ev in events] == ["input_length"]  # nothing else moved
    [ev] = toy_events
    assert ev["kind"] == "behavior" and ev["model_id"] == "m1"
    assert int(ev["trigger_event_id"].rsplit("-", 1)[1]) >= SHIFT_AT
    assert ev["current"] > ev["baseline"]
    labels = {"model": "m1", "kind": "behavior", "signal": "input_length"}
    assert reg.get_sample_value("driftline_drift_events_total",
                                {**labels, "detector": ev["detector"]}) == 1.0
    # A scrape reads its detector through the registered collector.
    assert reg.get_sample_value("driftline_detector_threshold", labels) > 0
    # The prompts' median length went from ~400 tokens to ~800: the gauge's current value
    # (an EWMA, in the catalogue's units) shows it.
    assert 600 < reg.get_sample_value("driftline_signal_current", labels) < 1000


def test_without_the_entry_the_field_is_not_read() -> None:
    assert "input_tokens" not in catalogue.columns()
