"""Write ``monitor-state-v1.bin`` and ``monitor-state-v1.json`` with the build that last
wrote version-1 monitor state records (the commit before 5b09367, which made them
version 2), for ``tests/streams/monitor/test_state_v1.py``::

    git worktree add --detach /tmp/v1tree 5b09367^
    PYTHONPATH=/tmp/v1tree .venv/bin/python tests/data/make_monitor_state_v1.py

That build's packages are the top-level ``streams`` and ``detectors`` (imported by name
below, as this tree's modules never do). The JSON holds what that build went on to
detect after the cut, from the same state.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location(
    "state_v1_stream", HERE.parent / "streams" / "monitor" / "state_v1_stream.py")
assert spec is not None and spec.loader is not None
stream = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stream)

old = importlib.import_module("streams.processor")
detectors = importlib.import_module("detectors")
metrics_mod = importlib.import_module("streams.metrics")
prometheus = importlib.import_module("prometheus_client")
assert old.STATE_VERSION == 1, old.STATE_VERSION


def processor(load_state=lambda _m: None):  # type: ignore[no-untyped-def]
    return old.MonitorProcessor(
        interactions_topic=stream.TOPICS[0], feedback_topic=stream.TOPICS[1],
        updates_topic=stream.TOPICS[2],
        monitor_config=detectors.MonitorConfig(warmup=stream.WARMUP),
        metrics=metrics_mod.Metrics(prometheus.CollectorRegistry()), load_state=load_state,
        clock=lambda: 1_767_300_000.0)


def run(proc, recs) -> list[list[str]]:  # type: ignore[no-untyped-def]
    found = []
    for k in range(0, len(recs), 50):
        batch = [old.Record(t, 0, off, key, value) for t, off, key, value in recs[k:k + 50]]
        out = proc.process(batch)
        found += [[ev["signal"], ev["detector"], ev["trigger_event_id"]]
                  for _, ev in out.drift_events]
    out = proc.flush()
    return found + [[ev["signal"], ev["detector"], ev["trigger_event_id"]]
                    for _, ev in out.drift_events]


before, after = stream.split()
first = processor()
found_before = run(first, before)
record = first.state_of(stream.MODEL)
assert record[0] == 1
restored = processor(lambda _m: record)
found_after = run(restored, after)
(HERE / "monitor-state-v1.bin").write_bytes(record)
(HERE / "monitor-state-v1.json").write_bytes(orjson.dumps(
    {"before": found_before, "after": found_after}, option=orjson.OPT_INDENT_2))
print(len(record), "bytes;", found_before, found_after)
