"""The Supabase REST backend, checked at the HTTP level against a real local server.

No PostgREST can run here, so the server below answers like PostgREST does for the
requests driftline makes (insert-or-ignore returning only new rows, ``Content-Range``
counts, ``eq``/``in``/``is`` filters) and records every request for the assertions.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from driftline.streams.metrics import Metrics
from driftline.streams.store import StoreError, StoreUnavailable
from driftline.streams.store.base import RetryPolicy
from driftline.streams.store.rest import RestStore
from prometheus_client import CollectorRegistry

from tests.streams.store.events import (
    DETAIL_AFTER_LIFE,
    JOB_MOVES,
    JOB_TRANSITIONS,
    JOB_WITH_DETAIL,
    drift_event,
    interactions,
)
from tests.streams.store.http_server import Recorded, RecordingServer

KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2VjcmV0LXNpZ25hdHVyZQ"


class FakePostgrest:
    """Just enough PostgREST for driftline's requests; ``fail`` scripts error replies."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self.fail: list[tuple[int, dict[str, Any] | str]] = []

    def __call__(self, rec: Recorded) -> web.Response:
        if self.fail:
            status, body = self.fail.pop(0)
            if isinstance(body, str):
                return web.Response(status=status, text=body, content_type="text/html")
            return web.json_response(body, status=status)
        table = rec.path.removeprefix("/rest/v1/")
        rows = self.tables.setdefault(table, {})
        prefer = rec.headers.get("Prefer", "")
        if rec.method == "POST":
            keys = rec.query["on_conflict"].split(",")
            new = []
            for row in orjson.loads(rec.body):
                k = tuple(row[c] for c in keys)
                if k not in rows:
                    rows[k] = row
                    new.append(row)
            return self._reply(new, prefer, rec, status=201)
        matched = [r for r in rows.values() if self._match(r, rec.query)]
        if rec.method == "PATCH":
            patch = orjson.loads(rec.body)
            for r in matched:
                r.update(patch)
            return self._reply(matched, prefer, rec)
        return self._reply(matched, prefer, rec)  # GET / HEAD

    @staticmethod
    def _match(row: dict[str, Any], query: dict[str, str]) -> bool:
        for col, cond in query.items():
            if col in ("select", "order", "limit", "columns", "on_conflict"):
                continue
            op, _, arg = cond.partition(".")
            v = row.get(col)
            if op == "eq" and str(v) != arg:
                return False
            if op == "in" and str(v) not in re.findall(r'[^(),"]+', arg):
                return False
            if op == "is" and not (arg == "null" and v is None):
                return False
        return True

    @staticmethod
    def _reply(rows: list[dict[str, Any]], prefer: str, rec: Recorded,
               status: int = 200) -> web.Response:
        headers = {"Content-Range": f"*/{len(rows)}"} if "count=exact" in prefer else {}
        if "return=minimal" in prefer or rec.method == "HEAD":
            return web.Response(status=status if status != 200 else 204, headers=headers)
        cols = rec.query.get("select", "*")
        if cols != "*":
            names = [c for c in cols.split(",") if "(" not in c]
            rows = [{c: r.get(c) for c in names} for r in rows]
        return web.json_response(rows, status=status, headers=headers)


@pytest.fixture
async def postgrest() -> AsyncIterator[tuple[FakePostgrest, RecordingServer]]:
    fake = FakePostgrest()
    server = await RecordingServer(fake).start()
    yield fake, server
    await server.stop()


def rest_store(server: RecordingServer, **kw: Any) -> RestStore:
    kw.setdefault("retry", RetryPolicy(initial_s=0.01, max_s=0.05, attempts=5))
    return RestStore(server.url, KEY, rng=random.Random(11), **kw)


