"""The whole loop on the real broker and the real Postgres, with the real worker process.

Interactions are published by a plain aiokafka producer (not driftline's code); the test
reads the drift topic, the retrain-request topic and the dead-letter topic with a plain
consumer and the store with asyncpg.
"""

from __future__ import annotations

import asyncio
import math

import asyncpg
import numpy as np
import orjson
import pytest

from tests.fixtures_kafka import consume, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

WARMUP = 300


def _interactions(model: str, n: int, shift_at: int, factor: float, seed: int = 1
                  ) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        median = 500.0 * (factor if i >= shift_at else 1.0)
        out.append({"event_id": f"{model}-{i}", "model_id": model, "model_version": "v1",
                    "ts": 1_767_225_600 + i,
                    "latency_ms": float(rng.lognormal(math.log(median), 0.3)),
                    "output_tokens": int(rng.lognormal(math.log(150), 0.5)),
                    "refusal": False})
    return out


def _row(dsn: str, drift_id: str) -> dict | None:
    async def q() -> dict | None:
        conn = await asyncpg.connect(dsn)
        try:
            r = await conn.fetchrow("select * from drift_events where drift_id = $1",
                                    drift_id)
            return dict(r) if r else None
        finally:
            await conn.close()
    return asyncio.run(q())


def test_interaction_becomes_drift_event_store_row_and_retrain_request(
        run_worker, kafka_bootstrap, topic_prefix, postgres_dsn):
    worker = run_worker({"DATABASE_URL": postgres_dsn, "DRIFTLINE_WARMUP": str(WARMUP)})
    model = f"{topic_prefix}-chat"
    docs = _interactions(model, 700, shift_at=400, factor=3.0)
    produce(kafka_bootstrap, [(f"{topic_prefix}.interactions", model.encode(),
                               orjson.dumps(d)) for d in docs])

    drift = consume(kafka_bootstrap, f"{topic_prefix}.drift-events", lambda r: len(r) >= 1,
                    timeout=90)
    assert len(drift) == 1, worker.tail()
    first = drift[0]
    ev = orjson.loads(first.value)
    assert first.key == model.encode()
    assert ev["schema_version"] == 1
    # Seeded: the x3 latency at interaction 400 is found at 409, by the spread CUSUM (the
    # same detection ModelMonitor(MonitorConfig(warmup=300)) makes offline). Re-warming
    # after it needs 300 more interactions than the stream has left: the only event.
    assert (ev["model_id"], ev["kind"], ev["signal"], ev["detector"], ev["trigger_event_id"]
            ) == (model, "behavior", "latency", "cusum_spread_up", f"{model}-409")
    assert ev["current"] > ev["baseline"] * 1.5

    requests = consume(kafka_bootstrap, f"{topic_prefix}.retrain-requests",
                       lambda r: len(r) >= 1, timeout=60)
    assert len(requests) == 1, worker.tail()
    req = orjson.loads(requests[0].value)
    assert req["model_id"] == model
    assert ev["drift_id"] in req["drift_ids"]

    row = wait_for(lambda: _row(postgres_dsn, ev["drift_id"]), 30, "the drift_events row",
                   worker)
    assert row["model_id"] == model and row["kind"] == "behavior"
    assert row["trigger_event_id"] == ev["trigger_event_id"]

    wait_for(lambda: worker.metric("driftline_interactions_processed_total") >= 700, 30,
             "all interactions processed", worker)
    assert worker.metric("driftline_interactions_processed_total") == 700
    # Counted as they are produced: with every interaction processed, the count is final.
    assert worker.metric("driftline_drift_events_total") == 1
    assert worker.metric("driftline_drift_events_total", kind="behavior") == 1


