"""The simulator: seeded, valid against the contract, and the injected drift is really there."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from driftline.streams.ingest.contract import parse_feedback, parse_interaction
from driftline.streams.offline.simulate import (
    Drift,
    Message,
    ModelProfile,
    Scenario,
    _ModelStream,
    event_id,
    generate,
    to_files,
)

N = 3000
START = 1500
DIM = 128


def _scenario(seed: int = 7, fmt: str = "json", **kw: Any) -> Scenario:
    models = [ModelProfile("lat", embedding_dim=DIM),
              ModelProfile("emb", embedding_dim=DIM),
              ModelProfile("acc", embedding_dim=DIM, accuracy=0.9, label_delay=50),
              ModelProfile("calm", embedding_dim=DIM)]
    drifts = [Drift("lat", "latency", START, 1.5), Drift("emb", "embedding", START, 0.3),
              Drift("acc", "correct", START, 0.7)]
    return Scenario(models, kw.pop("events_per_model", N), drifts, seed=seed,
                    embedding_format=fmt, **kw)


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    return list(generate(_scenario()))


def _docs(messages: list[Message], model: str, topic: str = "interactions"
          ) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in messages if m.model_id == model and m.topic == topic]


def test_same_seed_same_bytes_other_seed_differs() -> None:
    def blob(seed: int) -> bytes:
        return b"".join(m.topic.encode() + m.key + m.value
                        for m in generate(_scenario(seed, events_per_model=300)))

    assert blob(7) == blob(7)
    assert blob(7) != blob(8)


def test_every_message_passes_the_contract(messages: list[Message]) -> None:
    n_int = n_fb = 0
    for m in messages:
        if m.topic == "interactions":
            it = parse_interaction(m.value, m.key)
            assert it.model_id == m.model_id
            assert it.obs.event_id == event_id(7, m.model_id, m.index)
            assert it.obs.embedding is not None and it.obs.embedding.shape == (DIM,)
            n_int += 1
        else:
            assert m.topic == "feedback"
            fb = parse_feedback(m.value, m.key)
            assert fb.model_id == m.model_id and fb.correct is not None
            n_fb += 1
    assert n_int == 4 * N
    # ~30% of interactions are labelled later (minus the last label_delay of each model).
    assert 0.27 * 4 * N < n_fb < 0.33 * 4 * N


def test_stream_order_and_timestamps(messages: list[Message]) -> None:
    ints = [m for m in messages if m.topic == "interactions"]
    # Models interleave: every round holds one interaction of each model, index ascending.
    for r in range(N):
        chunk = ints[4 * r: 4 * r + 4]
        assert sorted(m.model_id for m in chunk) == ["acc", "calm", "emb", "lat"]
        assert {m.index for m in chunk} == {r}
    ts = [orjson.loads(m.value)["ts"] for m in ints]
    sc = _scenario()
    assert ts[0] == sc.start_ts
    assert ts == sorted(ts)
    assert ts[-1] == pytest.approx(sc.start_ts + (4 * N - 1) / sc.rate, abs=1e-3)


def test_truth_points_at_the_interaction_at_start(messages: list[Message]) -> None:
    truth = _scenario().truth()
    assert [(t["model_id"], t["signal"], t["kind"], t["start"]) for t in truth] == [
        ("lat", "latency", "behavior", START), ("emb", "embedding", "embedding", START),
        ("acc", "correct", "accuracy", START)]
    for t in truth:
        docs = _docs(messages, t["model_id"])
        assert docs[t["start"]]["event_id"] == t["start_event_id"]
        assert t["magnitude"] in (1.5, 0.3, 0.7) and t["ramp"] == 0


def test_latency_drift_shifts_the_median_by_the_factor(messages: list[Message]) -> None:
    lat = [d["latency_ms"] for d in _docs(messages, "lat")]
    before, after = np.median(lat[:START]), np.median(lat[START:])
    assert before == pytest.approx(800.0, rel=0.05)
    assert after / before == pytest.approx(1.5, rel=0.05)
    # Log-spread unchanged (the factor moves the median only).
    sd_b, sd_a = np.std(np.log(lat[:START])), np.std(np.log(lat[START:]))
    assert sd_b == pytest.approx(0.35, rel=0.08) and sd_a == pytest.approx(0.35, rel=0.08)
    calm = [d["latency_ms"] for d in _docs(messages, "calm")]
    assert np.median(calm[START:]) / np.median(calm[:START]) == pytest.approx(1.0, abs=0.05)


def test_embedding_drift_sends_the_share_to_an_unseen_topic(messages: list[Message]) -> None:
    sc = _scenario()
    k = [p.model_id for p in sc.models].index("emb")
    # The model's topic centres are its stream's first draws: rebuild them.
    ref = _ModelStream(sc.models[k], [], np.random.default_rng([sc.seed, k])).centres[:-1]
    vecs = np.array([d["embedding"] for d in _docs(messages, "emb")], dtype=np.float32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    nearest = (vecs @ ref.T).max(axis=1)
    far = nearest < 0.45
    assert far[:START].mean() == 0.0
    assert far[START:].mean() == pytest.approx(0.3, abs=0.03)
    # In-topic traffic sits clearly closer: cosine ~ 1/sqrt(1 + 0.9^2) = 0.74.
    assert np.median(nearest[:START]) == pytest.approx(1 / math.sqrt(1.81), abs=0.03)


def _labels(messages: list[Message], model: str) -> dict[int, bool]:
    """Every label of the model's interactions, inline or delayed, by interaction index."""
    index = {event_id(7, model, i): i for i in range(N)}
    out: dict[int, bool] = {}
    for d in _docs(messages, model):
        if "correct" in d:
            out[index[d["event_id"]]] = d["correct"]
    for d in _docs(messages, model, "feedback"):
        i = index[d["event_id"]]
        assert i not in out  # a label comes inline or later, never both
        out[i] = d["correct"]
    return out