async def test_drift_events_upsert_ignore_duplicates(
        postgrest: tuple[FakePostgrest, RecordingServer]) -> None:
    _fake, server = postgrest
    store = rest_store(server, batch_size=2)
    await store.start()
    events = [drift_event(i) for i in range(5)]
    new = await store.write_drift_events([*events, events[0]])
    assert new == [e["drift_id"] for e in events]
    assert await store.write_drift_events(events[:2]) == []
    posts = [r for r in server.requests if r.method == "POST"]
    assert len(posts) == 3 + 1  # batches of 2, then one replayed batch
    for rec in posts:
        assert rec.path == "/rest/v1/drift_events"
        assert rec.query["on_conflict"] == "drift_id"
        assert rec.query["select"] == "drift_id"
        assert set(rec.query["columns"].strip('"').replace('"', "").split(",")) >= {
            "drift_id", "model_id", "kind", "raw", "detected_at"}
        prefer = {p.strip() for p in rec.headers["Prefer"].split(",")}
        assert prefer == {"return=representation", "resolution=ignore-duplicates"}
        assert rec.headers["apikey"] == KEY
        assert rec.headers["Authorization"] == f"Bearer {KEY}"
        assert rec.headers["Content-Type"].startswith("application/json")
    body = orjson.loads(posts[0].body)
    assert body[0]["raw"] == events[0] and body[0]["detected_at"].startswith("2023-11-14T22:13")
    await store.close()


async def test_interactions_batched_minimal_with_counts(
        postgrest: tuple[FakePostgrest, RecordingServer]) -> None:
    _fake, server = postgrest
    store = rest_store(server, batch_size=100)
    await store.start()
    rows = interactions(250, dim=384)
    assert await store.write_interactions(rows) == 250
    assert await store.write_interactions(rows[:50]) == 0
    posts = [r for r in server.requests if r.method == "POST"]
    assert [len(orjson.loads(r.body)) for r in posts] == [100, 100, 50, 50]
    for rec in posts:
        assert rec.path == "/rest/v1/interactions" and rec.query["on_conflict"] == "event_id"
        assert {p.strip() for p in rec.headers["Prefer"].split(",")} == {
            "return=minimal", "count=exact", "resolution=ignore-duplicates"}
    sent = orjson.loads(posts[0].body)[3]
    assert sent["embedding"].startswith("[") and len(orjson.loads(sent["embedding"])) == 384
    assert orjson.loads(sent["embedding"])[0] == pytest.approx(rows[3]["embedding"][0])
    await store.close()


async def test_5xx_and_outage_are_retried_then_succeed(
        postgrest: tuple[FakePostgrest, RecordingServer]) -> None:
    fake, server = postgrest
    metrics = Metrics(CollectorRegistry())
    store = rest_store(server, metrics=metrics)
    await store.start()
    fake.fail = [(503, "<html>upstream down</html>"),
                 (503, {"code": "PGRST001", "message": "Database client error"}),
                 (502, "bad gateway")]
    assert await store.write_drift_events([drift_event(1)]) == [drift_event(1)["drift_id"]]
    assert len(server.requests) == 4
    assert metrics.registry.get_sample_value(
        "driftline_store_errors_total", {"table": "drift_events"}) == 3
    fake.fail = [(503, "down")] * 10
    with pytest.raises(StoreUnavailable, match="gave up after 5 attempts"):
        await store.write_drift_events([drift_event(2)])
    await store.close()


async def test_client_errors_fail_at_once_and_never_show_the_key(
        postgrest: tuple[FakePostgrest, RecordingServer]) -> None:
    fake, server = postgrest
    store = rest_store(server)
    await store.start()
    fake.fail = [(401, {"code": "PGRST301", "message": f"JWT {KEY} is invalid"})]
    with pytest.raises(StoreError, match="PGRST301") as err:
        await store.write_drift_events([drift_event(1)])
    assert err.type is StoreError  # not its subclass StoreUnavailable: not retried
    assert KEY not in str(err.value)
    assert len(server.requests) == 1 and KEY not in repr(store)
    await store.close()


