"""A version-1 monitor state record, written by the build before state version 2
(``tests/data/make_monitor_state_v1.py`` says how), read by this build: the README says
"this build reads version 1 too". It decodes, and the monitor continues from it to the
detections the old build made from the same state."""

from __future__ import annotations

from pathlib import Path

import orjson
from driftline.detectors import MonitorConfig
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.state_codec import STATE_VERSION, decode_state
from prometheus_client import CollectorRegistry

from tests.streams.monitor import state_v1_stream as stream
from tests.streams.monitor.states import state_of

DATA = Path(__file__).resolve().parents[2] / "data"
RECORD = (DATA / "monitor-state-v1.bin").read_bytes()
OLD_BUILD = orjson.loads((DATA / "monitor-state-v1.json").read_bytes())


def _processor(state: bytes | None) -> MonitorProcessor:
    return MonitorProcessor(
        interactions_topic=stream.TOPICS[0], feedback_topic=stream.TOPICS[1],
        updates_topic=stream.TOPICS[2], monitor_config=MonitorConfig(warmup=stream.WARMUP),
        metrics=Metrics(CollectorRegistry()), load_state=lambda _m: state,
        clock=lambda: 1_767_300_000.0)


def _run(proc: MonitorProcessor, recs: list[tuple[str, int, bytes, bytes]]) -> list[list[str]]:
    found = []
    for k in range(0, len(recs), 50):
        out = proc.process([Record(t, 0, off, key, value)
                            for t, off, key, value in recs[k:k + 50]])
        found += [[ev["signal"], ev["detector"], ev["trigger_event_id"]]
                  for _, ev in out.drift_events]
    out = proc.flush()
    return found + [[ev["signal"], ev["detector"], ev["trigger_event_id"]]
                    for _, ev in out.drift_events]


def test_a_version_1_state_record_decodes() -> None:
    assert RECORD[0] == 1 != STATE_VERSION  # the header's version byte
    st = decode_state(RECORD, partition=0)
    # The last record of each topic it had applied: interaction 399 and label 79.
    assert st.offsets == {stream.TOPICS[0]: stream.CUT - 1, stream.TOPICS[1]: 79}
    assert st.dim == ["v1", 16]
    mon = st.monitor
    assert (mon.model_id, mon.model_version, mon.phase) == (stream.MODEL, "v1", "monitoring")
    assert mon.config == MonitorConfig(warmup=stream.WARMUP)
    # The rates had not seen their 200 events yet; the rest had their references.
    assert {name: s.phase for name, s in mon.stats().items()} == {
        "latency": "monitoring", "output_length": "monitoring", "refusal_rate": "warmup",
        "negative_feedback_rate": "warmup", "error_rate": "warmup", "embedding": "monitoring"}
    assert st.blobs == {}  # version 1 stored nothing apart


def test_the_monitor_continues_from_it_as_the_old_build_did() -> None:
    before, after = stream.split()
    assert OLD_BUILD == {"before": [],
                         "after": [["latency", "cusum_spread_up", f"{stream.MODEL}-543"]]}
    proc = _processor(RECORD)
    # The records it already holds are skipped (at or below its offsets).
    assert _run(proc, before) == []
    assert proc.processed == 0
    assert _run(proc, after) == OLD_BUILD["after"]
    assert proc.processed == stream.TOTAL - stream.CUT
    # Its next checkpoint is a record of this build's version.
    assert state_of(proc, stream.MODEL)[0] == STATE_VERSION
