"""Durability of the monitor on the real broker, with the real ``driftline worker`` process.

kill -9 and restart, a replay onto older state, a rebalance between two workers, delayed
labels, a deploy that restarts the reference, and poison messages on the less common paths.

Every expectation comes from an uninterrupted reference run: the same records, in the same
per-model order, through :class:`driftline.streams.monitor.processor.MonitorProcessor` in-process
with the worker's ``MonitorConfig(warmup=DRIFTLINE_WARMUP)``. However the worker is killed,
restarted or rebalanced, it must publish the reference's drift events (same ``drift_id``, same
trigger, same numbers; a repeat is allowed, a second identity is not) and apply every record to its
model exactly once — checked on the state in ``<prefix>.monitor-state``, whose signals count
the values they were fed (``seen``).

Cross-topic order (an interaction vs. a label or a deploy) is whatever the worker's fetches
make it, so the tests publish a later topic only after the worker has handled the earlier
records; within a topic a model's records keep their order (one partition per model).
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import asyncpg
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from driftline.detectors import MonitorConfig
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.state_codec import LatestStates, decode_state
from prometheus_client import CollectorRegistry

from tests.fixtures_kafka import WorkerProcess, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

T0 = 1_767_225_600.0
PARTITIONS = 4  # the default of DRIFTLINE_PARTITIONS, which the fixtures keep
PROCESSED = "driftline_interactions_processed_total"
Msg = tuple[str, bytes | None, bytes | None]


# -- data and the reference run ---------------------------------------------------------

def _latency(model: str, n: int, *, seed: int, shift_at: int | None = None,
             factor: float = 1.5, median: float = 500.0, start: int = 0,
             version: str = "v1", error: tuple[float, float] | None = None
             ) -> list[dict[str, Any]]:
    """``n`` interactions of ``model`` (ids ``<model>-<start + i>``), lognormal latency around
    ``median``, multiplied by ``factor`` from ``shift_at`` on; with ``error`` =
    (before, after) an inline ``correct`` label whose error rate moves at ``shift_at``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shifted = shift_at is not None and i >= shift_at
        doc: dict[str, Any] = {
            "event_id": f"{model}-{start + i}", "model_id": model, "model_version": version,
            "ts": T0 + start + i,
            "latency_ms": round(float(rng.lognormal(
                math.log(median * (factor if shifted else 1.0)), 0.3)), 3)}
        if error is not None:
            doc["correct"] = bool(rng.random() >= error[1 if shifted else 0])
        out.append(doc)
    return out


