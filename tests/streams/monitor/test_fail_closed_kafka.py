"""Nothing lost, fail closed — the real ``driftline worker`` on the real broker.

* A drift event the broker refuses while it would take the state: the worker publishes no
  state covering the detection, commits nothing past it and exits non-zero; once the
  broker takes drift events again, a restarted worker publishes the detection (the
  reference run's event, same ``drift_id``).
* An unreadable state record: the worker does not start the model afresh (whose next
  checkpoint would overwrite the state); it exits non-zero before processing anything.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from driftline.streams.app import ensure_topics
from driftline.streams.config import Settings

from tests.fixtures_kafka import produce, wait_for
from tests.streams.monitor.test_durability_kafka import (
    PARTITIONS,
    _assert_same_as_reference,
    _drift_events,
    _env,
    _index,
    _latency,
    _monitor_group,
    _msgs,
    _partition_of,
    _read_all,
    _reference,
    _send_to_partition,
    _states,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

WARMUP, SHIFT, N = 100, 150, 250
TOO_SMALL = "200"  # bytes: a drift event (~600 bytes of JSON) does not fit
BROKER_DEFAULT = "1048588"


async def _drift_topic(bootstrap: str, name: str, max_bytes: str, create: bool) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(name, PARTITIONS, 1,
                                                topic_configs={"max.message.bytes": max_bytes})])
        else:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                      {"max.message.bytes": max_bytes})])
    finally:
        await admin.close()


def _exited(w: Any) -> int | None:
    return w.proc.poll()


def _committed_any(bootstrap: str, group: str) -> bool:
    async def q() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
            return any(m.offset > 0 for m in offsets.values())
        finally:
            await admin.close()
    return asyncio.run(q())


def test_a_refused_drift_event_is_published_after_restart_not_lost(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    p = topic_prefix
    topic, drift_topic = f"{p}.interactions", f"{p}.drift-events"
    model = f"{p}-lost"
    docs = _latency(model, N, seed=31, shift_at=SHIFT)
    ref = _reference(p, WARMUP, _msgs(topic, docs))
    assert len(ref) == 1, ref
    trigger = _index(ref[0]["trigger_event_id"])  # == its offset (one model, one partition)
    # The broker refuses drift events (record too large for their topic); the state topic
    # takes records of up to 16 MiB, so the state of the same checkpoint would go through.
    asyncio.run(_drift_topic(kafka_bootstrap, drift_topic, TOO_SMALL, create=True))
    env = _env(postgres_dsn, WARMUP)

    w = run_worker(env, name="a")
    produce(kafka_bootstrap, _msgs(topic, docs))
    code = wait_for(lambda: _exited(w), 120, "the worker to stop on the refused drift event")
    assert code not in (0, None), w.tail()
    assert "MessageSizeTooLarge" in w.log.read_text(errors="replace"), w.tail()
    assert _drift_events(kafka_bootstrap, p) == []
    # No state covers the detection: the latest one (if any) is from before the trigger.
    st = _states(kafka_bootstrap, p).get(model)
    assert st is None or st.offsets[topic] < trigger, st.offsets
    assert not _committed_any(kafka_bootstrap, _monitor_group(p)) or (
        st is not None and st.offsets[topic] < trigger)

    asyncio.run(_drift_topic(kafka_bootstrap, drift_topic, BROKER_DEFAULT, create=False))
    w = run_worker(env, name="a")
    events = wait_for(lambda: _drift_events(kafka_bootstrap, p), 120,
                      "the detection, published after the restart", w)
    copies = _assert_same_as_reference(events, ref)
    assert copies == {ref[0]["drift_id"]: 1}
    assert w.health()["status"] == "ok"


def test_an_unreadable_state_record_stops_the_worker_before_it_starts_afresh(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    p = topic_prefix
    topic, state_topic = f"{p}.interactions", f"{p}.monitor-state"
    model = f"{p}-unreadable"
    settings = Settings.from_env({"DRIFTLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                  "DRIFTLINE_TOPIC_PREFIX": p})
    asyncio.run(ensure_topics(settings))
    garbage = b"\x09not a state record this build wrote"
    asyncio.run(_send_to_partition(kafka_bootstrap, state_topic, _partition_of(model),
                                   model.encode(), garbage))
    produce(kafka_bootstrap, _msgs(topic, _latency(model, N, seed=32, shift_at=SHIFT)))

    w = run_worker(_env(postgres_dsn, WARMUP), name="u")
    code = wait_for(lambda: _exited(w), 120, "the worker to stop on the unreadable state")
    assert code not in (0, None), w.tail()
    log = w.log.read_text(errors="replace")
    assert "StateError" in log and "unsupported monitor state version 9" in log, w.tail()
    # Nothing processed, nothing written over the state, nothing committed.
    latest = [m for m in _read_all(kafka_bootstrap, state_topic) if m.key == model.encode()]
    assert [m.value for m in latest] == [garbage]
    assert _drift_events(kafka_bootstrap, p) == []
    assert not _committed_any(kafka_bootstrap, _monitor_group(p))
