"""MonitorProcessor with the real detectors: routing, dedup by offset, state, metrics."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from driftline.detectors import ModelMonitor, MonitorConfig, state
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import BatchResult, MonitorProcessor
from driftline.streams.monitor.spill import StateSpill
from driftline.streams.monitor.state_codec import (
    STATE_VERSION,
    LatestStates,
    StateError,
    decode_state,
    encode_state,
)
from prometheus_client import CollectorRegistry

from tests.streams.monitor.states import state_of

IT, FB, UP = "t.interactions", "t.feedback", "t.model-updates"
WARMUP = 100
T0 = 1_767_225_600.0
NOW = T0 + 10_000.0


def _processor(registry: CollectorRegistry | None = None,
               load_state: Callable[[str], bytes | None] = lambda _m: None,
               warmup: int = WARMUP, apart_bytes: int = 2048) -> MonitorProcessor:
    return MonitorProcessor(
        interactions_topic=IT, feedback_topic=FB, updates_topic=UP,
        monitor_config=MonitorConfig(warmup=warmup),
        metrics=Metrics(registry if registry is not None else CollectorRegistry()),
        load_state=load_state, clock=lambda: NOW, apart_bytes=apart_bytes)


def _doc(model: str, i: int, rng: np.random.Generator, *, latency_factor: float = 1.0,
         version: str | None = "v1", dim: int | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": f"{model}-{i}", "model_id": model, "ts": T0 + i,
        "latency_ms": round(float(rng.lognormal(math.log(500.0 * latency_factor), 0.3)), 3),
        "output_tokens": int(rng.lognormal(math.log(150), 0.5)),
        "refusal": bool(rng.random() < 0.05),
    }
    if version is not None:
        doc["model_version"] = version
    if dim is not None:
        doc["embedding"] = [round(float(x), 5) for x in rng.standard_normal(dim)]
    doc.update(extra)
    return doc


class Log:
    """An append-only stand-in for the three input topics (offsets per topic, one partition
    per model)."""

    def __init__(self, partitions: dict[str, int] | None = None) -> None:
        self.records: list[Record] = []
        self.next: dict[str, int] = {}
        self.partitions = partitions or {}

    def add(self, topic: str, doc: dict[str, Any] | None, key: bytes | None = None,
            raw: bytes | None = None) -> Record:
        model = doc["model_id"] if doc is not None else None
        key = key if key is not None or model is None else str(model).encode()
        off = self.next.get(topic, 0)
        self.next[topic] = off + 1
        rec = Record(topic, self.partitions.get(str(model), 0), off, key,
                     raw if raw is not None else orjson.dumps(doc))
        self.records.append(rec)
        return rec


def _latency_stream(n: int, shift_at: int, factor: float, seed: int = 1,
                    models: Iterable[str] = ("m1",)) -> Log:
    rng = np.random.default_rng(seed)
    log = Log({m: k for k, m in enumerate(models)})
    for i in range(n):
        for m in models:
            log.add(IT, _doc(m, i, rng, latency_factor=factor if i >= shift_at else 1.0))
    return log


def _run(proc: MonitorProcessor, records: list[Record], batch: int = 100) -> BatchResult:
    total = BatchResult()
    for k in range(0, len(records), batch):
        r = proc.process(records[k:k + batch])
        total.drift_events += r.drift_events
        total.rejects += r.rejects
        total.deployed += r.deployed
        total.dirty.update(r.dirty)
    return total


def _index(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


# -- valid input, detection ---------------------------------------------------------------

def test_valid_records_produce_no_rejects_and_count_interactions() -> None:
    reg = CollectorRegistry()
    proc = _processor(reg)
    log = _latency_stream(300, shift_at=10**9, factor=1.0, models=("m1", "m2"))
    out = _run(proc, log.records)
    assert out.rejects == []
    assert out.drift_events == []
    assert out.dirty == {"m1": 0, "m2": 1}
    for m in ("m1", "m2"):
        assert reg.get_sample_value("driftline_interactions_processed_total",
                                    {"model": m}) == 300.0
    assert proc.models["m1"].monitor.phase == "monitoring"
    assert proc.models["m1"].offsets == {IT: 598}
    assert proc.models["m2"].offsets == {IT: 599}


def test_latency_shift_after_warmup_is_a_behavior_drift_event() -> None:
    reg = CollectorRegistry()
    proc = _processor(reg)
    shift = 250
    out = _run(proc, _latency_stream(450, shift_at=shift, factor=1.6, seed=3).records)
    assert out.rejects == []
    assert out.drift_events, "no drift detected"
    first_model, first = out.drift_events[0]
    assert first_model == "m1"
    assert (first["kind"], first["signal"]) == ("behavior", "latency")
    assert first["detector"] == "cusum_mean_up"
    assert shift <= _index(first["trigger_event_id"]) < shift + 100
    assert first["current"] > first["baseline"]
    for _, ev in out.drift_events:
        assert _index(ev["trigger_event_id"]) >= shift
    assert reg.get_sample_value("driftline_drift_events_total", {
        "model": "m1", "kind": "behavior", "signal": "latency",
        "detector": "cusum_mean_up"}) == float(sum(
            1 for _, e in out.drift_events if e["detector"] == "cusum_mean_up"))
    # detection lag is measured against the injected clock: NOW - trigger ts.
    lag_sum = reg.get_sample_value("driftline_detection_lag_seconds_sum")
    expected = sum(NOW - (T0 + _index(e["trigger_event_id"])) for _, e in out.drift_events)
    assert lag_sum == pytest.approx(expected)


def test_replayed_batch_is_skipped_and_changes_nothing() -> None:
    reg = CollectorRegistry()
    proc = _processor(reg)
    records = _latency_stream(450, shift_at=250, factor=1.6, seed=3).records
    first = _run(proc, records)
    assert first.drift_events
    before = state_of(proc, "m1")
    again = _run(proc, records)
    assert again.drift_events == [] and again.rejects == []
    assert again.dirty == {}
    assert state_of(proc, "m1") == before
    assert reg.get_sample_value("driftline_interactions_processed_total",
                                {"model": "m1"}) == 450.0


def test_record_at_stored_offset_is_skipped_but_next_offset_is_applied() -> None:
    reg = CollectorRegistry()
    proc = _processor(reg)
    log = _latency_stream(3, shift_at=10**9, factor=1.0)

    def processed() -> float | None:
        return reg.get_sample_value("driftline_interactions_processed_total", {"model": "m1"})

    proc.process(log.records[:2])
    assert proc.models["m1"].offsets == {IT: 1}
    assert processed() == 2.0
    out = proc.process([log.records[1]])  # offset == stored offset
    assert out.dirty == {} and processed() == 2.0
    out = proc.process([log.records[0], log.records[2]])
    assert out.dirty == {"m1": 0} and processed() == 3.0
    assert proc.models["m1"].offsets == {IT: 2}


# -- state ----------------------------------------------------------------------------------

def test_encode_decode_state_round_trip() -> None:
    proc = _processor()
    log = _latency_stream(50, shift_at=10**9, factor=1.0)
    rng = np.random.default_rng(5)
    for i in range(50, 60):
        log.add(IT, _doc("m1", i, rng, dim=16))
    log.add(FB, {"event_id": "m1-3", "model_id": "m1", "ts": T0 + 61, "correct": True})
    proc.process(log.records)
    st = proc.models["m1"]
    blob = encode_state(st)
    back = decode_state(blob, partition=3)
    assert back.offsets == {IT: 59, FB: 0}
    assert back.dim == ["v1", 16]
    assert back.partition == 3
    assert back.monitor.snapshot() == st.monitor.snapshot()
    assert encode_state(back) == blob
    version, n = struct.unpack_from("<BI", blob)
    assert version == STATE_VERSION
    assert orjson.loads(blob[5:5 + n]) == {"offsets": {IT: 59, FB: 0},
                                          "embedding_dim": ["v1", 16], "apart": {}}


def _checkpointed_log(proc: MonitorProcessor, records: list[Record], batch: int
                      ) -> tuple[list[tuple[bytes | None, bytes | None, int]],
                                 list[dict[str, bytes]]]:
    """The state topic as the agent writes it after every batch, and after each of its
    records, every model's state as of its latest state record (``state_of``)."""
    topic: list[tuple[bytes | None, bytes | None, int]] = []
    current: dict[str, bytes] = {}
    expected: list[dict[str, bytes]] = [{}]
    for k in range(0, len(records), batch):
        out = proc.process(records[k:k + batch])
        for m, partition in sorted(out.dirty.items()):
            records_of_m = proc.state_records(m)
            full = state_of(proc, m)  # (with the generations state_records just set)
            for key, value in records_of_m:
                topic.append((key, value, partition))
                if key == m.encode():
                    current[m] = full
                expected.append(dict(current))
    return topic, expected