def _index(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def _msgs(topic: str, docs: Iterable[dict[str, Any]]) -> list[Msg]:
    return [(topic, str(d["model_id"]).encode(), orjson.dumps(d)) for d in docs]


def _interleave(streams: Iterable[list[dict[str, Any]]], lo: int = 0,
                hi: int | None = None) -> list[dict[str, Any]]:
    """Round-robin over the models' streams, positions ``lo`` to ``hi``."""
    cols = list(streams)
    end = max(len(s) for s in cols) if hi is None else hi
    return [s[i] for i in range(lo, end) for s in cols if i < len(s)]


def _reference(prefix: str, warmup: int, msgs: list[Msg]) -> list[dict[str, Any]]:
    """The drift events of an uninterrupted in-process run over ``msgs`` (in this order)."""
    proc = MonitorProcessor(
        interactions_topic=f"{prefix}.interactions", feedback_topic=f"{prefix}.feedback",
        updates_topic=f"{prefix}.model-updates", monitor_config=MonitorConfig(warmup=warmup),
        metrics=Metrics(CollectorRegistry()))
    offsets: Counter[tuple[str, bytes | None]] = Counter()
    records = []
    for topic, key, value in msgs:
        records.append(Record(topic, 0, offsets[topic, key], key, value))
        offsets[topic, key] += 1
    return [ev for _, ev in proc.process(records).drift_events]


def _env(postgres_dsn: str, warmup: int) -> dict[str, str]:
    # No interaction logging: it is not under test and costs CPU on a small machine.
    # Faust's own group (the retrain agent) waits for a killed member's session to expire
    # before the worker starts its services, the monitor agent included: 60 s by default,
    # 10 s here (Faust reads BROKER_* from the environment).
    return {"DATABASE_URL": postgres_dsn, "DRIFTLINE_WARMUP": str(warmup),
            "DRIFTLINE_LOG_SAMPLE_RATE": "0", "BROKER_SESSION_TIMEOUT": "10",
            "BROKER_REBALANCE_TIMEOUT": "10"}


# -- reading the broker -----------------------------------------------------------------

def _tps(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


async def _read_all_async(bootstrap: str, topic: str) -> list[Any]:
    # "earliest" also for the implicit reset on assign(): with "latest", a reset still in
    # flight when seek_to_beginning() is called lands the position at the end (aiokafka).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = _tps(topic)
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=500)
            for tp, msgs in fetched.items():
                out.extend(m for m in msgs if m.offset < end[tp])
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
        return sorted(out, key=lambda m: (m.partition, m.offset))
    finally:
        await consumer.stop()


def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end (a plain consumer, no group)."""
    return asyncio.run(_read_all_async(bootstrap, topic))


def _drift_events(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in _read_all(bootstrap, f"{prefix}.drift-events")]


async def _lag_async(bootstrap: str, group: str, topics: list[str]) -> int:
    tps = [tp for t in topics for tp in _tps(t)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        return sum(max(0, end[tp] - max(committed[tp].offset if tp in committed else 0, 0))
                   for tp in tps)
    finally:
        await admin.close()
        await consumer.stop()


def _monitor_group(prefix: str) -> str:
    return f"{prefix}-app-monitor"  # run_worker's app id + the monitor agent's suffix


def _inputs(prefix: str) -> list[str]:
    return [f"{prefix}.interactions", f"{prefix}.feedback", f"{prefix}.model-updates"]


def _drained(bootstrap: str, prefix: str) -> bool:
    """The monitor group committed every input record: each batch was handled and its
    drift events, dead letters and state acknowledged (they precede the commit)."""
    try:
        return asyncio.run(_lag_async(bootstrap, _monitor_group(prefix), _inputs(prefix))) == 0
    except KafkaError:  # e.g. no group coordinator yet on a fresh broker: ask again
        return False


def _states(bootstrap: str, prefix: str) -> dict[str, Any]:
    """The latest monitor state per model, decoded (``ModelState``). Read with this
    module's reader, not the worker's ``read_state``: the test checks that one; both put
    a state together from its records with ``LatestStates``."""
    records = [(m.key, m.value, m.partition)
               for m in _read_all(bootstrap, f"{prefix}.monitor-state")]
    return {k: decode_state(v, part) for k, (part, v) in LatestStates.of(records).items()}


def _restores(*workers: WorkerProcess) -> list[str]:
    """What each worker logged about restoring state on assignment (for failure messages)."""
    return [line.split("] ", 3)[-1] for w in workers
            for line in w.log.read_text(errors="replace").splitlines()
            if "model states in" in line]


def _detector(state: Any, signal_name: str, name: str) -> Any:
    """One CUSUM of a restored signal (``s`` its statistic, ``h`` its threshold)."""
    return next(d for d in state.monitor.signals[signal_name].dets if d.name == name)


def _seen(states: dict[str, Any], model: str, signal_name: str = "latency") -> int:
    """How many values the model's signal was fed: each record applied once adds one."""
    st = states.get(model)
    return 0 if st is None else int(st.monitor.signals[signal_name].seen)


async def _send_to_partition(bootstrap: str, topic: str, partition: int, key: bytes,
                             value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await (await producer.send(topic, value, key=key, partition=partition))
    finally:
        await producer.stop()


async def _rewind_async(bootstrap: str, group: str, topics: list[str], within_s: float
                        ) -> None:
    """Commit offset 0 for every input partition: the group's next member replays all.
    The broker takes a commit from outside the group only once the group is empty, i.e.
    once a killed member's session expired."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [tp for t in topics for tp in _tps(t)]
        consumer.assign(tps)
        deadline = time.monotonic() + within_s
        while True:
            try:
                await consumer.commit({tp: 0 for tp in tps})
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


async def _group_async(bootstrap: str, group: str) -> tuple[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        desc = (await admin.describe_consumer_groups([group]))[0].groups[0]
        return str(desc[2]), len(desc[5])  # state, members
    finally:
        await admin.close()


def _group(bootstrap: str, group: str) -> tuple[str, int]:
    """The consumer group's state and number of members."""
    try:
        return asyncio.run(_group_async(bootstrap, group))
    except KafkaError:
        return "", 0


def _partition_of(key: str) -> int:
    """The partition aiokafka's default partitioner picks for ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def _query(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def q() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    return asyncio.run(q())


def _assert_same_as_reference(events: list[dict[str, Any]], ref: list[dict[str, Any]]
                              ) -> Counter[str]:
    """Each reference detection is on the topic, every copy identical to the reference
    event; nothing else is. Returns the number of copies per drift_id."""
    by_id = {ev["drift_id"]: ev for ev in ref}
    assert len(by_id) == len(ref), "the reference itself repeats a drift_id"
    copies = Counter(ev["drift_id"] for ev in events)
    assert set(copies) == set(by_id), (sorted(copies), sorted(by_id))
    for ev in events:
        assert ev == by_id[ev["drift_id"]], (ev, by_id[ev["drift_id"]])
    return copies


# -- 1. kill -9 while a shift accumulates ------------------------------------------------

WARMUP = 100
SHIFT = 150
N = 250  # < every trigger + WARMUP: after its alarm a signal re-warms, no second detection


def test_kill_9_twice_while_a_shift_accumulates_detects_at_the_reference_trigger(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    p = topic_prefix
    topic = f"{p}.interactions"
    drifting = {f"{p}-a": 11, f"{p}-b": 12}
    calm = f"{p}-calm"
    streams = [_latency(m, N, seed=s, shift_at=SHIFT) for m, s in drifting.items()]
    streams.append(_latency(calm, N, seed=13))
    models = [*drifting, calm]
    ref = _reference(p, WARMUP, _msgs(topic, _interleave(streams)))
    trigger = {ev["model_id"]: _index(ev["trigger_event_id"]) for ev in ref}
    assert len(ref) == 2 and set(trigger) == set(drifting), ref
    delay = min(trigger.values()) - SHIFT
    assert delay >= 9, trigger  # room for two kills between the shift and the detection
    kills = [SHIFT + delay // 3, SHIFT + 2 * delay // 3]
    # Reference samples (100 latencies, 800 bytes) go to state records of their own, as
    # bigger ones do by default: the restarts must put each state back together.
    env = {**_env(postgres_dsn, WARMUP), "DRIFTLINE_STATE_APART_BYTES": "256"}

    def publish(lo: int, hi: int) -> None:
        produce(kafka_bootstrap, _msgs(topic, _interleave(streams, lo, hi)))

    # Kill 1: right after the worker applied the first post-shift records — before or after
    # it flushed their state, whichever the race gives: both must come out the same.
    w = run_worker(env, name="k")
    workers = [w]
    publish(0, SHIFT)
    wait_for(lambda: _drained(kafka_bootstrap, p), 90, "the warm-up committed", w)
    publish(SHIFT, kills[0])
    wait_for(lambda: w.metric(PROCESSED) >= 3 * kills[0], 90, "the first part processed", w)
    w.stop(signal.SIGKILL)
    published = kills[0]
    for nxt in (kills[1], N):
        states = _states(kafka_bootstrap, p)
        applied = {m: _seen(states, m) for m in models}
        # What the killed worker left: never more than it was given.
        assert all(SHIFT <= a <= published for a in applied.values()), (published, applied)
        if nxt == N:
            # Kill 2 came after a commit: the state holds the shift half accumulated.
            assert applied == dict.fromkeys(models, published)
            for m in drifting:
                up = _detector(states[m], "latency", "cusum_mean_up")
                assert 0 < up.s < up.h, (m, up.s, up.h)
        publish(published, nxt)
        published = nxt
        w = run_worker(env, name="k")
        workers.append(w)
        todo = 3 * published - sum(applied.values())  # what the restored state lacks
        wait_for(lambda: w.metric(PROCESSED) >= todo, 90,  # noqa: B023
                 f"{todo} interactions after the restart", w)
        assert w.metric(PROCESSED) == todo, "a record was applied twice after the restart"
        if nxt != N:
            wait_for(lambda: _drained(kafka_bootstrap, p), 60, "the part committed", w)
            assert not _drift_events(kafka_bootstrap, p), "detected before the trigger"
            w.stop(signal.SIGKILL)  # kill 2
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "the last batch committed", w)

    # Across two kills every interaction reached its model exactly once.
    apart = {m.key.split(b"\0")[0] for m in _read_all(kafka_bootstrap, f"{p}.monitor-state")
             if m.key is not None and b"\0" in m.key and m.value is not None}
    assert apart == {m.encode() for m in models}, apart
    final = _states(kafka_bootstrap, p)
    assert {m: _seen(final, m) for m in models} == dict.fromkeys(models, N), _restores(*workers)
    copies = _assert_same_as_reference(_drift_events(kafka_bootstrap, p), ref)
    for ev in ref:
        assert SHIFT < _index(ev["trigger_event_id"]) < SHIFT + 100, ev
        assert (ev["kind"], ev["signal"]) == ("behavior", "latency")
    assert all(c >= 1 for c in copies.values())
    # Nothing in the calm model: the restarts did not restart its warm-up on drifted data.
    assert calm not in {ev["model_id"] for ev in _drift_events(kafka_bootstrap, p)}


# -- 2. a replay onto state older than the published drift event -----------------------

def test_replay_after_kill_onto_older_state_re_emits_the_same_drift_id(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    p = topic_prefix
    topic = f"{p}.interactions"
    model = f"{p}-replay"
    docs = _latency(model, N, seed=21, shift_at=SHIFT)
    extra = _latency(model, 20, seed=22, median=500.0 * 1.5, start=N)  # the shifted level
    ref = _reference(p, WARMUP, _msgs(topic, docs + extra))
    assert len(ref) == 1, ref
    trigger = _index(ref[0]["trigger_event_id"])  # == its offset: one model, one partition
    env = _env(postgres_dsn, WARMUP)

    w = run_worker(env, name="r")
    produce(kafka_bootstrap, _msgs(topic, docs[:SHIFT]))
    wait_for(lambda: _drained(kafka_bootstrap, p), 90, "the warm-up committed", w)
    produce(kafka_bootstrap, _msgs(topic, docs[SHIFT:]))
    wait_for(lambda: _drift_events(kafka_bootstrap, p), 90, "the drift event", w)
    w.stop(signal.SIGKILL)

    # Make the crash the worst one: the drift event is out, but neither the state holding
    # it nor any offset is. Put back the last state from before the trigger, rewind the
    # group to the beginning.
    state_topic = f"{p}.monitor-state"
    history = [m for m in _read_all(kafka_bootstrap, state_topic) if m.key == model.encode()]
    older = [m for m in history
             if decode_state(m.value, m.partition).offsets[topic] < trigger]
    assert older, "no state record from before the trigger"
    old = older[-1]
    old_offset = decode_state(old.value, old.partition).offsets[topic]
    asyncio.run(_send_to_partition(kafka_bootstrap, state_topic, old.partition, old.key,
                                   old.value))
    asyncio.run(_rewind_async(kafka_bootstrap, _monitor_group(p), _inputs(p), 45))

    w = run_worker(env, name="r")
    produce(kafka_bootstrap, _msgs(topic, extra))
    # Offsets up to the old state's are skipped, the rest re-applied once, then the extra.
    todo = (N - 1 - old_offset) + len(extra)
    wait_for(lambda: w.metric(PROCESSED) >= todo, 90, f"{todo} interactions", w)
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "everything committed", w)
    assert w.metric(PROCESSED) == todo, _restores(w)
    assert w.health()["interactions_processed"] == todo  # what the benchmark polls

    events = _drift_events(kafka_bootstrap, p)
    copies = _assert_same_as_reference(events, ref)
    # The detection was replayed and re-emitted — under the same identity.
    assert copies == {ref[0]["drift_id"]: 2}, copies
    assert _seen(_states(kafka_bootstrap, p), model) == N + len(extra)


# -- 3. two workers and a rebalance -----------------------------------------------------

def test_two_workers_and_a_rebalance_detect_each_drift_exactly_once(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    p = topic_prefix
    topic = f"{p}.interactions"
    n = 400
    # Three models per partition, so whichever partitions a worker gets, it gets models.
    names: dict[int, list[str]] = {k: [] for k in range(PARTITIONS)}
    i = 0
    while any(len(v) < 3 for v in names.values()):
        m = f"{p}-m{i}"
        if len(names[_partition_of(m)]) < 3:
            names[_partition_of(m)].append(m)
        i += 1
    drifting = [m for k in range(PARTITIONS) for m in names[k][:2]]
    calm = [names[k][2] for k in range(PARTITIONS)]
    shift_at = {m: 120 + 25 * j for j, m in enumerate(drifting)}  # 120 ... 295
    streams = [_latency(m, n, seed=30 + j, shift_at=shift_at.get(m))
               for j, m in enumerate(drifting + calm)]
    ref = _reference(p, WARMUP, _msgs(topic, _interleave(streams)))
    assert sorted(ev["model_id"] for ev in ref) == sorted(drifting), ref
    total = n * len(streams)
    env = _env(postgres_dsn, WARMUP)

    def publish(lo: int, hi: int) -> None:
        produce(kafka_bootstrap, _msgs(topic, _interleave(streams, lo, hi)))

    a = run_worker(env, name="a")
    publish(0, 130)
    wait_for(lambda: a.metric(PROCESSED) >= 130 * len(streams), 90, "part 1 on A", a)
    b = run_worker(env, name="b")
    wait_for(lambda: _group(kafka_bootstrap, _monitor_group(p)) == ("Stable", 2), 60,
             "A and B sharing the partitions", b)
    publish(130, 260)
    wait_for(lambda: b.metric(PROCESSED) > 0, 90, "B processing part 2", b)
    a_before = a.metric(PROCESSED)
    # Stop A gracefully while part 3 is being published.
    def feed() -> None:
        for lo in range(260, n, 35):
            publish(lo, min(lo + 35, n))

    feeder = threading.Thread(target=feed)
    feeder.start()
    a.stop(signal.SIGTERM)
    feeder.join()
    assert a.proc.returncode != -signal.SIGKILL, f"A did not stop on SIGTERM:\n{a.tail(150)}"
    wait_for(lambda: _drained(kafka_bootstrap, p), 90, "every batch committed", b)

    # Every interaction reached its model exactly once, across the hand-overs.
    states = _states(kafka_bootstrap, p)
    assert {m: _seen(states, m) for m in drifting + calm} == dict.fromkeys(drifting + calm, n), (
        _restores(a, b))
    copies = _assert_same_as_reference(_drift_events(kafka_bootstrap, p), ref)
    assert len(copies) == len(drifting)
    b_total = b.metric(PROCESSED)
    assert a_before > 0 and b_total > 0, (a_before, b_total)
    # A's count grew after it was read, so A-read + B can only fall short of the total...
    assert a_before + b_total <= total, (a_before, b_total, total)
    for ev in ref:
        assert shift_at[ev["model_id"]] < _index(ev["trigger_event_id"]) < n, ev


# -- 4. delayed labels --------------------------------------------------------------------

def test_delayed_feedback_moves_the_accuracy_detector(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    p = topic_prefix
    model = f"{p}-acc"
    n, change = 1320, 1020  # the error rate's warm-up takes 10 * warmup labels at 10 %
    docs = _latency(model, n, seed=41)
    rng = np.random.default_rng(42)
    labels = [{"event_id": d["event_id"], "model_id": model, "ts": d["ts"] + 30.0,
               "correct": bool(rng.random() >= (0.4 if i >= change else 0.1))}
              for i, d in enumerate(docs)]
    interactions = _msgs(f"{p}.interactions", docs)
    feedback = _msgs(f"{p}.feedback", labels)
    ref = _reference(p, WARMUP, interactions + feedback)
    assert [(ev["kind"], ev["signal"]) for ev in ref] == [("accuracy", "error_rate")], ref

    w = run_worker(_env(postgres_dsn, WARMUP), name="f")
    produce(kafka_bootstrap, interactions)
    wait_for(lambda: w.metric(PROCESSED) >= n, 90, "the interactions", w)
    produce(kafka_bootstrap, feedback)  # the labels arrive later
    wait_for(lambda: _drift_events(kafka_bootstrap, p), 90, "the accuracy drift event", w)
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "every label committed", w)

    events = _drift_events(kafka_bootstrap, p)
    _assert_same_as_reference(events, ref)
    ev = events[0]
    assert (ev["model_id"], ev["kind"], ev["detector"]) == (model,
                                                          "accuracy", "bernoulli_cusum_up")
    labelled = {lab["event_id"] for lab in labels[change:]}
    assert ev["trigger_event_id"] in labelled  # a labelled interaction after the change
    assert change < _index(ev["trigger_event_id"]) < change + 150, ev
    assert 0.05 < ev["baseline"] < 0.15, ev
    assert ev["current"] > 0.25, ev
    assert w.metric(PROCESSED) == n  # labels are not interactions
    assert _seen(_states(kafka_bootstrap, p), model, "error_rate") == n


# -- 5. a deploy restarts the reference ---------------------------------------------------

def test_model_update_restarts_the_reference_and_closes_the_retrain_job(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    """M and C get the same values; only M gets a deploy. v1: latency x3 and errors 10 % ->
    40 % at 1100 (a latency and an accuracy drift, a retrain job). v2 runs at 250 ms — below
    v1's 500 ms and far below the 1500 ms v1 re-baselined on after its alarm — for a
    warm-up and 100 more, then x1.5. Restarted reference: nothing until the x1.5, then a
    drift whose baseline is v2's 250 ms. Control C (no reset): a drift as soon as v2 starts."""
    p = topic_prefix
    upd, ctl = f"{p}-upd", f"{p}-ctl"
    n1, shift1, quiet2, n2 = 1400, 1100, WARMUP + 100, WARMUP + 250
    v1 = {m: _latency(m, n1, seed=51, shift_at=shift1, factor=3.0, error=(0.1, 0.4))
          for m in (upd, ctl)}
    v2 = {m: _latency(m, n2, seed=52, shift_at=quiet2, factor=1.5, median=250.0, start=n1,
                      version="v2") for m in (upd, ctl)}
    topic = f"{p}.interactions"
    deploy: list[Msg] = [(f"{p}.model-updates", upd.encode(), orjson.dumps(
        {"model_id": upd, "model_version": "v2", "ts": T0 + n1, "kind": "deployed"}))]
    phase1 = _msgs(topic, _interleave(v1.values()))
    phase3 = _msgs(topic, _interleave(v2.values()))
    ref = _reference(p, WARMUP, phase1 + deploy + phase3)
    ref_of = {m: [ev for ev in ref if ev["model_id"] == m] for m in (upd, ctl)}
    upd_v2 = [ev for ev in ref_of[upd] if ev["model_version"] == "v2"]
    # The design holds in the reference: M's v2 drift is the x1.5 shift, measured against
    # v2's own level; C, without the reset, fires on v2's first (unshifted) values.
    assert len(upd_v2) == 1 and upd_v2[0]["detector"] == "cusum_mean_up", ref_of[upd]
    assert _index(upd_v2[0]["trigger_event_id"]) >= n1 + quiet2
    assert 200.0 < upd_v2[0]["baseline"] < 300.0, upd_v2
    assert any(n1 <= _index(ev["trigger_event_id"]) < n1 + quiet2 for ev in ref_of[ctl])

    w = run_worker(_env(postgres_dsn, WARMUP), name="u")
    produce(kafka_bootstrap, phase1)
    wait_for(lambda: w.metric(PROCESSED) >= 2 * n1, 90, "v1 processed", w)

    def retrain_jobs(model: str) -> list[dict[str, Any]]:
        return _query(postgres_dsn, "select state, deployed_version from retrain_jobs"
                      " where model_id = $1 and action = 'retrain'", model)

    # The deploy must find the job (a deploy inside the grouping window supersedes it).
    for m in (upd, ctl):
        wait_for(lambda: [j["state"] for j in retrain_jobs(m)] == ["running"],  # noqa: B023
                 60, f"the retrain job of {m} running", w)
    produce(kafka_bootstrap, deploy)
    wait_for(lambda: retrain_jobs(upd) == [{"state": "succeeded", "deployed_version": "v2"}],
             60, "the retrain job closed by the deploy", w)
    produce(kafka_bootstrap, phase3)
    wait_for(lambda: w.metric(PROCESSED) >= 2 * (n1 + n2), 90, "v2 processed", w)
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "everything committed", w)

    events = _drift_events(kafka_bootstrap, p)
    _assert_same_as_reference(events, ref)
    got_v2 = [ev for ev in events if ev["model_id"] == upd and _index(ev["trigger_event_id"])
              >= n1]
    assert got_v2 == upd_v2  # none while v2 ran at its own level, one for the x1.5
    assert got_v2[0]["model_version"] == "v2"
    assert any(ev["model_id"] == ctl and n1 <= _index(ev["trigger_event_id"]) < n1 + quiet2
               for ev in events)
    # Only the deployed model's job is closed.
    assert retrain_jobs(ctl) == [{"state": "running", "deployed_version": None}]
    assert _query(postgres_dsn, "select model_version from model_versions where model_id = $1",
                  upd) == [{"model_version": "v2"}]


# -- 6. poison on the less common paths ---------------------------------------------------

def test_embedding_dimension_change_and_keyless_feedback_reach_dead_letters(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    p = topic_prefix
    model = f"{p}-emb"
    rng = np.random.default_rng(61)

    def interaction(i: int, dim: int, version: str = "v1") -> dict[str, Any]:
        return {"event_id": f"{model}-{i}", "model_id": model, "model_version": version,
                "ts": T0 + i, "latency_ms": 100.0 + i,
                "embedding": [round(float(x), 5) for x in rng.standard_normal(dim)]}

    docs = [interaction(i, 16 if i == 6 else 8) for i in range(12)]
    interactions = _msgs(f"{p}.interactions", docs)
    bad_interaction = interactions[6]
    fb_topic = f"{p}.feedback"

    def label(i: int) -> bytes:
        return orjson.dumps({"event_id": f"{model}-{i}", "model_id": model, "ts": T0 + 50 + i,
                             "correct": True})

    keyless: Msg = (fb_topic, None, label(1))
    no_event_id: Msg = (fb_topic, model.encode(),
                        orjson.dumps({"model_id": model, "ts": T0 + 60, "correct": False}))
    feedback: list[Msg] = [(fb_topic, model.encode(), label(0)), keyless,
                           (fb_topic, model.encode(), label(2)), no_event_id,
                           (fb_topic, model.encode(), label(3))]
    w = run_worker(_env(postgres_dsn, 50), name="p")
    produce(kafka_bootstrap, interactions + feedback)

    wait_for(lambda: len(_read_all(kafka_bootstrap, f"{p}.dead-letters")) >= 3, 90,
             "three dead letters", w)
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "everything committed", w)
    dead = _read_all(kafka_bootstrap, f"{p}.dead-letters")
    got = sorted((h["driftline.error.reason"], h["driftline.source.topic"], m.value, m.key)
                 for m in dead for h in [{k: v.decode() for k, v in m.headers}])
    assert len(dead) == 3
    assert got == sorted([
        ("embedding_dim_changed", f"{p}.interactions", bad_interaction[2], model.encode()),
        ("missing_field", fb_topic, keyless[2], None),
        ("missing_field", fb_topic, no_event_id[2], model.encode())])
    dim_msg = next(m for m in dead
                   if dict(m.headers)["driftline.error.reason"] == b"embedding_dim_changed")
    assert dict(dim_msg.headers)["driftline.source.offset"] == b"6"  # its own offset
    # The good records around them were applied, each once.
    assert w.metric(PROCESSED) == 11
    assert w.metric("driftline_dead_letters_published_total") == 3
    states = _states(kafka_bootstrap, p)
    assert _seen(states, model, "latency") == 11
    assert _seen(states, model, "embedding") == 11
    assert _seen(states, model, "error_rate") == 3

    # The dimension is fixed per model *version*: after a deploy, v2 may use another one.
    produce(kafka_bootstrap, [(f"{p}.model-updates", model.encode(), orjson.dumps(
        {"model_id": model, "model_version": "v2", "ts": T0 + 100, "kind": "deployed"}))])
    wait_for(lambda: _states(kafka_bootstrap, p)[model].monitor.model_version == "v2", 60,
             "the deploy applied", w)
    produce(kafka_bootstrap, _msgs(f"{p}.interactions",
                                   [interaction(i, 16, "v2") for i in range(12, 15)]))
    wait_for(lambda: w.metric(PROCESSED) >= 14, 60, "the v2 interactions", w)
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "everything committed", w)
    assert w.metric(PROCESSED) == 14
    assert len(_read_all(kafka_bootstrap, f"{p}.dead-letters")) == 3
    assert w.proc.poll() is None