POISON = [
    ("bad_json", b"chat", b"{not json"),
    ("non_finite", b"chat", b'{"event_id":"x","model_id":"chat","ts":1,"latency_ms":NaN}'),
    ("bad_type", b"chat", b'{"event_id":"x","model_id":"chat","ts":1,"latency_ms":"fast"}'),
    ("missing_field", None, b'{"event_id":"x","model_id":"chat","ts":1}'),
    ("missing_field", b"chat", b'{"model_id":"chat","ts":1}'),
    ("unknown_schema", b"chat", b'{"schema_version":2,"event_id":"x","model_id":"chat","ts":1}'),
    ("oversized", b"chat", b'{"event_id":"x","model_id":"chat","ts":1,"metadata":{"p":"'
     + b"x" * 70_000 + b'"}}'),
    ("bad_model_id", b"chat", b'{"event_id":"x","model_id":"no spaces!","ts":1}'),
    ("key_mismatch", b"other", b'{"event_id":"x","model_id":"chat","ts":1}'),
    ("not_object", b"chat", b"[1,2,3]"),
    ("bad_embedding", b"chat", b'{"event_id":"x","model_id":"chat","ts":1,"embedding":[1,2]}'),
]


def test_poison_messages_reach_dead_letters_and_the_worker_keeps_going(
        run_worker, kafka_bootstrap, topic_prefix, postgres_dsn):
    worker = run_worker({"DATABASE_URL": postgres_dsn, "DRIFTLINE_WARMUP": "50"})
    topic = f"{topic_prefix}.interactions"
    good = [orjson.dumps({"event_id": f"g{i}", "model_id": "chat", "ts": 1 + i,
                          "latency_ms": 100.0 + i}) for i in range(len(POISON) + 1)]
    records: list[tuple[str, bytes | None, bytes | None]] = []
    for i, (_, key, value) in enumerate(POISON):
        records.append((topic, b"chat", good[i]))
        records.append((topic, key, value))
    records.append((topic, b"chat", good[-1]))
    produce(kafka_bootstrap, records)

    dead = consume(kafka_bootstrap, f"{topic_prefix}.dead-letters",
                   lambda r: len(r) >= len(POISON), timeout=90)
    assert len(dead) == len(POISON), worker.tail()
    by_offset = {}
    for m in dead:
        h = {k: v.decode() for k, v in m.headers}
        assert h["driftline.source.topic"] == topic
        assert h["driftline.error.message"]
        by_offset[(int(h["driftline.source.partition"]), int(h["driftline.source.offset"]))] = (
            h["driftline.error.reason"], m.value)
    # Each poison record is dead-lettered with its own reason and its bytes unchanged.
    got = sorted((reason, value) for reason, value in by_offset.values())
    assert got == sorted((reason, value) for reason, _, value in POISON)
    # ...and every good record around them was processed.
    wait_for(lambda: worker.metric("driftline_interactions_processed_total") >= len(good), 30,
             "the good interactions", worker)
    assert worker.metric("driftline_interactions_processed_total") == len(good)
    assert worker.metric("driftline_dead_letters_published_total") == len(POISON)
    # /healthz: interactions fed to the detectors, and every record taken in.
    health = worker.health()
    assert (health["interactions_processed"], health["records_consumed"]) == (
        len(good), len(records))
    assert worker.proc.poll() is None


def test_a_poison_record_at_the_brokers_size_limit_is_dead_lettered_cut(
        run_worker, kafka_bootstrap, topic_prefix, postgres_dsn):
    """A record as big as the broker takes (1 MiB by default) cannot be dead-lettered
    whole: the headers push it over the limit. It goes out cut, with its original size,
    and the worker keeps going (the original stays at the named source offset)."""
    worker = run_worker({"DATABASE_URL": postgres_dsn, "DRIFTLINE_WARMUP": "50"})
    topic = f"{topic_prefix}.interactions"
    big = (b'{"event_id":"x","model_id":"chat","ts":1,"metadata":{"p":"'
           + b"x" * 1_048_300 + b'"}}')
    good = [orjson.dumps({"event_id": f"g{i}", "model_id": "chat", "ts": 1 + i,
                          "latency_ms": 100.0 + i}) for i in range(3)]
    produce(kafka_bootstrap, [(topic, b"chat", good[0]), (topic, b"chat", big),
                              (topic, b"chat", good[1]), (topic, b"chat", good[2])])
    dead = consume(kafka_bootstrap, f"{topic_prefix}.dead-letters", lambda r: len(r) >= 1,
                   timeout=90)
    assert len(dead) == 1, worker.tail()
    h = {k: v.decode() for k, v in dead[0].headers}
    assert h["driftline.error.reason"] == "oversized"
    assert h["driftline.source.offset"] == "1"
    assert int(h["driftline.error.truncated"]) == len(big) + len(b"chat")
    assert dead[0].key == b"chat"
    assert 1_000_000 - 2000 < len(dead[0].value) <= 1_000_000
    assert big.startswith(dead[0].value)
    wait_for(lambda: worker.metric("driftline_interactions_processed_total") >= len(good), 60,
             "the good interactions", worker)
    assert worker.metric("driftline_dead_letters_published_total") == 1
    assert worker.proc.poll() is None


