"""No poison pill: a record that passed admission and then is refused where it lands (the
store) is a dead letter with the reason, and the worker goes on -- for each path:

* a logged interaction row: ``input_tokens`` of 3e9 is a valid count for the contract,
  and more than the ``interactions.input_tokens`` column (integer) holds;
* a deploy notice (``on_deployed`` -> ``model_versions``) and a drift event
  (``drift_events``) that a check constraint of the database refuses, as an operator's
  constraint or a stricter schema would.

Real worker process, real broker, real Postgres.
"""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from tests.fixtures_kafka import consume, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

CONSTRAINTS = [
    "alter table public.model_versions add constraint test_refused_version"
    " check (model_version <> 'v-refused')",
    "alter table public.drift_events add constraint test_refused_signal"
    " check (signal <> 'refused')",
]


async def _sql(dsn: str, *statements: str) -> list[list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        out = []
        for s in statements:
            if s.startswith("select"):
                out.append(sorted(str(r[0]) for r in await conn.fetch(s)))
            else:
                await conn.execute(s)
        return out
    finally:
        await conn.close()


@pytest.fixture
def refusing_dsn(clean_dsn: str):
    asyncio.run(_sql(clean_dsn, *CONSTRAINTS))
    yield clean_dsn
    asyncio.run(_sql(clean_dsn, "alter table public.model_versions drop constraint"
                     " test_refused_version", "alter table public.drift_events drop"
                     " constraint test_refused_signal"))


def _drift(model: str, drift_id: str, signal: str) -> bytes:
    return orjson.dumps({"schema_version": 1, "drift_id": drift_id, "model_id": model,
                         "model_version": "v1", "kind": "behavior", "signal": signal,
                         "detector": "cusum_up", "trigger_event_id": "e1",
                         "detected_at": "2026-01-01T00:00:00Z", "baseline": 1.0,
                         "current": 2.0, "severity": 1.0})


def test_records_the_store_refuses_are_dead_letters_and_the_worker_goes_on(
        run_worker, kafka_bootstrap, topic_prefix, refusing_dsn):
    worker = run_worker({"DATABASE_URL": refusing_dsn, "DRIFTLINE_WARMUP": "200"})
    m = f"{topic_prefix}-m"
    t = f"{topic_prefix}."
    rows = [{"event_id": f"ok-{i}", "model_id": m, "ts": 1_767_225_600 + i,
             "latency_ms": 100.0, "input_tokens": 10} for i in range(40)]
    rows[17] = {**rows[17], "event_id": "too-many-tokens", "input_tokens": 3_000_000_000}
    produce(kafka_bootstrap, [(t + "interactions", m.encode(), orjson.dumps(r)) for r in rows]
            + [(t + "model-updates", m.encode(), orjson.dumps(
                {"model_id": m, "model_version": "v-refused", "ts": 1})),
               (t + "model-updates", m.encode(), orjson.dumps(
                   {"model_id": m, "model_version": "v2", "ts": 2})),
               (t + "drift-events", m.encode(), _drift(m, "d-refused", "refused")),
               (t + "drift-events", m.encode(), _drift(m, "d-ok", "latency"))])
    dead = consume(kafka_bootstrap, t + "dead-letters", lambda r: len(r) >= 3, timeout=120)
    got = sorted((dict(r.headers)["driftline.source.topic"].decode(),
                  dict(r.headers)["driftline.error.reason"].decode(), r.value) for r in dead)
    assert got == sorted([
        (t + "interactions", "store_rejected", orjson.dumps(rows[17])),
        (t + "model-updates", "store_rejected",
         orjson.dumps({"model_id": m, "model_version": "v-refused", "ts": 1})),
        (t + "drift-events", "store_rejected", _drift(m, "d-refused", "refused"))]), \
        worker.tail()
    for r in dead:
        assert dict(r.headers)["driftline.error.message"]  # the store's word, for the operator

    def stored() -> list[list[str]]:
        return asyncio.run(_sql(
            refusing_dsn, f"select event_id from interactions where model_id = '{m}'",
            f"select model_version from model_versions where model_id = '{m}'",
            f"select drift_id from drift_events where model_id = '{m}'"))

    want = [sorted(r["event_id"] for r in rows if r["event_id"] != "too-many-tokens"),
            ["v2"], ["d-ok"]]
    wait_for(lambda: stored() == want, 60, "the other records stored", worker)
    assert worker.proc.poll() is None
    assert worker.health()["interactions_processed"] == 40