def test_a_state_record_past_one_mebibyte_is_checkpointed_and_restored(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str) -> None:
    """A warm-up keeps its values in the state record until it ends: 70,000 of a long
    one (DRIFTLINE_WARMUP=80,000), two scalar signals, are 1.1 MB -- past the broker's
    and the producer's 1 MiB defaults. The checkpoint writes it; a new worker restores
    it and the warm-up goes on."""
    p, model, n, extra = topic_prefix, "long-warmup", 70_000, 5_000
    topic = f"{p}.interactions"
    docs = _latency(model, n + extra, seed=5)
    for k, d in enumerate(docs):
        d["output_tokens"] = 100 + k % 50
    env = _env(postgres_dsn, 80_000)
    w = run_worker(env, name="a")
    produce(kafka_bootstrap, _msgs(topic, docs[:n]))
    wait_for(lambda: w.metric(PROCESSED) >= n, 120, f"{n} interactions", w)
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "everything committed", w)
    assert w.proc.poll() is None, w.tail()
    biggest = max(len(m.value or b"") for m in _read_all(kafka_bootstrap, f"{p}.monitor-state"))
    assert biggest > 1 << 20, biggest
    assert _seen(_states(kafka_bootstrap, p), model) == n
    assert w.proc.poll() is None
    w.stop()

    w = run_worker(env, name="b")
    produce(kafka_bootstrap, _msgs(topic, docs[n:]))
    wait_for(lambda: w.metric(PROCESSED) >= extra, 120, f"{extra} more interactions", w)
    wait_for(lambda: _drained(kafka_bootstrap, p), 60, "everything committed", w)
    assert w.metric(PROCESSED) == extra
    states = _states(kafka_bootstrap, p)
    assert _seen(states, model) == _seen(states, model, "output_length") == n + extra
    assert states[model].monitor.phase == "warmup"
