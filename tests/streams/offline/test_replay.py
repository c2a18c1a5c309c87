"""Offline replay: validation like the worker's, feedback merged by ts, deterministic events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from driftline.detectors import ModelMonitor, MonitorConfig, Observation
from driftline.streams.ingest import contract as schema
from driftline.streams.offline import replay

CFG = MonitorConfig(warmup=300, rate_min_events=30)
N = 4000
CHANGE = 2500


def _write(tmp: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    lines: list[bytes] = []
    labels: list[bytes] = []
    for i in range(N):
        model = "chat-a" if i % 2 == 0 else "chat-b"
        shift = 0.8 if (model == "chat-a" and i >= CHANGE) else 0.0
        doc = {"event_id": f"{model}-{i}", "model_id": model, "ts": 1000.0 + i,
               "latency_ms": float(np.exp(5 + 0.5 * (rng.standard_normal() + shift))),
               "output_tokens": int(rng.poisson(100)),
               "embedding": rng.standard_normal(8).round(4).tolist()}
        if model == "chat-b":
            doc["model_version"] = "v1"
            p_err = 0.4 if i >= CHANGE else 0.1
            labels.append(orjson.dumps({"event_id": doc["event_id"], "model_id": model,
                                        "ts": 1000.0 + i + 30.5,
                                        "correct": bool(rng.random() >= p_err)}))
        lines.append(orjson.dumps(doc))
    lines.insert(100, b"{not json")
    lines.insert(200, b'{"event_id":"x","model_id":"chat-a","ts":1,"latency_ms":-5}')
    lines.insert(300, b'{"event_id":"y","model_id":"chat-a","ts":1,'
                      b'"embedding":[1,2,3,4,5,6,7,8,9]}')
    lines.insert(400, b'{"event_id":"z","model_id":"chat a","ts":1}')
    lines.insert(500, b'{"event_id":"r","model_id":"chat-a","ts":"2024-01-01T00:00:00Z"}')
    labels.append(b'{"event_id":"q","model_id":"chat-b","ts":5}')
    inp, fb = tmp / "in.jsonl", tmp / "fb.jsonl"
    inp.write_bytes(b"\n".join(lines) + b"\n\n")
    fb.write_bytes(b"\n".join(labels) + b"\n")
    return inp, fb


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write(tmp_path_factory.mktemp("replay"))


def test_replay_counts_and_events(files: tuple[Path, Path], tmp_path: Path) -> None:
    inp, fb = files
    out = tmp_path / "drift.jsonl"
    seen: list[int] = []
    stats = replay.run(inp, out, feedback_path=fb, config=CFG, progress=seen.append)
    assert (stats.lines, stats.interactions, stats.feedback) == (N + 5 + N // 2 + 1, N + 1, N // 2)
    assert stats.invalid_reasons == {"bad_json": 1, "bad_value": 1, "embedding_dim_changed": 1,
                                     "bad_model_id": 1, "missing_field": 1}
    assert stats.models == 2 and seen and seen[-1] == stats.lines
    events = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert stats.drift_events == len(events)
    got = [(e["model_id"], e["signal"], e["detector"], e["trigger_event_id"]) for e in events]
    assert got == [("chat-a", "latency", "cusum_mean_up", "chat-a-2594"),
                   ("chat-b", "error_rate", "bernoulli_cusum_up", "chat-b-2629")]
    for e in events:
        assert set(e) >= {"schema_version", "drift_id", "model_id", "model_version", "kind",
                          "signal", "detector", "trigger_event_id", "detected_at", "baseline",
                          "current", "severity"}
    assert events[1]["model_version"] == "v1" and events[1]["kind"] == "accuracy"
    # Same input, same ids.
    out2 = tmp_path / "again.jsonl"
    replay.run(inp, out2, feedback_path=fb, config=CFG)
    assert out2.read_bytes() == out.read_bytes()


def test_replay_equals_the_monitor_fed_directly(files: tuple[Path, Path], tmp_path: Path) -> None:
    inp, _ = files
    out = tmp_path / "drift.jsonl"
    replay.run(inp, out, config=CFG)
    monitors: dict[str, ModelMonitor] = {}
    expected = []
    for line in inp.read_bytes().splitlines():
        try:
            it = schema.parse_interaction(line)
        except schema.InvalidEvent:
            continue
        if it.obs.embedding is not None and it.obs.embedding.shape[0] != 8:
            continue
        m = monitors.setdefault(it.model_id, ModelMonitor(it.model_id, CFG))
        for f in m.observe(it.obs):
            expected.append((it.model_id, f.signal, f.event_id))
    got = [(e["model_id"], e["signal"], e["trigger_event_id"])
           for e in map(orjson.loads, out.read_bytes().splitlines())]
    assert got == expected


def test_fast_path_accepts_only_what_the_schema_accepts() -> None:
    ids: dict[str, bool] = {}
    samples = [
        {"event_id": "a", "model_id": "m", "ts": 1},
        {"event_id": "a", "model_id": "m", "ts": 1, "schema_version": True},
        {"event_id": "a", "model_id": "m", "ts": True},
        {"event_id": "a", "model_id": "m", "ts": 1, "latency_ms": True},
        {"event_id": "a", "model_id": "m", "ts": 1, "output_tokens": 1.5},
        {"event_id": "a", "model_id": "m", "ts": 1, "feedback": 2},
        {"event_id": "a", "model_id": "m", "ts": 1, "refusal": 1},
        {"event_id": "", "model_id": "m", "ts": 1},
        {"event_id": "a", "model_id": "m", "ts": 1, "embedding": [True] + [1.0] * 8},
        {"event_id": "a", "model_id": "m", "ts": 1, "metadata": []},
        {"event_id": "a", "model_id": "m" * 129, "ts": 1},
    ]
    chunk = replay._fast_chunk([*samples, None, [1]], ids)
    for doc, fast in zip(samples, chunk.ok.tolist(), strict=False):
        try:
            schema.parse_interaction(orjson.dumps(doc))
            valid = True
        except schema.InvalidEvent:
            valid = False
        assert not fast or valid, doc
    assert chunk.ok.tolist() == [True] + [False] * 12


def test_labels_reach_the_monitor_like_observe_label() -> None:
    m = ModelMonitor("m", CFG)
    m.observe(Observation("e1", 1.0, latency_ms=5.0))
    assert m.observe_label("e1", 2.0, correct=False, feedback=-1) == []
    assert m.stats()["error_rate"].current == 1.0