async def test_decisions_jobs_and_deploy_requests(
        postgrest: tuple[FakePostgrest, RecordingServer]) -> None:
    fake, server = postgrest
    store = rest_store(server)
    await store.start()
    ids = [e["drift_id"] for e in (drift_event(1), drift_event(2))]
    await store.write_drift_events([drift_event(1), drift_event(2)])
    assert sorted(await store.undecided(ids)) == sorted(ids)
    get = server.requests[-1]
    assert get.method == "GET" and get.query["decision_id"] == "is.null"
    assert get.query["drift_id"].startswith("in.(")
    decision = {"decision_id": "dec1", "model_id": "m1", "action": "retrain",
                "outcome": "act", "reason": "r", "drift_ids": ids, "decided_at": 1.0}
    assert await store.write_decisions([decision]) == ["dec1"]
    patch = server.requests[-1]
    assert patch.method == "PATCH" and patch.path == "/rest/v1/drift_events"
    assert orjson.loads(patch.body) == {"decision_id": "dec1"}
    assert await store.undecided(ids) == []
    job = {"job_id": "j1", "decision_id": "dec1", "model_id": "m1", "action": "retrain",
           "requested_at": 2.0}
    assert await store.write_jobs([job]) == ["j1"]
    tr = server.requests[-1]
    assert tr.path == "/rest/v1/retrain_job_transitions"
    assert tr.query["on_conflict"] == "job_id,state"
    assert await store.job_transition("j1", "running", {"x": 1})
    get, patch = server.requests[-3:-1]  # (then the transition's insert)
    assert get.method == "GET" and get.query["state"] == "in.(requested)"
    assert patch.method == "PATCH"
    assert patch.query == {"job_id": "eq.j1", "state": "eq.requested"}
    assert orjson.loads(patch.body)["detail"] == {"x": 1}
    assert not await store.job_transition("j1", "running")
    assert await store.mark_deployed("m1", "v2") == ["j1"]
    assert fake.tables["retrain_jobs"][("j1",)]["state"] == "succeeded"
    assert fake.tables["model_versions"][("m1", "v2")]["model_version"] == "v2"
    counts = await store.counts()
    assert counts["retrain_job_transitions"] == 3 and counts["drift_events"] == 2
    assert all(r.method == "HEAD" for r in server.requests[-6:])
    await store.close()


async def test_a_transition_adds_to_the_jobs_detail(
        postgrest: tuple[FakePostgrest, RecordingServer]) -> None:
    """The same life as the Postgres store's test: each move's detail merged into the
    job's (PostgREST cannot merge in an update: read, then update guarded by the state)."""
    fake, server = postgrest
    store = rest_store(server)
    await store.start()
    assert await store.write_jobs([JOB_WITH_DETAIL]) == ["j1"]
    moves = [await store.job_transition("j1", st, d) for st, d in JOB_TRANSITIONS]
    assert moves == JOB_MOVES
    job = fake.tables["retrain_jobs"][("j1",)]
    assert job["state"] == "failed" and job["detail"] == DETAIL_AFTER_LIFE
    patch = [r for r in server.requests if r.method == "PATCH"][-1]
    assert patch.query == {"job_id": "eq.j1", "state": "eq.running"}
    await store.close()


async def test_timeouts_are_retried() -> None:
    import asyncio

    fake = FakePostgrest()
    release = asyncio.Event()

    async def answer(rec: Recorded) -> web.Response:
        if len(server.requests) == 1:
            await release.wait()  # the first request hangs past the client timeout
        return fake(rec)

    server = await RecordingServer(answer).start()
    store = RestStore(server.url, KEY, rng=random.Random(1),
                      retry=RetryPolicy(initial_s=0.01, attempts=3, timeout_s=0.3))
    await store.start()
    try:
        assert await store.write_drift_events([drift_event(1)]) == [drift_event(1)["drift_id"]]
        assert len(server.requests) == 2
    finally:
        release.set()
        await store.close()
        await server.stop()
