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
    assert stats.drift_events == len(events) >= 3
    assert {(e["model_id"], e["kind"]) for e in events} >= {
        ("support-bot", "behavior"), ("search-ranker", "embedding"), ("qa-assistant", "accuracy")}
    html = report.read_text()
    for model in ("support-bot", "search-ranker", "qa-assistant", "stable-model"):
        assert f">{model}<" in html
    # One marker per detection, and the injected drifts shaded.
    assert html.count("<g class='detection'>") == len(events)
    assert html.count(">injected</text>") >= len(scenario.drifts)