def _same(a: bytes, b: bytes) -> None:
    sa, sb = decode_state(a, 0), decode_state(b, 0)
    assert (sa.offsets, sa.dim, sa.blobs) == (sb.offsets, sb.dim, sb.blobs)
    assert sa.monitor.snapshot() == sb.monitor.snapshot()


def test_state_topic_holds_references_apart_and_restores_after_a_cut_anywhere() -> None:
    """Big snapshot arrays go to records of their own, written when they change (the
    deploy of m1 makes new references: a new generation, the old one tombstoned after
    the state record). Cut the topic after any record, as a crash mid-checkpoint would:
    the latest state of each model restores, whole, as of its latest state record."""
    # (This stream's arrays are small: 512 bytes make its references go apart.)
    topic, expected = _checkpointed_log(_processor(apart_bytes=512),
                                        _embedding_and_latency_stream(11).records, batch=40)
    apart = [(k, v) for k, v, _ in topic if k is not None and b"\0" in k]
    assert [k for k, v in apart if v is None], "no reference was ever replaced"
    assert len({k for k, v in apart}) >= 4
    # Most checkpoints write one small record per model: the references stay put.
    states = [v for k, v, _ in topic if k is not None and b"\0" not in k]
    assert len(apart) < len(states) / 2
    for cut in range(len(topic) + 1):
        got = LatestStates.of(topic[:cut])
        assert got.keys() == expected[cut].keys(), cut
        for m, (partition, value) in got.items():
            assert partition == {"m1": 0, "m2": 1}[m]
            _same(value, expected[cut][m])


def test_states_restored_onto_disk_are_the_ones_restored_into_memory(tmp_path: Path) -> None:
    """The worker restores into its on-disk spill (a topic after a flood holds more
    models than fit in memory): settled there, every cut of the topic gives what
    ``result()`` gives, and a state whose field is gone fails closed the same way."""
    topic, _ = _checkpointed_log(_processor(apart_bytes=512),
                                 _embedding_and_latency_stream(11).records, batch=40)
    for cut in range(0, len(topic) + 1, 7):
        spill = StateSpill(tmp_path)
        latest = LatestStates(spill)
        for key, value, partition in topic[:cut]:
            latest.add(key, value, partition)
        latest.settle()
        assert dict(spill.items()) == LatestStates.of(topic[:cut]), cut
        spill.close()
    kept = [r for r in topic if r[0] is None or not r[0].startswith(b"m2\0")]
    latest = LatestStates(StateSpill(tmp_path))
    for key, value, partition in kept:
        latest.add(key, value, partition)
    with pytest.raises(StateError, match="the state of m2 needs"):
        latest.settle()


