"""The real ``driftline worker`` against a real PostgreSQL that is down — at start and
again mid-run: detection goes on (drift events on Kafka while nothing can be stored, a
deploy notice in the stream does not stop it), the outage is visible (one log line per
failed attempt, ``driftline_store_up`` 0), and once the database is back every row
arrives: the drift events, the sampled interactions, the deployed version."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import pytest
from driftline.streams.store.embedded import EmbeddedPostgres

from tests.fixtures_kafka import consume, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

T0 = 1_767_225_600.0
WARMUP = 100
PROCESSED = "driftline_interactions_processed_total"


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start (the session's stays up)."""
    server = EmbeddedPostgres(tmp_path / "pg")
    server.start()
    yield server
    server.close()


def _latency(model: str, n: int, *, seed: int, shift_at: int | None = None,
             start: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [orjson.dumps({
        "event_id": f"{model}-{start + i}", "model_id": model, "model_version": "v1",
        "ts": T0 + start + i,
        "latency_ms": round(float(rng.lognormal(math.log(
            500.0 * (1.6 if shift_at is not None and i >= shift_at else 1.0)), 0.3)), 3)})
        for i in range(n)]


def _publish(bootstrap: str, topic: str, model: str, values: list[bytes]) -> None:
    produce(bootstrap, [(topic, model.encode(), v) for v in values])


def _query(dsn: str, sql: str) -> list[dict[str, Any]]:
    async def q() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(q())


def _count(dsn: str, table: str) -> int:
    """Rows in ``table``; -1 while the worker has not applied the schema yet."""
    try:
        return int(_query(dsn, f"select count(*) as n from {table}")[0]["n"])
    except asyncpg.UndefinedTableError:
        return -1


def _drift_ids(bootstrap: str, prefix: str, n: int) -> list[str]:
    msgs = consume(bootstrap, f"{prefix}.drift-events", lambda out: len(out) >= n, 90)
    return [orjson.loads(m.value)["drift_id"] for m in msgs]


def test_detection_survives_a_store_down_at_start_and_mid_run_and_the_store_catches_up(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str,
        own_pg: EmbeddedPostgres) -> None:
    p = topic_prefix
    interactions, updates = f"{p}.interactions", f"{p}.model-updates"
    calm, first, second = f"{p}-calm", f"{p}-first", f"{p}-second"
    dsn = own_pg.dsn
    own_pg.stop()
    assert not own_pg.is_running()

    # 1. Down at start: the worker starts, the monitor runs.
    w = run_worker({"DATABASE_URL": dsn, "DRIFTLINE_WARMUP": str(WARMUP),
                    "BROKER_SESSION_TIMEOUT": "10", "BROKER_REBALANCE_TIMEOUT": "10"},
                   name="o")
    _publish(kafka_bootstrap, interactions, calm, _latency(calm, 50, seed=1))
    wait_for(lambda: w.metric(PROCESSED) >= 50, 90, "the calm model's records", w)
    # A deploy notice while the store is down: the monitor resets the baseline and goes
    # on (it used to wait, under its consumer lock, for the store to record the deploy).
    consumed = w.health()["records_consumed"]
    produce(kafka_bootstrap, [(updates, calm.encode(), orjson.dumps(
        {"model_id": calm, "model_version": "v2", "ts": T0 + 60, "kind": "deployed"}))])
    wait_for(lambda: w.health()["records_consumed"] > consumed, 60,  # type: ignore[operator]
             "the deploy notice handled", w)
    _publish(kafka_bootstrap, interactions, first, _latency(first, 300, seed=2, shift_at=150))
    wait_for(lambda: w.metric(PROCESSED) >= 350, 90, "the first drifting model's records", w)
    [drift1] = _drift_ids(kafka_bootstrap, p, 1)  # detected with no store at all
    assert not own_pg.is_running()
    assert w.metric("driftline_store_up") == 0
    assert w.health()["status"] == "ok"
    down = [line for line in w.log.read_text().splitlines() if "store unavailable:" in line]
    assert down and all("Traceback" not in line for line in down), w.tail()

    # The database comes back: everything the worker held back arrives.
    own_pg.start()
    wait_for(lambda: _count(dsn, "interactions") == 350,
             120, "350 interaction rows", w)
    wait_for(lambda: _query(dsn, "select drift_id from drift_events") == [
        {"drift_id": drift1}], 60, "the drift event's row", w)
    wait_for(lambda: _query(dsn, "select model_id, model_version from model_versions") == [
        {"model_id": calm, "model_version": "v2"}], 60, "the deployed version", w)
    assert w.metric("driftline_store_up") == 1

    # 2. Down mid-run (connections open, then cut): detection goes on again.
    own_pg.stop()
    t0 = time.monotonic()
    _publish(kafka_bootstrap, interactions, second,
             _latency(second, 300, seed=3, shift_at=150))
    wait_for(lambda: w.metric(PROCESSED) >= 650, 90, "the second drifting model's records", w)
    ids = _drift_ids(kafka_bootstrap, p, 2)
    assert len(set(ids)) == 2 and drift1 in ids, ids
    assert not own_pg.is_running() and time.monotonic() - t0 < 90
    own_pg.start()
    wait_for(lambda: _count(dsn, "interactions") == 650,
             120, "650 interaction rows", w)
    wait_for(lambda: sorted(r["drift_id"] for r in _query(
        dsn, "select drift_id from drift_events")) == sorted(set(ids)), 60,
        "both drift events' rows", w)
    # Each held-back row once: the retries did not double anything.
    assert _query(dsn, "select count(distinct event_id) as n from interactions")[0]["n"] == 650
    assert w.proc.poll() is None, w.tail()


def test_a_worker_told_to_stop_while_the_store_is_down_stops_and_loses_nothing(
        run_worker: Any, kafka_bootstrap: str, topic_prefix: str,
        own_pg: EmbeddedPostgres) -> None:
    """SIGTERM while the logger waits for the store: the worker exits promptly, with
    the waiting batch's offsets uncommitted, and the next worker stores the rows."""
    p = topic_prefix
    model = f"{p}-m"
    dsn = own_pg.dsn
    own_pg.stop()
    env = {"DATABASE_URL": dsn, "DRIFTLINE_WARMUP": str(WARMUP),
           "BROKER_SESSION_TIMEOUT": "10", "BROKER_REBALANCE_TIMEOUT": "10"}
    w = run_worker(env, name="s")
    _publish(kafka_bootstrap, f"{p}.interactions", model, _latency(model, 200, seed=4))
    wait_for(lambda: w.metric(PROCESSED) >= 200, 90, "the records processed", w)
    t0 = time.monotonic()
    w.stop()  # SIGTERM; SIGKILL after 60 s
    took = time.monotonic() - t0
    assert w.proc.returncode == 0 and took < 30, (w.proc.returncode, took, w.tail())
    own_pg.start()
    w2 = run_worker(env, name="s")
    wait_for(lambda: _count(dsn, "interactions") == 200, 120, "200 interaction rows", w2)
