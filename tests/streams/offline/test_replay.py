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


REJECTED_LINES = [
    {"event_id": "a", "model_id": "m", "ts": 1, "schema_version": True},
    {"event_id": "a", "model_id": "m", "ts": True},
    {"event_id": "a", "model_id": "m", "ts": 1e13},
    {"event_id": "a", "model_id": "m", "ts": 1, "latency_ms": True},
    {"event_id": "a", "model_id": "m", "ts": 1, "output_tokens": 1.5},
    {"event_id": "a", "model_id": "m", "ts": 1, "feedback": 2},
    {"event_id": "a", "model_id": "m", "ts": 1, "refusal": 1},
    {"event_id": "", "model_id": "m", "ts": 1},
    {"event_id": "a", "model_id": "m", "ts": 1, "embedding": [True] + [1.0] * 8},
    {"event_id": "a", "model_id": "m", "ts": 1, "embedding": [1.0] + [True] * 8},
    {"event_id": "a", "model_id": "m", "ts": 1, "metadata": []},
    {"event_id": "a", "model_id": "m" * 129, "ts": 1},
    {"event_id": "a", "model_id": "m1\n", "ts": 1},
    {"event_id": "a\u0000", "model_id": "m", "ts": 1},
    {"event_id": "a\u0007", "model_id": "m", "ts": 1},
    {"event_id": "a", "model_id": "m", "ts": 1, "metadata": {"k": "\u0000"}},
]


def test_rejected_lines_are_named_by_line_number_with_the_contracts_reason(
        tmp_path: Path) -> None:
    """Every line the contract refuses is refused by replay, with its reason and its line
    number (blank lines counted), and the valid lines around them are replayed."""
    good = {"event_id": "ok", "model_id": "m", "ts": 1}
    lines = [orjson.dumps(good)]
    for i, doc in enumerate(REJECTED_LINES):
        lines += [orjson.dumps(doc), b"", orjson.dumps(dict(good, event_id=f"ok{i}"))]
    lines += [b"{not json", b"[1]"]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    stats = replay.run(path, tmp_path / "out.jsonl", rejects_path=rejects)
    expected = []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            schema.parse_interaction(line)
        except schema.InvalidEvent as exc:
            expected.append({"file": str(path), "line": n, "reason": exc.reason,
                             "message": exc.message})
    got = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    assert got == expected
    assert len(got) == len(REJECTED_LINES) + 2
    assert stats.interactions == len(REJECTED_LINES) + 1
    assert stats.invalid == len(got)
    assert {r["reason"] for r in got} >= {"unknown_schema", "bad_type", "bad_value",
                                          "bad_embedding", "bad_model_id", "nul_character",
                                          "control_character", "bad_json", "not_object"}


def test_one_model_with_embedding_and_embedding_b64_lines_equals_arrays_only(
        tmp_path: Path) -> None:
    """A model whose vectors come partly as arrays and partly as base64 replays exactly
    like the same vectors all as arrays (it crashed: ``c.emb.count(None)``)."""
    import base64

    rng = np.random.default_rng(11)
    centers = rng.standard_normal((5, 16)).astype(np.float32)
    arrays, mixed = [], []
    for i in range(3000):
        # Four topics, then an unseen one: a shift the monitor must catch either way.
        center = centers[i % 4] if i < 2000 else centers[4]
        vec = center + 0.2 * rng.standard_normal(16).astype(np.float32)
        doc = {"event_id": f"e{i}", "model_id": "m", "ts": 1000.0 + i,
               "latency_ms": 100.0 + i % 7}
        arrays.append(orjson.dumps({**doc, "embedding": vec.tolist()}))
        mixed.append(orjson.dumps({**doc, "embedding_b64": base64.b64encode(
            vec.astype("<f4").tobytes()).decode()} if i % 3 else
            {**doc, "embedding": vec.tolist()}))
    out = {}
    for name, lines in (("arrays", arrays), ("mixed", mixed)):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        stats = replay.run(path, tmp_path / f"{name}.out", config=CFG)
        assert stats.interactions == 3000 and stats.invalid == 0
        out[name] = (tmp_path / f"{name}.out").read_bytes()
    assert out["mixed"] == out["arrays"]
    events = [orjson.loads(x) for x in out["mixed"].splitlines()]
    assert [(e["kind"], e["trigger_event_id"]) for e in events] == [("embedding", "e2011")]


def test_a_dimension_change_is_a_rejected_line(tmp_path: Path) -> None:
    lines = [orjson.dumps({"event_id": f"e{i}", "model_id": "m", "ts": i,
                           "embedding": [0.5] * (8 if i != 3 else 9)}) for i in range(6)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    stats = replay.run(path, tmp_path / "out.jsonl", rejects_path=rejects)
    got = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["reason"]) for r in got] == [(4, "embedding_dim_changed")]
    assert stats.interactions == 5


def test_labels_reach_the_monitor_like_observe_label() -> None:
    m = ModelMonitor("m", CFG)
    m.observe(Observation("e1", 1.0, latency_ms=5.0))
    assert m.observe_label("e1", 2.0, correct=False, feedback=-1) == []
    assert m.stats()["error_rate"].current == 1.0