def test_a_state_written_in_parts_restores_and_continues_like_a_whole_one(
        mixed_stream: tuple[list[Record], BatchResult, dict[str, bytes]]) -> None:
    records, whole, final = mixed_stream
    first = _processor(apart_bytes=512)
    topic, _ = _checkpointed_log(first, records[:700], batch=97)
    restored = {m: v for m, (_, v) in LatestStates.of(topic).items()}
    second = _processor(load_state=restored.get, apart_bytes=512)
    tail = _run(second, records[550:], batch=97)
    assert tail.drift_events == [e for e in whole.drift_events
                                 if e not in _run(_processor(), records[:700]).drift_events]
    for m in second.models:
        _assert_same_state(state_of(second, m), final[m])
    # Restored generations carry on: nothing changed, so nothing is rewritten apart.
    first_gens = {m: first.models[m].blobs for m in first.models}
    assert {m: second.models[m].blobs for m in second.models}.keys() == first_gens.keys()


def test_a_state_whose_reference_is_gone_fails_closed() -> None:
    """A state that needs a field the topic no longer holds cannot be restored; starting
    the model afresh would let its next checkpoint overwrite the state with a new
    baseline, so the restore raises and names the model and the field."""
    topic, _ = _checkpointed_log(_processor(apart_bytes=512),
                                 _embedding_and_latency_stream(11).records[:600], batch=100)
    kept = [r for r in topic if r[0] is None or not r[0].startswith(b"m2\0")]
    assert len(kept) < len(topic)
    with pytest.raises(StateError, match=r"the state of m2 needs '[a-z_.]+' generation \d+, "
                                         "which the state topic does not hold"):
        LatestStates.of(kept)
    assert set(LatestStates.of(r for r in kept if not r[0].startswith(b"m2"))) == {"m1"}


@pytest.mark.parametrize("blob", [
    struct.pack("<BI", STATE_VERSION + 1, 2) + b"{}",
    struct.pack("<BI", 0, 2) + b"{}",
])
def test_unknown_state_version_is_rejected(blob: bytes) -> None:
    with pytest.raises(StateError, match="unsupported monitor state version"):
        decode_state(blob, 0)


def test_state_of_unknown_version_stops_the_batch() -> None:
    # A state record this build cannot read must not turn the model's traffic into dead
    # letters (or start a silent fresh baseline): processing fails loudly.
    good = _processor()
    good.process(_latency_stream(3, shift_at=10**9, factor=1.0).records)
    blob = bytearray(state_of(good, "m1"))
    blob[0] = STATE_VERSION + 1
    proc = _processor(load_state=lambda _m: bytes(blob))
    with pytest.raises(StateError, match="unsupported monitor state version"):
        proc.process(_latency_stream(1, shift_at=10**9, factor=1.0).records)
    assert proc.models == {}


def test_truncated_state_is_rejected() -> None:
    with pytest.raises(StateError, match="truncated"):
        decode_state(b"\x01\x00", 0)


def _embedding_and_latency_stream(seed: int) -> Log:
    """Two models, latency shift on m1, embedding shift on m2, a deploy and labels."""
    rng = np.random.default_rng(seed)
    log = Log({"m1": 0, "m2": 1})
    centre = rng.standard_normal(16)
    far = rng.standard_normal(16)
    for i in range(450):
        log.add(IT, _doc("m1", i, rng, latency_factor=1.7 if i >= 200 else 1.0,
                        correct=bool(rng.random() < 0.9)))
        vec = (far if i >= 250 and rng.random() < 0.5 else centre) + 0.3 * rng.standard_normal(16)
        log.add(IT, _doc("m2", i, rng, version="v1", embedding=[float(x) for x in vec]))
        if i % 3 == 0 and i > 10:
            log.add(FB, {"event_id": f"m1-{i - 10}", "model_id": "m1", "ts": T0 + i,
                        "feedback": -1 if rng.random() < 0.1 else 1})
        if i == 380:
            log.add(UP, {"model_id": "m1", "model_version": "v2", "ts": T0 + i})
    return log


def test_uninterrupted_run_finds_the_injected_drifts() -> None:
    out = _run(_processor(), _embedding_and_latency_stream(11).records)
    assert out.rejects == []
    kinds = {(m, e["kind"], e["signal"]) for m, e in out.drift_events}
    assert ("m1", "behavior", "latency") in kinds
    assert ("m2", "embedding", "embedding") in kinds
    assert out.deployed == [("m1", "v2")]


@pytest.fixture(scope="module")
def mixed_stream() -> tuple[list[Record], BatchResult, dict[str, bytes]]:
    records = _embedding_and_latency_stream(11).records
    proc = _processor()
    whole = _run(proc, records, batch=250)
    return records, whole, {m: state_of(proc, m) for m in proc.models}


@pytest.mark.parametrize("split", [1, 137, 400, 777, 1000, 1300])
def test_restore_from_state_continues_exactly(
        split: int, mixed_stream: tuple[list[Record], BatchResult, dict[str, bytes]]) -> None:
    records, whole, final = mixed_stream
    assert whole.drift_events
    first = _processor()
    head = _run(first, records[:split], batch=97)
    blobs = {m: state_of(first, m) for m in first.models}
    second = _processor(load_state=blobs.get)
    # The source is re-read from before the split (offsets committed late): the records
    # already applied must be skipped, so the events are exactly the uninterrupted ones.
    tail = _run(second, records[max(0, split - 150):], batch=97)
    assert head.drift_events + tail.drift_events == whole.drift_events
    assert head.deployed + tail.deployed == whole.deployed
    for m in second.models:
        _assert_same_state(state_of(second, m), final[m])