def _tenant_interactions(model: str, n: int, shift_at: int, seed: int = 5) -> list[dict]:
    """Three tenants in turn; from ``shift_at`` acme's latency doubles (a third of the
    traffic), the others' stays."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tenant = ("acme", "globex", "initech")[i % 3]
        median = 500.0 * (2.0 if tenant == "acme" and i >= shift_at else 1.0)
        out.append({"event_id": f"{model}-{i}", "model_id": model, "model_version": "v1",
                    "ts": 1_767_225_600 + i,
                    "latency_ms": float(rng.lognormal(math.log(median), 0.3)),
                    "output_tokens": int(rng.lognormal(math.log(150), 0.5)),
                    "metadata": {"tenant": tenant, "region": "eu"}})
    return out


def test_a_segments_drift_flows_through_the_worker_to_the_store_as_replay_finds_it(
        run_worker, kafka_bootstrap, topic_prefix, postgres_dsn, tmp_path):
    from driftline.detectors import MonitorConfig
    from driftline.detectors.segments import SegmentPlan
    from driftline.streams.config import Settings
    from driftline.streams.offline import replay

    env = {"DATABASE_URL": postgres_dsn, "DRIFTLINE_WARMUP": str(WARMUP),
           "DRIFTLINE_SEGMENTS": "metadata.tenant"}
    worker = run_worker(env)
    model = f"{topic_prefix}-seg"
    docs = _tenant_interactions(model, 2400, shift_at=1500)
    produce(kafka_bootstrap, [(f"{topic_prefix}.interactions", model.encode(),
                               orjson.dumps(d)) for d in docs])
    wait_for(lambda: worker.metric("driftline_interactions_processed_total") >= 2400, 90,
             "all interactions processed", worker)

    # Replay over the same interactions, configured as the worker is, finds the same.
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    settings = Settings.from_env({"DRIFTLINE_WARMUP": str(WARMUP),
                                  "DRIFTLINE_SEGMENTS": "metadata.tenant"})
    replay.run(src, out, config=settings.monitor_config(), segments=settings.segment_plan())
    offline = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert isinstance(settings.segment_plan(), SegmentPlan)
    assert isinstance(settings.monitor_config(), MonitorConfig)
    segmental = [e for e in offline if e.get("segment")]
    assert segmental and {tuple(e["segment"].items()) for e in segmental} == {
        (("metadata.tenant", "acme"),)}

    drift = consume(kafka_bootstrap, f"{topic_prefix}.drift-events",
                    lambda r: len(r) >= len(offline), timeout=90)
    online = [orjson.loads(r.value) for r in drift]
    assert sorted(e["drift_id"] for e in online) == sorted(e["drift_id"] for e in offline), \
        worker.tail()
    seg = next(e for e in online if e.get("segment"))
    assert seg["segment"] == {"metadata.tenant": "acme"}
    assert int(seg["trigger_event_id"].rsplit("-", 1)[1]) >= 1500
    assert seg["signal"] == "latency" and seg["kind"] == "behavior"

    row = wait_for(lambda: _row(postgres_dsn, seg["drift_id"]), 30,
                   "the segment's drift_events row", worker)
    assert orjson.loads(row["segment"]) == {"metadata.tenant": "acme"}
    requests = consume(kafka_bootstrap, f"{topic_prefix}.retrain-requests",
                       lambda r: any(orjson.loads(x.value).get("segment") for x in r),
                       timeout=60)
    req = next(orjson.loads(r.value) for r in requests if orjson.loads(r.value).get("segment"))
    assert req["segment"] == {"metadata.tenant": "acme"} and seg["drift_id"] in req["drift_ids"]
    assert worker.metric("driftline_segment_drift_events_total") >= 1
