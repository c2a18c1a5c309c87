"""The assembled app without a broker: the monitor agent's batch handler with a recording
producer, the dead-letter headers, and the retrain agent through Faust's test context."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import orjson
import pytest
from driftline.detectors import MonitorConfig
from driftline.streams.app import Driftline, create_app
from driftline.streams.config import Settings
from driftline.streams.ingest.dead_letters import (
    DEAD_LETTER_MAX_BYTES,
    H_MESSAGE,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TOPIC,
    H_TRUNCATED,
    dead_letter_headers,
    dead_letter_record,
)
from driftline.streams.ingest.records import Record, Reject
from driftline.streams.metrics import Metrics
from driftline.streams.runtime import GC_GEN0_THRESHOLD, tune_gc
from prometheus_client import CollectorRegistry

from tests.streams.monitor.states import state_of

T0 = 1_767_225_600.0


class RecordingBatch:
    """Stands in for aiokafka's BatchBuilder: holds two messages, then is full."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]]) -> object | None:
        if len(self.messages) == 2:
            return None
        self.messages.append({"key": key, "value": value, "headers": headers})
        return object()


class RecordingProducer:
    """Stands in for AIOKafkaProducer: ``send`` returns a future, as aiokafka's does."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[None]:
        self.sent.append({"topic": topic, "value": value, "key": key, "partition": partition,
                          "headers": headers})
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> RecordingBatch:
        return RecordingBatch()

    async def send_batch(self, batch: RecordingBatch, topic: str, *, partition: int
                         ) -> asyncio.Future[None]:
        for m in batch.messages:
            self.sent.append({"topic": topic, "partition": partition, **m})
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["topic"] == topic]


def _settings(**env: str) -> Settings:
    base = {"DRIFTLINE_TOPIC_PREFIX": "t", "DRIFTLINE_APP_ID": "driftline-unit",
            "DRIFTLINE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "DRIFTLINE_WARMUP": "100",
            "DRIFTLINE_DATA_DIR": "/nonexistent/driftline-unit"}
    return Settings.from_env({**base, **env})


def _app(deployed: list[tuple[str, str]] | None = None,
         retrain: list[list[dict[str, Any]]] | None = None) -> Driftline:
    async def on_deployed(model_id: str, version: str) -> None:
        assert deployed is not None
        deployed.append((model_id, version))

    async def handler(batch: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
        assert retrain is not None
        retrain.append(batch)
        return [(b"k", orjson.dumps({"n": len(batch)}))]

    return create_app(_settings(), metrics=Metrics(CollectorRegistry()),
                      monitor_config=MonitorConfig(warmup=100),
                      deploy_handler=on_deployed if deployed is not None else None,
                      retrain_handler=handler if retrain is not None else None)


def _latency(model: str, n: int, shift_at: int, seed: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [orjson.dumps({"event_id": f"{model}-{i}", "model_id": model, "model_version": "v1",
                          "ts": T0 + i,
                          "latency_ms": float(rng.lognormal(math.log(500.0 * (
                              1.6 if i >= shift_at else 1.0)), 0.3))})
            for i in range(n)]


# -- dead-letter headers -----------------------------------------------------------------

def _reject(message: str, reason: str = "bad_json") -> Reject:
    return Reject(Record("t.interactions", 3, 12345, b"m1", b"{"), reason, message)


def test_dead_letter_headers_say_why_and_where() -> None:
    headers = dead_letter_headers(_reject("invalid JSON: unexpected end"))
    assert headers == [
        (H_REASON, b"bad_json"), (H_MESSAGE, b"invalid JSON: unexpected end"),
        (H_TOPIC, b"t.interactions"), (H_PARTITION, b"3"), (H_OFFSET, b"12345")]
    assert [h for h, _ in headers] == [
        "driftline.error.reason", "driftline.error.message", "driftline.source.topic",
        "driftline.source.partition", "driftline.source.offset"]


def test_dead_letter_message_is_truncated_to_1000_bytes() -> None:
    headers = dict(dead_letter_headers(_reject("x" * 5000)))
    assert headers[H_MESSAGE] == b"x" * 1000
    assert dict(dead_letter_headers(_reject("y" * 1000)))[H_MESSAGE] == b"y" * 1000


def test_dead_letter_message_truncation_stays_valid_utf8() -> None:
    msg = dict(dead_letter_headers(_reject("a" * 999 + "é" * 10)))[H_MESSAGE]
    assert len(msg) <= 1000
    assert msg.decode("utf-8") == "a" * 999


def test_dead_letter_record_is_the_source_record_up_to_the_size_limit() -> None:
    rej = Reject(Record("t.interactions", 1, 7, b"m1", b"v" * 900_000), "oversized", "big")
    key, value, headers = dead_letter_record(rej)
    assert (key, value, headers) == (b"m1", b"v" * 900_000, dead_letter_headers(rej))
    none = Reject(Record("t.interactions", 1, 8, None, None), "missing_field", "no key")
    assert dead_letter_record(none)[:2] == (None, None)


def test_dead_letter_record_past_the_limit_is_cut_and_says_its_size() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    rej = Reject(Record("t.interactions", 1, 7, b"m1", value), "oversized", "big")
    key, cut, headers = dead_letter_record(rej)
    assert key == b"m1"
    assert dict(headers)[H_TRUNCATED] == str(len(value) + 2).encode()
    assert headers[:5] == dead_letter_headers(rej)
    assert value.startswith(cut)
    total = len(key) + len(cut) + sum(len(k) + len(v) for k, v in headers)
    assert DEAD_LETTER_MAX_BYTES - 100 < total <= DEAD_LETTER_MAX_BYTES
    # A key past half of the room is cut too (the value takes the rest).
    rej = Reject(Record("t.interactions", 1, 7, b"k" * 800_000, value), "bad_model_id", "k")
    key, cut, headers = dead_letter_record(rej)
    assert key is not None and cut is not None and 490_000 < len(key) < 500_000
    assert len(key) + len(cut) + sum(len(k) + len(v) for k, v in headers) <= (
        DEAD_LETTER_MAX_BYTES)


def test_tune_gc_freezes_start_up_and_collects_young_objects_less_often() -> None:
    import gc

    before = gc.get_threshold()
    try:
        alive = [[1]]  # a tracked container, alive at start-up
        assert any(o is alive for o in gc.get_objects())
        tune_gc()
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, before[1], before[2])
        assert not any(o is alive for o in gc.get_objects())  # frozen: never walked
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- the monitor agent's batch handler ------------------------------------------------

async def _handle(dl: Driftline, records: list[Record]) -> None:
    """One batch as the consumer drives it: handle, then (where the agent separates it)
    the checkpoint that publishes state before offsets are committed."""
    await dl.monitor.handle(records)
    await _checkpoint(dl)


async def _checkpoint(dl: Driftline) -> None:
    """A checkpoint and the acknowledgement of what it sent, as the consumer awaits it."""
    durable = await dl.monitor.checkpoint()
    if durable is not None:
        await durable


async def test_create_app_exports_the_false_alarm_budget() -> None:
    reg = CollectorRegistry()
    create_app(_settings(DRIFTLINE_FALSE_ALARM_RATE="2e-7"), metrics=Metrics(reg))
    assert reg.get_sample_value("driftline_false_alarm_budget") == 2e-7
    assert reg.get_sample_value("driftline_budgeted_signals") == 6.0  # the catalogue's


async def test_create_app_assembles_topics_and_agents() -> None:
    dl = create_app(_settings(), metrics=Metrics(CollectorRegistry()))
    assert dl.monitor.inputs == ["t.interactions", "t.feedback", "t.model-updates"]
    assert dl.processor.topics == ("t.interactions", "t.feedback", "t.model-updates")
    assert dl.processor.config == MonitorConfig(warmup=100)
    assert dl.monitor.consumer.group_id == "driftline-unit-monitor"
    assert dl.logger is None  # no interaction sink given
    assert "retrain" in {a.name.rsplit(".", 1)[-1] for a in dl.app.agents.values()}


async def test_monitor_handle_publishes_dead_letters_drift_events_and_state() -> None:
    deployed: list[tuple[str, str]] = []
    dl = _app(deployed=deployed)
    producer = RecordingProducer()
    dl.monitor.producer = producer  # type: ignore[assignment]
    values = _latency("m1", 450, shift_at=250)
    records = [Record("t.interactions", 2, i, b"m1", v) for i, v in enumerate(values)]
    records.insert(10, Record("t.interactions", 2, 450, b"m1", b"{oops"))
    records.append(Record("t.model-updates", 2, 0, b"m1", orjson.dumps(
        {"model_id": "m1", "model_version": "v2", "ts": T0 + 500})))
    await _handle(dl, records)

    dead = producer.on("t.dead-letters")
    assert len(dead) == 1
    assert dead[0]["value"] == b"{oops" and dead[0]["key"] == b"m1"
    assert dead[0]["partition"] == 2  # its source partition (of 3)
    assert dict(dead[0]["headers"])[H_REASON] == b"bad_json"
    assert dict(dead[0]["headers"])[H_OFFSET] == b"450"
    drift = producer.on("t.drift-events")
    assert drift, "the latency shift was not published"
    first = orjson.loads(drift[0]["value"])
    assert drift[0]["key"] == b"m1"
    assert (first["kind"], first["signal"]) == ("behavior", "latency")
    assert int(first["trigger_event_id"].rsplit("-", 1)[1]) >= 250
    state = producer.on("t.monitor-state")
    assert [(m["key"], m["partition"]) for m in state] == [(b"m1", 2)]
    assert state[0]["value"] == state_of(dl.processor, "m1")
    # The deploy reset the model's reference here; recording it in the store is the
    # deploy agent's (its own consumer group): the monitor never waits for the store.
    assert deployed == [] and dl.deploys is not None
    # Signal gauges are read from the detectors when /metrics is scraped (any read of
    # the registry), not per batch: the checkpoint only marks the model.
    assert dl.monitor.gauges.stale == {"m1"}
    reg = dl.metrics.registry
    assert reg.get_sample_value("driftline_dead_letters_published_total",
                                {"reason": "bad_json", "topic": "t.interactions"}) == 1.0
    assert reg.get_sample_value("driftline_interactions_processed_total",
                                {"model": "m1"}) == 450.0
    assert reg.get_sample_value("driftline_batch_processing_seconds_count") == 1.0
    # Signal gauges are read from the detectors when /metrics is scraped, not per batch.
    latency = {"model": "m1", "kind": "behavior", "signal": "latency"}
    # A scrape: the registered collector reads the marked models' detectors.
    assert reg.get_sample_value("driftline_detector_threshold", latency) is not None
    assert dl.monitor.gauges.stale == set()
    assert sum(reg.get_sample_value("driftline_monitored_models", {"phase": p}) or 0
               for p in ("warmup", "monitoring")) == 1

    # The same batch again (a replay before the commit): nothing but nothing new.
    producer.sent.clear()
    await _handle(dl, records)
    assert producer.on("t.drift-events") == [] and producer.on("t.monitor-state") == []
    assert len(producer.on("t.dead-letters")) == 1  # invalid input is not remembered


async def test_dead_letters_go_to_their_source_partition_modulo_the_topics() -> None:
    dl = _app()
    producer = RecordingProducer()  # a dead-letter topic of 3 partitions
    dl.monitor.producer = producer  # type: ignore[assignment]
    sources = (0, 2, 4, 5, 8, 11)  # partition 2 of 3 gets four: more than one batch holds
    await dl.monitor.handle([Record("t.interactions", p, 7, b"m1", b"[1]") for p in sources]
                            + [Record("t.feedback", 3, 1, None, b"{}")])
    assert producer.on("t.dead-letters") == []  # they wait for the checkpoint
    await _checkpoint(dl)
    dead = producer.on("t.dead-letters")
    assert sorted((int(dict(m["headers"])[H_PARTITION]), m["partition"]) for m in dead) == [
        (0, 0), (2, 2), (3, 0), (4, 1), (5, 2), (8, 2), (11, 2)]
    # In order within a partition, whatever the batches.
    assert [dict(m["headers"])[H_PARTITION] for m in dead if m["partition"] == 2] == [
        b"2", b"5", b"8", b"11"]
    reg = dl.metrics.registry
    assert reg.get_sample_value("driftline_dead_letters_published_total",
                                {"reason": "not_object", "topic": "t.interactions"}) == 6.0
    assert reg.get_sample_value("driftline_dead_letters_published_total",
                                {"reason": "missing_field", "topic": "t.feedback"}) == 1.0


async def test_dead_letters_holding_a_megabyte_go_out_before_the_checkpoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from driftline.streams.monitor import agent as monitor_agent

    monkeypatch.setattr(monitor_agent, "DEAD_LETTER_BUFFER_BYTES", 1000)
    dl = _app()
    producer = RecordingProducer()
    dl.monitor.producer = producer  # type: ignore[assignment]
    await dl.monitor.handle([Record("t.interactions", 0, 0, b"m1", b"[" + b"1," * 200 + b"1]")])
    assert producer.on("t.dead-letters") == []  # ~600 bytes: waits
    await dl.monitor.handle([Record("t.interactions", 0, 1, b"m1", b"[" + b"1," * 200 + b"1]")])
    assert len(producer.on("t.dead-letters")) == 2


async def test_restored_state_is_handed_over_once_and_dropped_with_its_partition() -> None:
    """Restored records wait for their model's first record; after that the processor's
    live monitor is the state (no second copy), and a revoke drops the ones never used."""
    from aiokafka import TopicPartition

    dl = _app()
    dl.monitor.producer = RecordingProducer()  # type: ignore[assignment]
    await _handle(dl, [
        Record("t.interactions", 0, 0, b"a", _latency("a", 1, 10**9)[0]),
        Record("t.interactions", 1, 0, b"b", _latency("b", 1, 10**9)[0])])
    blobs = {m: state_of(dl.processor, m) for m in ("a", "b")}
    await _checkpoint(dl)
    assert len(dl.monitor.spill) == 0  # checkpoints publish, they keep no copy
    # As if restored by ``assigned``: a on partition 0, b on partition 1, not loaded yet.
    dl.processor.models.clear()
    dl.monitor.spill.put_many([("a", 0, blobs["a"]), ("b", 1, blobs["b"])])
    await dl.monitor.revoked({TopicPartition("t.interactions", 1),
                              TopicPartition("t.feedback", 0)})
    assert dl.processor.load_state("b") is None
    assert dl.processor.load_state("a") == blobs["a"]
    assert dl.processor.load_state("a") is None and len(dl.monitor.spill) == 0
    # The processor restores a from a handed-over record: a replayed record is known.
    dl.monitor.spill.put_many([("a", 0, blobs["a"])])
    await _handle(dl, [Record("t.interactions", 0, 0, b"a", _latency("a", 1, 10**9)[0])])
    assert len(dl.monitor.spill) == 0 and "a" in dl.processor.models
    assert "a" not in dl.processor._pending  # offset 0 was in the restored state


async def test_idle_models_past_the_cap_are_evicted_at_checkpoints_and_come_back() -> None:
    """DRIFTLINE_MAX_MODELS=2: a checkpoint moves the least recently seen models to the
    spill (after taking their state); a returning model is restored from there, its
    records already applied still skipped."""
    dl = create_app(_settings(DRIFTLINE_MAX_MODELS="2"), metrics=Metrics(CollectorRegistry()),
                    monitor_config=MonitorConfig(warmup=100))
    dl.monitor.producer = RecordingProducer()  # type: ignore[assignment]
    for k, m in enumerate("abcd"):  # one batch (and checkpoint) each: a is the oldest
        await _handle(dl, [Record("t.interactions", 0, k, m.encode(),
                                  _latency(m, 1, 10**9)[0])])
    # Past 2 at c's checkpoint: down to 90% of the cap (1 model), the oldest first.
    assert sorted(dl.processor.models) == ["c", "d"]
    assert len(dl.monitor.spill) == 2 and "a" in dl.monitor.spill and "b" in dl.monitor.spill
    await _handle(dl, [Record("t.interactions", 0, 0, b"a", _latency("a", 1, 10**9)[0]),
                       Record("t.interactions", 0, 4, b"a", _latency("a", 2, 10**9)[1])])
    st = dl.processor.models["a"]
    assert st.offsets == {"t.interactions": 4}
    assert st.monitor.stats()["latency"].phase == "warmup"
    assert dl.processor.processed == 5  # offset 0 of a was not applied twice


# -- the retrain agent through Faust's test context ---------------------------------------

async def test_retrain_agent_with_test_context(monkeypatch: pytest.MonkeyPatch) -> None:
    import faust.topics

    sent: list[tuple[str, bytes, bytes]] = []

    async def send(self: Any, *, key: bytes, value: bytes, **kw: Any) -> asyncio.Future[None]:
        sent.append((self.get_topic_name(), key, value))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    # No broker: record what the agent publishes instead of starting a producer.
    monkeypatch.setattr(faust.topics.Topic, "send", send)
    retrain: list[list[dict[str, Any]]] = []
    dl = _app(retrain=retrain)
    agent = next(a for a in dl.app.agents.values() if a.name.endswith("retrain"))
    events = [{"schema_version": 1, "drift_id": f"d{i}", "model_id": "m1", "model_version": "v1",
               "kind": "behavior", "signal": "latency", "detector": "cusum_up",
               "trigger_event_id": f"e{i}", "detected_at": "2026-01-01T00:00:00.000Z",
               "baseline": 1.0, "current": 2.0, "severity": 1.5} for i in range(99)]
    async with agent.test_context() as ctx:
        for ev in events[:50]:
            await ctx.put(key=b"m1", value=orjson.dumps(ev))
        await ctx.put(key=b"m1", value=b"not json")  # a dead letter
        for ev in events[50:]:
            await ctx.put(key=b"m1", value=orjson.dumps(ev))
        # 100 events fill take_events(100, 0.5): the batch is handed over without waiting
        # for the time window; yield to the agent until it has run (bounded, no sleep).
        for _ in range(1000):
            if sent:
                break
            await asyncio.sleep(0)
    assert retrain == [events]
    assert [(t, k) for t, k, _ in sent] == [("t.dead-letters", b"m1"),
                                            ("t.retrain-requests", b"k")]
    assert sent[0][2] == b"not json" and sent[1][2] == b'{"n":99}'


@pytest.mark.parametrize("level", ["warning", "error"])
def test_worker_keeps_the_root_logger_at_the_level_asked_for(level: str) -> None:
    """Faust's start-up spinner sets the root logger to DEBUG at these levels, for the life
    of the process: every ``log.debug`` of aiokafka (one per message sent) would build a
    record only for the console handler to drop it."""
    import logging

    from driftline.streams.worker import _worker_class

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        worker = _worker_class()(create_app(_settings()).app, loglevel=level, quiet=True,
                                 redirect_stdouts=False)
        worker._setup_logging()
        assert root.level == logging.getLevelName(level.upper())
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
        assert all(h.level >= root.level for h in root.handlers)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_healthz_says_failed_with_the_reason_once_a_checkpoint_failed() -> None:
    from driftline.streams.app import health_of
    from driftline.streams.monitor.state_codec import StateError

    dl = _app()
    assert health_of(dl)["status"] == "ok"
    dl.monitor.consumer.fail(StateError("unsupported monitor state version 9"))
    doc = health_of(dl)
    assert (doc["status"], doc["reason"]) == (
        "failed", "StateError: unsupported monitor state version 9")
    with pytest.raises(RuntimeError, match="monitor: StateError: unsupported monitor state"):
        dl.monitor.consumer.raise_if_failed()


async def test_deploy_agent_records_valid_notices_and_dead_letters_refused_ones() -> None:
    from driftline.streams.store.errors import StoreError, StoreUnavailable

    calls: list[tuple[str, str]] = []

    async def record(model_id: str, version: str) -> None:
        calls.append((model_id, version))
        if version == "bad":
            raise StoreError("mark deployed: value too long")

    dl = create_app(_settings(), metrics=Metrics(CollectorRegistry()),
                    monitor_config=MonitorConfig(warmup=100), deploy_handler=record)
    agent = dl.deploys
    assert agent is not None and agent.consumer.group_id == "driftline-unit-deploys"
    assert agent.consumer.topics == ["t.model-updates"]
    producer = SendAndWaitProducer()
    agent.producer = producer

    def update(offset: int, model: str, version: str) -> Record:
        return Record("t.model-updates", 1, offset, model.encode(), orjson.dumps(
            {"model_id": model, "model_version": version, "ts": T0, "kind": "deployed"}))

    await agent.handle([update(0, "m1", "v2"), Record("t.model-updates", 1, 1, b"m1", b"{"),
                        update(2, "m2", "bad"), update(3, "m3", "v7")])
    assert calls == [("m1", "v2"), ("m2", "bad"), ("m3", "v7")]  # the invalid one skipped
    assert agent.recorded == 2
    assert [(t, dict(h)[H_REASON], dict(h)[H_OFFSET]) for t, _, h in producer.sent] == [
        ("t.dead-letters", b"store_rejected", b"2")]

    async def down(model_id: str, version: str) -> None:
        raise StoreUnavailable("mark deployed: no answer (gave up after 3 attempts)")

    agent.handler = down
    with pytest.raises(StoreUnavailable, match="gave up after 3 attempts"):
        await agent.handle([update(4, "m4", "v1")])  # not committed: read again later
    assert len(producer.sent) == 1


class SendAndWaitProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = []

    async def send_and_wait(self, topic: str, value: bytes | None, *, key: bytes | None,
                            headers: list[tuple[str, bytes]]) -> None:
        self.sent.append((topic, value, headers))