def _assert_same_state(a: bytes, b: bytes) -> None:
    """Same offsets, dimension and detector state; floats nearly (batch boundaries move
    the last bits of running averages and of float32 distances)."""
    sa, sb = decode_state(a, 0), decode_state(b, 0)
    assert (sa.offsets, sa.dim) == (sb.offsets, sb.dim)
    fa = state.decode(sa.monitor.snapshot())
    fb = state.decode(sb.monitor.snapshot())
    assert fa.keys() == fb.keys()
    for k, x in fa.items():
        y = fb[k]
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.shape == y.shape and x.dtype == y.dtype, k
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=k)
        elif isinstance(x, float) and isinstance(y, float):
            assert x == pytest.approx(y, rel=1e-9, nan_ok=True), k
        else:
            assert x == y, k


def test_load_state_is_asked_once_per_model() -> None:
    asked: list[str] = []

    def load(model: str) -> bytes | None:
        asked.append(model)
        return None

    proc = _processor(load_state=load)
    _run(proc, _latency_stream(30, shift_at=10**9, factor=1.0, models=("a", "b")).records,
         batch=7)
    assert asked == ["a", "b"]


# -- embeddings and model updates ------------------------------------------------------------

def test_embedding_dim_change_within_version_is_rejected() -> None:
    reg = CollectorRegistry()
    proc = _processor(reg)
    rng = np.random.default_rng(2)
    log = Log()
    log.add(IT, _doc("m1", 0, rng, dim=16))
    bad = log.add(IT, _doc("m1", 1, rng, dim=32))
    log.add(IT, _doc("m1", 2, rng, dim=16))
    out = proc.process(log.records)
    assert [(r.record, r.reason) for r in out.rejects] == [(bad, "embedding_dim_changed")]
    assert "32" in out.rejects[0].message and "16" in out.rejects[0].message
    assert reg.get_sample_value("driftline_invalid_messages_total",
                                {"reason": "embedding_dim_changed", "topic": IT}) == 1.0
    assert reg.get_sample_value("driftline_interactions_processed_total",
                                {"model": "m1"}) == 2.0
    # Also across batches.
    out = proc.process([log.add(IT, _doc("m1", 3, rng, dim=8))])
    assert [r.reason for r in out.rejects] == ["embedding_dim_changed"]


def test_new_version_after_model_update_may_change_dimension() -> None:
    proc = _processor()
    rng = np.random.default_rng(2)
    log = Log()
    log.add(IT, _doc("m1", 0, rng, dim=16))
    log.add(UP, {"model_id": "m1", "model_version": "v2", "ts": T0 + 1})
    log.add(IT, _doc("m1", 1, rng, version="v2", dim=32))
    log.add(IT, _doc("m1", 2, rng, version="v2", dim=32))
    out = proc.process(log.records)
    assert out.rejects == []
    assert out.deployed == [("m1", "v2")]
    assert proc.models["m1"].monitor.model_version == "v2"
    out = proc.process([log.add(IT, _doc("m1", 3, rng, version="v2", dim=32))])
    assert out.rejects == []


def test_dimension_seen_after_deploy_in_same_batch_is_kept() -> None:
    proc = _processor()
    rng = np.random.default_rng(2)
    log = Log()
    log.add(UP, {"model_id": "m1", "model_version": "v2", "ts": T0})
    log.add(IT, _doc("m1", 1, rng, version="v2", dim=32))
    assert proc.process(log.records).rejects == []
    out = proc.process([log.add(IT, _doc("m1", 2, rng, version="v2", dim=16))])
    assert [r.reason for r in out.rejects] == ["embedding_dim_changed"]


@pytest.mark.parametrize("same_batch", [True, False])
def test_new_version_without_model_update_cannot_change_dimension(same_batch: bool) -> None:
    # A canary of a new version arrives before its deploy notice: the monitor still has
    # the old version's dimension, so the canary's vector is refused (not the batch).
    reg = CollectorRegistry()
    proc = _processor(reg)
    rng = np.random.default_rng(2)
    log = Log()
    log.add(IT, _doc("m1", 0, rng, dim=16))
    canary = log.add(IT, _doc("m1", 1, rng, version="v2", dim=32))
    log.add(IT, _doc("m1", 2, rng, dim=16))
    if same_batch:
        out = proc.process(log.records)
    else:
        proc.process(log.records[:1])
        out = proc.process(log.records[1:])
    # The reason the README and the runbook give for it: publish a model update first.
    assert [(r.record, r.reason) for r in out.rejects] == [(canary, "embedding_dim_changed")]
    assert out.rejects[0].message == (
        "embedding dimension 32 (model version 'v2'); this model's is 16 since version "
        "'v1': a new dimension needs a model update")
    assert reg.get_sample_value("driftline_invalid_messages_total",
                                {"reason": "embedding_dim_changed", "topic": IT}) == 1.0
    assert reg.get_sample_value("driftline_interactions_processed_total",
                                {"model": "m1"}) == 2.0