def test_accuracy_drift_lowers_label_accuracy(messages: list[Message]) -> None:
    labels = _labels(messages, "acc")
    before = [c for i, c in labels.items() if i < START]
    after = [c for i, c in labels.items() if i >= START]
    assert len(before) == pytest.approx(0.8 * START, rel=0.05)
    assert np.mean(before) == pytest.approx(0.9, abs=0.025)
    assert np.mean(after) == pytest.approx(0.7, abs=0.03)
    calm = _labels(messages, "calm")
    assert np.mean([c for i, c in calm.items() if i >= START]) == pytest.approx(0.9, abs=0.025)


@pytest.mark.parametrize(("model", "delay"), [("acc", 50), ("calm", 200)])
def test_delayed_labels_arrive_label_delay_interactions_later(
        messages: list[Message], model: str, delay: int) -> None:
    index = {event_id(7, model, i): i for i in range(N)}
    last_ts: dict[int, float] = {}
    delays = []
    prev: Message | None = None
    for m in messages:
        if m.model_id != model:
            if m.topic == "interactions":
                prev = None
            continue
        doc = orjson.loads(m.value)
        if m.topic == "interactions":
            last_ts[m.index] = doc["ts"]
            prev = m
            continue
        # Right after the model's interaction number index + delay, with its timestamp.
        assert prev is not None and prev.index == m.index
        delays.append(m.index - index[doc["event_id"]])
        assert doc["ts"] == last_ts[m.index]
    assert delays and set(delays) == {delay}
    # Labels due after the stream's end are never sent.
    assert max(index[orjson.loads(m.value)["event_id"]] for m in messages
               if m.model_id == model and m.topic == "feedback") < N - delay


def test_ramped_drift_reaches_the_factor_gradually() -> None:
    d = Drift("m", "latency", 100, 2.0, ramp=50)
    assert [d.weight(i) for i in (99, 100, 124, 149, 150, 10_000)] == [
        0.0, 1 / 50, 25 / 50, 1.0, 1.0, 1.0]
    assert Drift("m", "latency", 100, 2.0).weight(100) == 1.0
    assert d.kind == "behavior" and Drift("m", "correct", 0, 0.5).kind == "accuracy"


def test_b64_decodes_to_the_json_vectors() -> None:
    def embeddings(fmt: str) -> list[np.ndarray]:
        sc = _scenario(fmt=fmt, events_per_model=50)
        sc.models = [ModelProfile("m", embedding_dim=384)]
        out = []
        for m in generate(sc):
            if m.topic == "interactions":
                doc = orjson.loads(m.value)
                assert ("embedding_b64" in doc) == (fmt == "b64")
                emb = parse_interaction(m.value, m.key).obs.embedding
                assert emb is not None
                out.append(emb)
        return out

    as_json, as_b64 = embeddings("json"), embeddings("b64")
    assert len(as_json) == len(as_b64) == 50
    for a, b in zip(as_json, as_b64, strict=True):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b)


def test_to_files_writes_the_three_files(tmp_path: Path) -> None:
    sc = _scenario(events_per_model=400)
    paths = to_files(sc, tmp_path / "out", progress=False)
    assert set(paths) == {"interactions", "feedback", "truth"}
    msgs = list(generate(sc))
    for topic in ("interactions", "feedback"):
        lines = paths[topic].read_bytes().splitlines()
        assert lines == [m.value for m in msgs if m.topic == topic]
    assert len(paths["interactions"].read_bytes().splitlines()) == 4 * 400
    assert orjson.loads(paths["truth"].read_bytes()) == sc.truth()
