"""``driftline replay --report``: the report draws what the monitor saw, and drawing it does
not change a single detection."""

from __future__ import annotations

import itertools
import subprocess
import sys
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
    # One marker per detection, and the injected drifts shaded.
    assert html.count("<g class='detection'>") == len(events)
    assert html.count(">injected</text>") >= len(scenario.drifts)


def test_each_reference_is_drawn_only_where_it_was_in_force(tmp_path: Path) -> None:
    """A real replay's JSON summary: after a drift the old reference stays in force (and
    watching) while the new one is learned from the interactions after the detection; the
    new one, at the new level, takes over where the old one ends."""
    scenario = demo_scenario(4000, seed=7)
    files = to_files(scenario, tmp_path / "sim", progress=False)
    summary_path = tmp_path / "summary.json"
    replay.run(files["interactions"], tmp_path / "events.jsonl", files["feedback"],
               config=MonitorConfig(warmup=800), report_path=[summary_path],
               truth=scenario.truth())
    summary = orjson.loads(summary_path.read_bytes())
    assert summary["totals"]["missed"] == 0 and summary["totals"]["false_alarms"] == 0
    bot = summary["models"]["support-bot"]
    (det,) = [d for d in bot["detections"] if d["signal"] == "latency"]
    latency = bot["signals"]["latency"]
    first, *later = latency["baselines"]
    assert latency["warmups"][0][0] == 0 and latency["warmups"][0][1] == first["from"]
    assert det["x"] < first["to"] <= det["x"] + 800 + 50  # a warm-up later (+ one sample)
    assert not [w for w in latency["warmups"] if w[0] >= det["x"]]  # never unwatched
    assert later and later[0]["from"] == first["to"]
    assert later[0]["center"] > 1.3 * first["center"]  # latency x1.5: the new level
    assert first["low"] < first["center"] < first["high"]
    for model in summary["models"].values():
        for name, sig in model["signals"].items():
            spans = sorted([(b["from"], b["to"]) for b in sig["baselines"]]
                           + [tuple(w) for w in sig["warmups"]])
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert end <= start, (name, spans)  # a stretch has one reference at most


def test_fail_on_drift_is_a_ci_gate(tmp_path: Path) -> None:
    scenario = demo_scenario(2500, seed=3)
    files = to_files(scenario, tmp_path / "sim", progress=False)
    stable = tmp_path / "stable.jsonl"
    stable.write_bytes(b"".join(line for line in files["interactions"].read_bytes()
                                .splitlines(keepends=True) if b'"stable-model"' in line))
    cli = str(Path(sys.executable).with_name("driftline"))
    common = ["--warmup", "600", "--fail-on-drift"]
    drifted = subprocess.run([cli, "replay", "--input", str(files["interactions"]),
                              "--feedback", str(files["feedback"]), "--output",
                              str(tmp_path / "a.jsonl"), "--report", str(tmp_path / "a.json"),
                              *common], capture_output=True, text=True, timeout=300,
                             check=False)
    assert drifted.returncode == 1, drifted.stderr
    errors = [line for line in drifted.stderr.splitlines() if line.startswith("error:")]
    n = len((tmp_path / "a.jsonl").read_bytes().splitlines())
    assert errors == [f"error: drift found: {n} drift event(s) in {tmp_path / 'a.jsonl'} "
                      "(--fail-on-drift)"] and n >= 3
    assert orjson.loads((tmp_path / "a.json").read_bytes())["drift_found"] is True
    quiet = subprocess.run([cli, "replay", "--input", str(stable), "--output",
                            str(tmp_path / "b.jsonl"), *common], capture_output=True,
                           text=True, timeout=300, check=False)
    assert quiet.returncode == 0, quiet.stderr
    assert (tmp_path / "b.jsonl").read_bytes() == b""