def test_model_update_resets_the_monitor() -> None:
    proc = _processor()
    records = _latency_stream(400, shift_at=10**9, factor=1.0).records
    _run(proc, records)
    assert proc.models["m1"].monitor.phase == "monitoring"
    log = Log()
    log.next = {IT: 400}
    upd = log.add(UP, {"model_id": "m1", "model_version": "v9", "ts": T0 + 500})
    out = proc.process([upd])
    assert out.deployed == [("m1", "v9")]
    assert out.dirty == {"m1": 0}
    mon = proc.models["m1"].monitor
    assert (mon.phase, mon.model_version) == ("warmup", "v9")
    # A fresh reference for every signal; the seasonal profiles (the traffic's cycle, not
    # the version's) carry over.
    fresh = ModelMonitor("m1", MonitorConfig(warmup=WARMUP), "v9").snapshot_fields()
    now = mon.snapshot_fields()
    assert now.keys() == fresh.keys()
    carried = {k for k in now if ".season." in k}
    assert carried
    for k in now.keys() - carried:
        if isinstance(now[k], np.ndarray):
            np.testing.assert_array_equal(now[k], fresh[k], err_msg=k)
        else:
            assert now[k] == fresh[k] or (now[k] != now[k] and fresh[k] != fresh[k]), k
    # The same update again (replay) does not reset a second time.
    proc.process([log.add(IT, _doc("m1", 401, np.random.default_rng(0), version="v9"))])
    snap = mon.snapshot()
    out = proc.process([upd])
    assert out.deployed == [] and mon.snapshot() == snap


def test_deploy_within_a_batch_keeps_stream_order() -> None:
    # Interactions before the update belong to the old baseline, after it to the new one.
    proc = _processor()
    rng = np.random.default_rng(4)
    log = Log()
    for i in range(5):
        log.add(IT, _doc("m1", i, rng))
    log.add(UP, {"model_id": "m1", "model_version": "v2", "ts": T0 + 5})
    for i in range(5, 8):
        log.add(IT, _doc("m1", i, rng, version="v2"))
    proc.process(log.records)
    mon = proc.models["m1"].monitor
    assert mon.model_version == "v2"
    assert mon._events == 3  # only the three after the deploy


def test_smallest_allowed_warmup_completes_cleanly() -> None:
    proc = _processor(warmup=20)
    rng = np.random.default_rng(1)
    log = Log()
    for i in range(21):
        log.add(IT, {"event_id": f"m1-{i}", "model_id": "m1", "ts": T0 + i,
                     "latency_ms": float(rng.lognormal(6.0, 0.3)),
                     "output_tokens": int(rng.integers(10, 300))})
    out = proc.process(log.records)
    mon = proc.models["m1"].monitor
    assert [(r.record.offset, r.reason, r.message) for r in out.rejects] == []
    assert mon._events == 21
    assert len(mon.signals["latency"].dets) == 4


# -- feedback ------------------------------------------------------------------------------

