"""``driftline replay --report``: the report draws what the monitor saw, and drawing it does
not change a single detection."""

from __future__ import annotations

from pathlib import Path

import orjson
from driftline.detectors import MonitorConfig
from driftline.streams.offline import replay
from driftline.streams.offline.simulate import demo_scenario, to_files


def test_report_does_not_change_detections_and_marks_them(tmp_path: Path) -> None:
    scenario = demo_scenario(2500, seed=3)
    files = to_files(scenario, tmp_path / "sim", progress=False)
    config = MonitorConfig(warmup=600)
    plain, drawn = tmp_path / "plain.jsonl", tmp_path / "drawn.jsonl"
    report = tmp_path / "report.html"
    replay.run(files["interactions"], plain, files["feedback"], config=config)
    stats = replay.run(files["interactions"], drawn, files["feedback"], config=config,
                       report_path=report, truth=scenario.truth())
    assert drawn.read_bytes() == plain.read_bytes()
    events = [orjson.loads(line) for line in plain.read_bytes().splitlines()]
    # Each interaction's position in its model's stream (every drift starts at 1,500).
    position: dict[str, int] = {}
    seen: dict[str, int] = {}
    for line in files["interactions"].read_bytes().splitlines():
        doc = orjson.loads(line)
        position[doc["event_id"]] = seen.get(doc["model_id"], 0)
        seen[doc["model_id"]] = position[doc["event_id"]] + 1
    # Seeded and replayed offline: each injected drift found once, at a known event; no
    # false alarm (stable-model has none). The accuracy drift is found through delayed
    # labels: its trigger is the interaction whose label tipped the CUSUM.
    assert stats.drift_events == 3
    assert [(e["model_id"], e["kind"], e["signal"], e["detector"],
             position[e["trigger_event_id"]]) for e in events] == [
        ("support-bot", "behavior", "latency", "cusum_mean_up", 1521),
        ("search-ranker", "embedding", "embedding", "distance_cusum_up", 1546),
        ("qa-assistant", "accuracy", "error_rate", "bernoulli_cusum_up", 2058)]
    assert [d.start for d in scenario.drifts] == [1500, 1500, 1500]
    html = report.read_text()
    for model in ("support-bot", "search-ranker", "qa-assistant", "stable-model"):
        assert f">{model}<" in html
    # One marker per detection, and each injected drift shaded once.
    assert html.count("<g class='detection'>") == 3
    assert html.count(">injected</text>") == len(scenario.drifts) == 3
