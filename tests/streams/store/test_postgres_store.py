"""The direct Postgres backend on a real PostgreSQL: idempotent, batched, complete."""

from __future__ import annotations

import random

import orjson
import pytest
from driftline.streams.config import Settings
from driftline.streams.metrics import Metrics
from driftline.streams.store import StoreError, StoreUnavailable, open_store
from driftline.streams.store.base import RetryPolicy
from driftline.streams.store.postgres import PostgresStore
from prometheus_client import CollectorRegistry

from tests.streams.store.events import (
    DETAIL_AFTER_LIFE,
    JOB_MOVES,
    JOB_TRANSITIONS,
    JOB_WITH_DETAIL,
    drift_event,
    interactions,
)

pytestmark = pytest.mark.postgres


async def test_duplicate_drift_events_yield_one_row(pg_store: PostgresStore) -> None:
    events = [drift_event(i) for i in range(5)]
    first = await pg_store.write_drift_events([*events, events[0]])
    assert sorted(first) == sorted(e["drift_id"] for e in events)
    # replayed: nothing new, still five rows
    assert await pg_store.write_drift_events(events) == []
    more = await pg_store.write_drift_events([events[1], drift_event(99)])
    assert more == [drift_event(99)["drift_id"]]
    assert (await pg_store.counts())["drift_events"] == 6
    row = (await pg_store.fetch("select * from drift_events where drift_id = $1",
                                events[2]["drift_id"]))[0]
    assert row["kind"] == "accuracy" and row["severity"] == 5.0
    assert row["detected_at"].timestamp() == 1_700_000_002.0


async def test_a_segments_drift_event_is_stored_with_its_segment(
        pg_store: PostgresStore) -> None:
    seg = dict(drift_event(1), segment={"metadata.tenant": "acme"},
               attribution=None, explanation={"nearest_centroid": 3})
    await pg_store.write_drift_events([drift_event(0), seg])
    rows = await pg_store.fetch(
        "select drift_id, segment::text as segment, raw::text as raw from drift_events")
    by_id = {r["drift_id"]: r for r in rows}
    assert orjson.loads(by_id[seg["drift_id"]]["segment"]) == {"metadata.tenant": "acme"}
    assert by_id[drift_event(0)["drift_id"]]["segment"] is None
    # queried by segment (the GIN index's operator)
    hit = await pg_store.fetch(
        "select drift_id from drift_events where segment @> $1::jsonb",
        orjson.dumps({"metadata.tenant": "acme"}).decode())
    assert [r["drift_id"] for r in hit] == [seg["drift_id"]]
    assert orjson.loads(by_id[seg["drift_id"]]["raw"])["explanation"] == {
        "nearest_centroid": 3}


async def test_decisions_link_drift_events(pg_store: PostgresStore) -> None:
    events = [drift_event(i) for i in range(3)]
    await pg_store.write_drift_events(events)
    ids = [e["drift_id"] for e in events]
    assert sorted(await pg_store.undecided(ids)) == sorted(ids)
    decision = {"decision_id": "dec1", "model_id": "m1", "action": "retrain",
                "outcome": "act", "reason": "accuracy drift", "drift_ids": ids[:2],
                "kinds": ["accuracy"], "max_severity": 5.0, "decided_at": 1_700_000_010.0}
    assert await pg_store.write_decisions([decision]) == ["dec1"]
    assert await pg_store.write_decisions([decision]) == []
    assert await pg_store.undecided(ids) == [ids[2]]


async def test_job_life_and_deploy(pg_store: PostgresStore) -> None:
    job = {"job_id": "j1", "decision_id": "dec1", "model_id": "m1", "model_version": "v1",
           "action": "retrain", "drift_ids": ["a", "b"], "requested_at": 1_700_000_000.0}
    assert await pg_store.write_jobs([job, job]) == ["j1"]
    assert await pg_store.write_jobs([job]) == []
    assert await pg_store.job_transition("j1", "running", {"webhook": 202})
    assert not await pg_store.job_transition("j1", "running")
    assert not await pg_store.job_transition("j1", "requested")  # never backwards
    other = dict(job, job_id="j2", model_id="m2")
    await pg_store.write_jobs([other])
    assert await pg_store.mark_deployed("m1", "v2") == ["j1"]
    assert await pg_store.mark_deployed("m1", "v2") == []
    [j1] = await pg_store.jobs("m1")
    assert j1["state"] == "succeeded" and j1["deployed_version"] == "v2"
    assert j1["states"] == ["requested", "running", "succeeded"]
    assert not await pg_store.job_transition("j1", "failed")  # terminal stays terminal
    [j2] = await pg_store.jobs("m2")
    assert j2["state"] == "requested"
    counts = await pg_store.counts()
    assert counts["model_versions"] == 1 and counts["retrain_job_transitions"] == 4
    with pytest.raises(ValueError, match="unknown job state 'exploded'"):
        await pg_store.job_transition("j2", "exploded")