def test_feedback_records_reach_observe_label(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = _processor()
    rng = np.random.default_rng(6)
    log = Log()
    for i in range(3):
        log.add(IT, _doc("m1", i, rng))
    log.add(FB, {"event_id": "m1-0", "model_id": "m1", "ts": "2026-01-01T00:00:05Z",
                "correct": False})
    log.add(FB, {"event_id": "m1-1", "model_id": "m1", "ts": T0 + 6, "feedback": -1})
    proc.process(log.records[:1])
    mon = proc.models["m1"].monitor
    calls: list[tuple[Any, ...]] = []
    real = mon.observe_label

    def spy(event_id: str, ts: float, correct: bool | None = None,
            feedback: int | None = None) -> list[Any]:
        calls.append((event_id, ts, correct, feedback, mon._events))
        return real(event_id, ts, correct=correct, feedback=feedback)

    monkeypatch.setattr(mon, "observe_label", spy)
    out = proc.process(log.records[1:])
    # Interactions before a label are flushed first: 3 events seen at the first label.
    assert calls == [("m1-0", T0 + 5, False, None, 3), ("m1-1", T0 + 6, None, -1, 3)]
    assert out.dirty == {"m1": 0}
    assert proc.models["m1"].offsets == {IT: 2, FB: 1}


def test_delayed_labels_detect_accuracy_drift() -> None:
    proc = _processor()
    rng = np.random.default_rng(8)
    log = Log()
    shift = 1000
    for i in range(2000):
        log.add(IT, _doc("m1", i, rng))
        p_err = 0.05 if i < shift else 0.3
        log.add(FB, {"event_id": f"m1-{i}", "model_id": "m1", "ts": T0 + i,
                    "correct": bool(rng.random() >= p_err)})
    out = _run(proc, log.records)
    acc = [e for _, e in out.drift_events if e["kind"] == "accuracy"]
    assert acc, out.drift_events
    assert acc[0]["signal"] == "error_rate"
    assert shift <= _index(acc[0]["trigger_event_id"]) < shift + 200
    assert acc[0]["baseline"] == pytest.approx(0.05, abs=0.03)


# -- rejects -----------------------------------------------------------------------------

def test_rejects_carry_reason_and_are_counted() -> None:
    reg = CollectorRegistry()
    proc = _processor(reg)
    rng = np.random.default_rng(9)
    log = Log()
    ok = _doc("m1", 0, rng)
    no_key = log.add(IT, ok, key=None, raw=orjson.dumps(ok))
    no_key.key = None
    log.add(IT, ok)
    bad_json = log.add(IT, None, key=b"m1", raw=b"{not json")
    nan = log.add(IT, None, key=b"m1", raw=orjson.dumps(_doc("m1", 2, rng)).replace(
        b'"refusal":false', b'"refusal":false,"latency_ms":NaN', 1))
    mismatch = log.add(IT, _doc("m1", 3, rng), key=b"m2")
    fb_none = log.add(FB, {"event_id": "m1-0", "model_id": "m1", "ts": T0})
    upd_bad = log.add(UP, {"model_id": "m1", "model_version": "v2", "ts": T0, "kind": "x"})
    out = proc.process(log.records)
    got = [(r.record, r.reason) for r in out.rejects]
    assert got == [(no_key, "missing_field"), (bad_json, "bad_json"), (nan, "non_finite"),
                   (mismatch, "key_mismatch"), (fb_none, "missing_field"),
                   (upd_bad, "bad_value")]
    sample = reg.get_sample_value
    assert sample("driftline_interactions_processed_total", {"model": "m1"}) == 1.0
    assert sample("driftline_invalid_messages_total",
                  {"reason": "missing_field", "topic": IT}) == 1.0
    assert sample("driftline_invalid_messages_total",
                  {"reason": "missing_field", "topic": FB}) == 1.0
    assert sample("driftline_invalid_messages_total",
                  {"reason": "key_mismatch", "topic": IT}) == 1.0
    assert sample("driftline_invalid_messages_total",
                  {"reason": "bad_value", "topic": UP}) == 1.0
    total = sum(s.value for m in reg.collect() if m.name == "driftline_invalid_messages"
                for s in m.samples if s.name.endswith("_total"))
    assert total == 6.0


def test_duplicate_key_in_json_object() -> None:
    # orjson keeps the last value of a repeated name; the key check uses that value.
    proc = _processor()
    raw = b'{"event_id":"e","model_id":"evil","model_id":"m1","ts":1767225600}'
    out = proc.process([Record(IT, 0, 0, b"m1", raw)])
    assert out.rejects == [] and out.dirty == {"m1": 0} and list(proc.models) == ["m1"]


def test_max_payload_bytes_is_applied() -> None:
    proc = MonitorProcessor(interactions_topic=IT, feedback_topic=FB, updates_topic=UP,
                            monitor_config=MonitorConfig(warmup=WARMUP),
                            metrics=Metrics(CollectorRegistry()), max_payload_bytes=100)
    small = orjson.dumps({"event_id": "e", "model_id": "m1", "ts": T0})
    big = orjson.dumps({"event_id": "e2", "model_id": "m1", "ts": T0,
                        "metadata": {"pad": "x" * 100}})
    out = proc.process([Record(IT, 0, 0, b"m1", small), Record(IT, 0, 1, b"m1", big)])
    assert [r.reason for r in out.rejects] == ["oversized"]
    assert out.rejects[0].record.offset == 1


# -- partitions -----------------------------------------------------------------------------

def test_forget_partitions_drops_only_those_models() -> None:
    proc = _processor()
    log = _latency_stream(5, shift_at=10**9, factor=1.0, models=("a", "b", "c", "d"))
    log_parts = {"a": 0, "b": 1, "c": 2, "d": 1}
    for r in log.records:
        r.partition = log_parts[orjson.loads(r.value or b"")["model_id"]]
    proc.process(log.records)
    assert {m: s.partition for m, s in proc.models.items()} == log_parts
    proc.forget_partitions({1, 7})
    assert sorted(proc.models) == ["a", "c"]
    proc.forget_partitions(set())
    assert sorted(proc.models) == ["a", "c"]
    proc.forget_partitions({0, 2})
    assert proc.models == {}


# -- the processor's fast path keeps the contract ---------------------------------------

def test_processor_accepts_and_rejects_exactly_what_the_contract_does() -> None:
    from driftline.streams.ingest.contract import InvalidEvent, parse_interaction

    from tests.streams.ingest.test_contract import _mutate

    rng = random.Random(77)
    records = []
    expected: dict[int, str | None] = {}
    for off in range(2000):
        raw, key = _mutate(rng)
        key = key if key is not None else b"m1"
        records.append(Record(IT, 0, off, key, raw))
        try:
            parse_interaction(raw, key)
            expected[off] = None
        except InvalidEvent as exc:
            expected[off] = exc.reason
    proc = _processor()
    out = BatchResult()
    for k in range(0, 2000, 500):  # whole batches: the columnar path
        # (huge but finite vectors overflow the detector's float16 warm-up buffer: see
        # test_large_but_valid_embeddings_keep_finite_centroids)
        with np.errstate(all="ignore"):
            r = proc.process(records[k:k + 500])
        out.rejects += r.rejects
    got: dict[int, str | None] = dict.fromkeys(expected)
    for rej in out.rejects:
        got[rej.record.offset] = rej.reason
    diff = {o: (expected[o], got[o]) for o in expected if expected[o] != got[o]}
    assert diff == {}
    assert 100 < sum(v is None for v in got.values()) < 1900


def test_large_but_valid_embeddings_keep_finite_centroids() -> None:
    proc = _processor()
    rng = np.random.default_rng(12)
    log = Log()
    for i in range(60):  # fit = warmup // 2 = 50 vectors train the centroids
        vec = 1e5 * rng.standard_normal(16)
        log.add(IT, {"event_id": f"m1-{i}", "model_id": "m1", "ts": T0 + i,
                     "embedding": [float(x) for x in vec]})
    with np.errstate(all="ignore"):
        out = proc.process(log.records)
    assert out.rejects == []
    sig = proc.models["m1"].monitor.signals["embedding"]
    centroids = sig.centroids if sig.centroids is not None else sig._cand  # (still warming)
    assert centroids is not None and np.isfinite(centroids).all()


def test_rfc3339_and_b64_interactions_reach_the_detectors_like_epoch_and_arrays() -> None:
    """Documents that take the full validator (RFC 3339 ``ts``, ``embedding_b64``) are fed
    with their validated values: the same detections as their plain twins."""
    import base64
    from datetime import UTC, datetime

    rng = np.random.default_rng(5)
    plain, fancy = Log(), Log()
    for i in range(300):
        doc = _doc("m1", i, rng, latency_factor=4.0 if i >= 200 else 1.0, dim=8)
        plain.add(IT, doc)
        vec = np.asarray(doc.pop("embedding"), dtype="<f4")
        fancy.add(IT, {**doc, "ts": datetime.fromtimestamp(doc["ts"], UTC).isoformat(),
                       "embedding_b64": base64.b64encode(vec.tobytes()).decode()})
    outs = []
    for log in (plain, fancy):
        reg = CollectorRegistry()
        out = _run(_processor(reg), log.records)
        assert out.rejects == []
        assert reg.get_sample_value("driftline_interactions_processed_total",
                                    {"model": "m1"}) == 300.0
        outs.append([(m, e["signal"], e["trigger_event_id"]) for m, e in out.drift_events])
    assert outs[0] and outs[1] == outs[0]


def test_reject_warnings_are_rate_limited_per_reason(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reject reaches the dead-letter topic and the metrics; the log gets the first
    of each reason per window and then a count of the ones it left out."""
    import logging
    import types

    from driftline.streams.ingest.records import Reject
    from driftline.streams.monitor import agent as monitor_agent

    clock = [1000.0]
    monkeypatch.setattr(monitor_agent.time, "monotonic", lambda: clock[0])
    agent = types.SimpleNamespace(_reject_log={})

    def batch(*rejects: tuple[str, int]) -> None:
        monitor_agent.MonitorAgent._log_rejects(agent, [  # type: ignore[arg-type]
            Reject(Record(IT, 0, offset, b"m1", b"x"), reason, "why")
            for reason, offset in rejects])

    with caplog.at_level(logging.WARNING, logger="driftline.monitor"):
        for off in range(3):  # one at a time, then in a batch: the same count
            batch(("bad_json", off))
        batch(("bad_type", 3), ("bad_json", 4), ("bad_json", 5), ("bad_type", 6))
        clock[0] += monitor_agent.REJECT_LOG_EVERY_S
        batch(("bad_json", 7), ("bad_type", 8), ("bad_json", 9))
        batch(("bad_json", 10))
        clock[0] += monitor_agent.REJECT_LOG_EVERY_S
        batch(("bad_json", 11))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"rejected {IT}[0]@0: bad_json: why",
        f"rejected {IT}[0]@3: bad_type: why",
        f"rejected {IT}[0]@7: bad_json: why (4 more bad_json rejects before it, not logged)",
        f"rejected {IT}[0]@8: bad_type: why (1 more bad_type rejects before it, not logged)",
        f"rejected {IT}[0]@11: bad_json: why (2 more bad_json rejects before it, not logged)",
    ]


def test_runs_wait_while_behind_and_are_fed_once_caught_up() -> None:
    """While the consumer is behind, a run waits for ``min_run`` interactions (or
    ``max_delay_s``); ``drain`` (caught up) feeds every waiting run at once; either
    way the detections are the ones of an unbatched run."""
    records = _latency_stream(450, shift_at=250, factor=1.6, seed=3).records
    reg = CollectorRegistry()
    proc = MonitorProcessor(
        interactions_topic=IT, feedback_topic=FB, updates_topic=UP,
        monitor_config=MonitorConfig(warmup=WARMUP), metrics=Metrics(reg),
        clock=lambda: NOW, min_run=10_000, max_delay_s=3600.0)

    def fed() -> float:
        return reg.get_sample_value("driftline_interactions_processed_total",
                                    {"model": "m1"}) or 0.0

    behind = [proc.process(records[k:k + 50]) for k in range(0, 400, 50)]
    assert fed() == 0.0 and not any(r.drift_events for r in behind)
    caught_up = proc.process(records[400:], drain=True)
    assert fed() == 450.0
    reference = _run(_processor(), records, batch=1)
    assert [e["drift_id"] for _, e in caught_up.drift_events] == \
        [e["drift_id"] for _, e in reference.drift_events]
    assert caught_up.drift_events


@pytest.mark.parametrize(("batch", "min_run"), [(7, 0), (64, 0), (300, 0), (64, 10_000),
                                                (1000, 150)])
def test_interleaved_models_with_poison_find_what_one_record_at_a_time_finds(
        batch: int, min_run: int) -> None:
    """Models interleaved at random, poison among them, runs cut across batches: the
    drift events (ids, events, in order per model) and the rejects are those of feeding
    one record at a time."""
    rng = np.random.default_rng(batch)
    models = ["m1", "m2", "m3", "m4"]
    log = Log({m: k % 2 for k, m in enumerate(models)})
    count = dict.fromkeys(models, 0)
    for _ in range(2400):
        m = models[int(rng.integers(0, 4))]
        i = count[m]
        count[m] += 1
        shifted = m in ("m1", "m3") and i >= 300
        log.add(IT, _doc(m, i, rng, latency_factor=1.8 if shifted else 1.0))
        if rng.random() < 0.01:
            log.add(IT, None, key=m.encode(), raw=b'{"event_id": "x", "model_id": ')
    drained = 0 if min_run == 0 else len(log.records) - batch

    def feed(proc: MonitorProcessor, size: int) -> BatchResult:
        total = BatchResult()
        for k in range(0, len(log.records), size):
            r = proc.process(log.records[k:k + size], drain=k >= drained)
            total.drift_events += r.drift_events
            total.rejects += r.rejects
        r = proc.flush()
        total.drift_events += r.drift_events
        return total

    proc = MonitorProcessor(
        interactions_topic=IT, feedback_topic=FB, updates_topic=UP,
        monitor_config=MonitorConfig(warmup=WARMUP), metrics=Metrics(CollectorRegistry()),
        clock=lambda: NOW, min_run=min_run, max_delay_s=3600.0)
    got = feed(proc, batch)
    want = feed(_processor(), 1)

    def by_model(res: BatchResult) -> dict[str, list[tuple[str, str, str]]]:
        out: dict[str, list[tuple[str, str, str]]] = {}
        for m, e in res.drift_events:
            out.setdefault(m, []).append((e["drift_id"], e["trigger_event_id"], e["detected_at"]))
        return out

    assert by_model(got) == by_model(want)
    assert {"m1", "m3"} <= set(by_model(got))
    assert [(r.record.offset, r.reason) for r in got.rejects] == \
        [(r.record.offset, r.reason) for r in want.rejects]
    assert len(got.rejects) >= 10
    assert proc.processed == sum(count.values())


# -- segments ------------------------------------------------------------------------------

def _tenant_log(n: int = 3000, shift_at: int = 1800) -> Log:
    """Three tenants in turn; from ``shift_at`` acme's latency doubles."""
    rng = np.random.default_rng(4)
    log = Log()
    for i in range(n):
        tenant = ("acme", "globex", "initech")[i % 3]
        factor = 2.0 if tenant == "acme" and i >= shift_at else 1.0
        log.add(IT, _doc("m1", i, rng, latency_factor=factor, metadata={"tenant": tenant}))
    return log


def _segmented(load_state: Callable[[str], bytes | None] = lambda _m: None,
               registry: CollectorRegistry | None = None) -> MonitorProcessor:
    from driftline.detectors.segments import SegmentPlan

    return MonitorProcessor(
        interactions_topic=IT, feedback_topic=FB, updates_topic=UP,
        monitor_config=MonitorConfig(warmup=WARMUP),
        metrics=Metrics(registry if registry is not None else CollectorRegistry()),
        load_state=load_state, clock=lambda: NOW, segments=SegmentPlan.parse("metadata.tenant"))


def _ids(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return sorted(e["drift_id"] for _, e in events)


@pytest.mark.parametrize("split", [500, 1799, 2300])
def test_a_segmented_model_checkpoints_and_continues_exactly(split: int) -> None:
    records = _tenant_log().records
    proc = _segmented()
    whole = _run(proc, records, batch=250).drift_events + proc.flush().drift_events
    segs = [e for _, e in whole if e.get("segment")]
    assert segs and {e["segment"]["metadata.tenant"] for e in segs} == {"acme"}
    assert min(int(e["trigger_event_id"].rsplit("-", 1)[1]) for e in segs) >= 1800
    first = _segmented()
    head = _run(first, records[:split], batch=97).drift_events + first.flush().drift_events
    blobs = {m: state_of(first, m) for m in first.models}
    second = _segmented(load_state=blobs.get)
    tail = _run(second, records[max(0, split - 150):], batch=97).drift_events
    tail += second.flush().drift_events
    assert _ids(head + tail) == _ids(whole)
    assert sorted(map(repr, (e.get("segment") for _, e in head + tail))) == sorted(
        map(repr, (e.get("segment") for _, e in whole)))
    # The model level's attribution too: the values it reads are in the checkpoint.
    assert sorted(map(repr, (e.get("attribution") for _, e in head + tail))) == sorted(
        map(repr, (e.get("attribution") for _, e in whole)))


def test_segment_metrics_count_every_routed_interaction() -> None:
    registry = CollectorRegistry()
    proc = _segmented(registry=registry)
    _run(proc, _tenant_log(900, 10**9).records, batch=200)
    proc.flush()
    per = {t: registry.get_sample_value("driftline_segment_interactions_processed_total",
                                        {"model": "m1", "segment": f"metadata.tenant={t}"})
           or 0.0 for t in ("acme", "globex", "initech", "other")}
    assert sum(per.values()) == 900
    assert per["other"] == 100  # before the first ranking, after 100 interactions
    assert (per["acme"], per["globex"], per["initech"]) == (266, 267, 267)  # i % 3 from 100


def test_a_reference_learned_from_too_little_data_is_logged_and_counted_once(
        caplog: pytest.LogCaptureFixture) -> None:
    # A warm-up of 100 values is worth fewer than the 200 independent ones a latency level
    # needs, and a rate reference of ~1,000 outcomes at 5% refusals (it waits for enough
    # events) has too few windows of 10 expected refusals to show the rate's spread.
    reg = CollectorRegistry()
    proc = _processor(reg)
    with caplog.at_level("WARNING", logger="driftline.monitor"):
        records = _latency_stream(3000, shift_at=10**9, factor=1.0).records
        _run(proc, records[:1500])
        _run(proc, records[1500:])
    lines = [r.getMessage() for r in caplog.records]
    assert [m for m in lines if m.startswith("model m1: latency: the warm-up's 100 values")]
    assert reg.get_sample_value("driftline_reference_warnings_total",
                                {"signal": "latency"}) == 1.0
    assert reg.get_sample_value("driftline_reference_warnings_total",
                                {"signal": "refusal_rate"}) == 1.0
    assert len(lines) == 2 + sum(1 for m in lines if "output_length" in m)


def test_reference_warnings_are_counted_on_the_slow_path_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every run refused as a batch (what a value only the monitor refuses does): each is
    # fed record by record, the processor's slow path, and the warnings of the
    # references it completes are still logged and counted, once.
    from driftline.detectors import InvalidValue, ModelMonitor

    batch = ModelMonitor.observe_columns

    def refuse(self: ModelMonitor, ids: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        if len(ids) > 1:
            raise InvalidValue("latency: refused as a batch")
        return batch(self, ids, *args, **kwargs)  # (one interaction: observe())

    monkeypatch.setattr(ModelMonitor, "observe_columns", refuse)
    reg = CollectorRegistry()
    proc = _processor(reg)
    out = _run(proc, _latency_stream(3000, shift_at=10**9, factor=1.0).records)
    assert out.rejects == [] and proc.processed == 3000
    assert reg.get_sample_value("driftline_reference_warnings_total",
                                {"signal": "latency"}) == 1.0
    assert reg.get_sample_value("driftline_reference_warnings_total",
                                {"signal": "refusal_rate"}) == 1.0