async def test_a_transition_adds_to_the_jobs_detail(pg_store: PostgresStore) -> None:
    """The same life as the REST store's test: each move's detail merged into the job's."""
    assert await pg_store.write_jobs([JOB_WITH_DETAIL]) == ["j1"]
    moves = [await pg_store.job_transition("j1", st, d) for st, d in JOB_TRANSITIONS]
    assert moves == JOB_MOVES
    [job] = await pg_store.jobs("m1")
    assert job["state"] == "failed" and job["detail"] == DETAIL_AFTER_LIFE


async def test_interactions_copy_with_embeddings(pg_store: PostgresStore) -> None:
    rows = interactions(1200, dim=384)
    assert await pg_store.write_interactions(rows) == 1200
    assert await pg_store.write_interactions(rows[:10] + interactions(5, start=5000)) == 5
    got = await pg_store.fetch(
        "select event_id, vector_dims(embedding) as dim, embedding, metadata, ts"
        " from interactions where event_id = 'm1-7'")
    assert got[0]["dim"] == 384
    assert got[0]["embedding"] == pytest.approx(rows[7]["embedding"], rel=1e-6)
    assert got[0]["ts"].timestamp() == rows[7]["ts"]
    # mixed dimensions (per-model) and b64 embeddings share the untyped column
    import base64

    import numpy as np
    vec = np.arange(16, dtype="<f4")
    other = {"event_id": "x1", "model_id": "small", "ts": "2026-01-01T00:00:00Z",
             "embedding_b64": base64.b64encode(vec.tobytes()).decode()}
    no_emb = {"event_id": "x2", "model_id": "small", "ts": 1.0}
    assert await pg_store.write_interactions([other, no_emb]) == 2
    dims = await pg_store.fetch("select event_id, vector_dims(embedding) d from interactions"
                                " where model_id = 'small' order by event_id")
    assert [(r["event_id"], r["d"]) for r in dims] == [("x1", 16), ("x2", None)]
    assert (await pg_store.counts())["interactions"] == 1207


async def test_errors_never_show_the_password(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dsn = "postgresql://driftline:s3cr3t-pw@127.0.0.1:1/nodb"
    store = PostgresStore(dsn, retry=RetryPolicy(initial_s=0.001, attempts=2),
                          rng=random.Random(1))
    assert "s3cr3t" not in repr(store)
    with pytest.raises(StoreUnavailable, match="gave up after 2 attempts") as err:
        await store.start()
    assert "s3cr3t-pw" not in str(err.value)
    settings = Settings.from_env({"DATABASE_URL": dsn})
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in repr(open_store(settings))


async def test_non_transient_error_is_not_retried(clean_dsn: str) -> None:
    # A bounded budget: a regression that took the error for transient ends in
    # StoreUnavailable after three attempts (and fails below), instead of retrying until
    # the test's timeout.
    metrics = Metrics(CollectorRegistry())
    store = PostgresStore(clean_dsn, retry=RetryPolicy(initial_s=0.001, attempts=3),
                          rng=random.Random(7), metrics=metrics)
    await store.start()
    try:
        bad = drift_event(1)
        bad["kind"] = "vibes"  # violates the check constraint
        with pytest.raises(StoreError, match="CheckViolationError") as err:
            await store.write_drift_events([bad])
        assert err.type is StoreError  # not its subclass StoreUnavailable: given up at once
        errors = metrics.registry.get_sample_value("driftline_store_errors_total",
                                                   {"table": "drift_events"})
        retries = metrics.registry.get_sample_value("driftline_store_retries_total",
                                                    {"table": "drift_events"})
        assert (errors, retries) == (1.0, None)  # one attempt, no retry
    finally:
        await store.close()


def test_open_store_picks_backend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from driftline.streams.store.embedded import EmbeddedStore
    from driftline.streams.store.rest import RestStore

    assert isinstance(open_store(Settings.from_env({"DATABASE_URL": "postgresql://x@h/d"})),
                      PostgresStore)
    rest = open_store(Settings.from_env({"SUPABASE_URL": "http://127.0.0.1:1",
                                         "SUPABASE_SERVICE_ROLE_KEY": "k.e.y"}))
    assert isinstance(rest, RestStore)
    emb = open_store(Settings.from_env({"DRIFTLINE_DATA_DIR": str(tmp_path)}))
    assert isinstance(emb, EmbeddedStore) and emb.server.data_dir == tmp_path / "pg"
    with pytest.raises(StoreError,
                       match="SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY is not"):
        open_store(Settings.from_env({"SUPABASE_URL": "http://127.0.0.1:1"}))
