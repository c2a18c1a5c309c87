"""Direct Postgres backend (asyncpg): Supabase's database URL, any Postgres with pgvector,
or the embedded one.

Batches go in one statement each: ``jsonb_to_recordset`` + ``on conflict do nothing
returning <id>`` (so a write reports which ids are new), and interactions through binary
COPY into a temporary table followed by ``insert … select … on conflict do nothing``.
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import asyncpg
import numpy as np
import orjson
from driftline.streams.metrics import Metrics
from driftline.streams.store.base import (
    INTERACTION_COLUMNS,
    TABLES,
    HistoryRow,
    RetryPolicy,
    Store,
    check_state,
    chunks,
    decision_row,
    dedupe,
    drift_row,
    embedding_of,
    job_row,
    observed,
    to_datetime,
)
from driftline.streams.store.errors import StoreUnavailable
from driftline.streams.store.migrate import apply_on

T = TypeVar("T")
log = logging.getLogger("driftline.store")

_DRIFT_COLS = ("drift_id text, schema_version int, model_id text, model_version text, "
               "kind text, signal text, detector text, trigger_event_id text, "
               "detected_at timestamptz, baseline float8, \"current\" float8, "
               "severity float8, segment jsonb, raw jsonb")
_DECISION_COLS = ("decision_id text, model_id text, model_version text, action text, "
                  "outcome text, reason text, drift_ids text[], kinds text[], "
                  "max_severity float8, decided_at timestamptz")
_JOB_COLS = ("job_id text, decision_id text, model_id text, model_version text, "
             "action text, state text, drift_ids text[], detail jsonb, "
             "requested_at timestamptz")
# rank of a state: a transition only moves a job forward
_RANK = ("case {col} when 'requested' then 0 when 'running' then 1 else 2 end")


def _names(cols: str) -> str:
    return ", ".join(c.strip().split(" ")[0] for c in cols.split(","))


def transient(exc: BaseException) -> bool:
    """Failures that a later attempt may not see: connection, shutdown, timeouts."""
    return isinstance(exc, (
        OSError, TimeoutError, ConnectionError,
        asyncpg.PostgresConnectionError,          # class 08
        asyncpg.InterfaceError,                   # connection closed / pool closing
        asyncpg.exceptions.OperatorInterventionError,  # 57P: admin shutdown, starting up
        asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections
        # a connection cut during COPY leaves the protocol mid-operation
        asyncpg.exceptions.InternalClientError,
    ))


def _encode_vector(value: Any) -> bytes:
    arr = np.asarray(value, dtype=">f4")
    return struct.pack(">HH", arr.shape[0], 0) + arr.tobytes()


def _decode_vector(data: bytes) -> list[float]:
    dim, _ = struct.unpack_from(">HH", data)
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(float).tolist()


async def _init_connection(conn: asyncpg.Connection) -> None:
    schema = await conn.fetchval(
        "select n.nspname from pg_type t join pg_namespace n on n.oid = t.typnamespace"
        " where t.typname = 'vector' limit 1")
    if schema is not None:
        await conn.set_type_codec("vector", schema=schema, encoder=_encode_vector,
                                  decoder=_decode_vector, format="binary")


class PostgresStore(Store):
    """Store on a Postgres database reached with asyncpg."""

    name = "postgres"

    def __init__(self, dsn: str, *, migrate: bool = True, retry: RetryPolicy | None = None,
                 rng: random.Random | None = None, metrics: Metrics | None = None,
                 batch_size: int = 1000, pool_size: int = 4) -> None:
        self._dsn = dsn
        self._migrate = migrate
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._metrics = metrics
        self.batch_size = batch_size
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self.applied: list[str] = []  # migration versions applied by start()
        self._direct_copy = True

    def __repr__(self) -> str:
        return "PostgresStore(dsn='***')"

    # -- plumbing -------------------------------------------------------------------

    async def start(self) -> None:
        async def connect() -> asyncpg.Pool:
            if self._migrate:
                conn = await asyncpg.connect(self._dsn)
                try:
                    self.applied = await apply_on(conn)
                except asyncpg.InsufficientPrivilegeError:
                    # a least-privilege login (member of driftline_writer) cannot run
                    # DDL: the schema is an admin's job (`driftline migrate`).
                    log.warning("no privilege to apply migrations; assuming the schema is"
                                " applied (run `driftline migrate` as an owner)")
                finally:
                    await conn.close()
            return await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, init=_init_connection,
                command_timeout=self.retry.timeout_s)

        if self._pool is None:
            self._pool = await self._run(connect, "connect", "connect")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # Not started, or closed while the worker stops: the store is not there,
            # which is no fault of the rows (they must not be dead-lettered for it).
            raise StoreUnavailable("store not started, or closed (the worker is stopping)")
        return self._pool

    async def _run(self, op: Callable[[], Awaitable[T]], what: str, table: str) -> T:
        return await observed(op, what=f"postgres {what}", table=table, backend=self.name,
                              policy=self.retry, rng=self._rng, transient=transient,
                              secrets=(self._dsn,), metrics=self._metrics)

    async def _fetch_ids(self, sql: str, rows: list[dict[str, Any]], what: str,
                         table: str) -> list[str]:
        new: list[str] = []
        async def op(payload: str) -> list[str]:
            async with self.pool.acquire() as conn:
                return [r[0] for r in await conn.fetch(sql, payload)]

        for batch in chunks(rows, self.batch_size):
            ids = await self._run(partial(op, orjson.dumps(list(batch)).decode()), what, table)
            self._written(table, len(ids))
            new.extend(ids)
        return new

    # -- writes ---------------------------------------------------------------------

    async def write_drift_events(self, events: list[dict[str, Any]]) -> list[str]:
        rows = dedupe([drift_row(e) for e in events], "drift_id")
        sql = (f"insert into public.drift_events ({_names(_DRIFT_COLS)})"
               f" select {_names(_DRIFT_COLS)} from jsonb_to_recordset($1::jsonb)"
               f" as r({_DRIFT_COLS}) on conflict (drift_id) do nothing returning drift_id")
        return await self._fetch_ids(sql, rows, "write drift events", "drift_events")

    async def undecided(self, drift_ids: list[str]) -> list[str]:
        if not drift_ids:
            return []

        async def op() -> list[str]:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "select drift_id from public.drift_events"
                    " where drift_id = any($1::text[]) and decision_id is null", drift_ids)
                return [r[0] for r in rows]

        return await self._run(op, "read undecided", "drift_events")

    async def pending_drift_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        async def op() -> list[dict[str, Any]]:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "select raw from public.drift_events where decision_id is null"
                    " order by stored_at, drift_id limit $1", limit)
                return [orjson.loads(r[0]) for r in rows]

        return await self._run(op, "read pending", "drift_events")

    async def write_decisions(self, decisions: list[dict[str, Any]]) -> list[str]:
        rows = dedupe([decision_row(d) for d in decisions], "decision_id")
        sql = (f"with ins as (insert into public.retrain_decisions ({_names(_DECISION_COLS)})"
               f" select {_names(_DECISION_COLS)} from jsonb_to_recordset($1::jsonb)"
               f" as r({_DECISION_COLS})"
               " on conflict (decision_id) do nothing returning decision_id, drift_ids),"
               " link as (update public.drift_events e set decision_id = l.decision_id"
               "   from (select decision_id, unnest(drift_ids) as drift_id from ins) l"
               "   where e.drift_id = l.drift_id and e.decision_id is null)"
               " select decision_id from ins")
        return await self._fetch_ids(sql, rows, "write decisions", "retrain_decisions")

    async def write_jobs(self, jobs: list[dict[str, Any]]) -> list[str]:
        rows = dedupe([job_row(j) for j in jobs], "job_id")
        sql = (f"with ins as (insert into public.retrain_jobs ({_names(_JOB_COLS)})"
               f" select {_names(_JOB_COLS)} from jsonb_to_recordset($1::jsonb)"
               f" as r({_JOB_COLS}) on conflict (job_id) do nothing"
               " returning job_id, requested_at),"
               " tr as (insert into public.retrain_job_transitions (job_id, state, at)"
               "   select job_id, 'requested', requested_at from ins"
               "   on conflict do nothing)"
               " select job_id from ins")
        return await self._fetch_ids(sql, rows, "write jobs", "retrain_jobs")

    async def job_states(self, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}

        async def op() -> dict[str, str]:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch("select job_id, state from public.retrain_jobs"
                                        " where job_id = any($1::text[])", job_ids)
                return {r[0]: r[1] for r in rows}

        return await self._run(op, "read job states", "retrain_jobs")

    async def job_transition(self, job_id: str, state: str,
                             detail: dict[str, Any] | None = None) -> bool:
        check_state(state)
        payload = orjson.dumps(detail or {}).decode()
        # (a transition's detail adds to the job's: its reason and segment stay)
        sql = ("with up as (update public.retrain_jobs set state = $2,"
               "   detail = coalesce(detail, '{}'::jsonb) || $3::jsonb,"
               "   updated_at = now()"
               f"  where job_id = $1 and {_RANK.format(col='state')}"
               f"      < {_RANK.format(col='$2::text')} returning job_id),"
               " tr as (insert into public.retrain_job_transitions (job_id, state, detail)"
               "   select job_id, $2, $3::jsonb from up on conflict do nothing)"
               " select count(*) from up")

        async def op() -> bool:
            async with self.pool.acquire() as conn:
                return bool(await conn.fetchval(sql, job_id, state, payload))

        moved = await self._run(op, "job transition", "retrain_job_transitions")
        self._written("retrain_job_transitions", int(moved))
        return moved

    async def write_interactions(self, interactions: list[dict[str, Any]]) -> int:
        rows = dedupe(list(interactions), "event_id")
        total = 0
        for batch in chunks(rows, max(self.batch_size, 5000)):
            records = [interaction_record(r) for r in batch]
            total += await self._run(partial(self._copy_interactions, records),
                                     "write interactions", "interactions")
        self._written("interactions", total)
        return total

    async def _copy_interactions(self, records: list[tuple[Any, ...]]) -> int:
        cols = ", ".join(INTERACTION_COLUMNS)
        async with self.pool.acquire() as conn, conn.transaction():
            # Optimistic: COPY straight into the table (no duplicates, the usual case);
            # a duplicate rolls back to the savepoint and takes the de-duplicating path.
            # Roles under RLS (driftline_writer) may not COPY into the table at all.
            if self._direct_copy:
                try:
                    async with conn.transaction():
                        await conn.copy_records_to_table(
                            "interactions", schema_name="public", records=records,
                            columns=list(INTERACTION_COLUMNS))
                    return len(records)
                except asyncpg.UniqueViolationError:
                    pass
                except asyncpg.FeatureNotSupportedError:
                    self._direct_copy = False
            await conn.execute(
                "create temp table if not exists interactions_in"
                " (like public.interactions including defaults) on commit delete rows")
            await conn.copy_records_to_table("interactions_in", records=records,
                                             columns=list(INTERACTION_COLUMNS))
            status = await conn.execute(
                f"insert into public.interactions ({cols}) select {cols} from interactions_in"
                " on conflict (event_id) do nothing")
            return int(status.split()[-1])

    async def mark_deployed(self, model_id: str, model_version: str) -> list[str]:
        sql = ("with mv as (insert into public.model_versions (model_id, model_version)"
               "   values ($1, $2) on conflict do nothing),"
               " up as (update public.retrain_jobs set state = 'succeeded',"
               "   deployed_version = $2, updated_at = now()"
               "   where model_id = $1 and state in ('requested', 'running')"
               "     and action in ('retrain', 'reindex') returning job_id),"
               " tr as (insert into public.retrain_job_transitions (job_id, state, detail)"
               "   select job_id, 'succeeded', jsonb_build_object('deployed_version', $2::text)"
               "   from up on conflict do nothing)"
               " select job_id from up")

        async def op() -> list[str]:
            async with self.pool.acquire() as conn:
                return [r[0] for r in await conn.fetch(sql, model_id, model_version)]

        return await self._run(op, "mark deployed", "retrain_jobs")

    # -- reads ----------------------------------------------------------------------

    async def jobs(self, model_id: str | None = None) -> list[dict[str, Any]]:
        sql = ("select j.*, coalesce((select array_agg(t.state order by t.at, "
               f"   {_RANK.format(col='t.state')})"
               "   from public.retrain_job_transitions t where t.job_id = j.job_id),"
               "   '{}') as states"
               " from public.retrain_jobs j where $1::text is null or j.model_id = $1"
               " order by j.requested_at desc, j.job_id")

        async def op() -> list[dict[str, Any]]:
            async with self.pool.acquire() as conn:
                return [dict(r) for r in await conn.fetch(sql, model_id)]

        rows = await self._run(op, "read jobs", "retrain_jobs")
        for r in rows:
            r["detail"] = orjson.loads(r["detail"]) if r["detail"] else {}
            r["states"] = list(r["states"])
        return rows

    async def counts(self) -> dict[str, int]:
        sql = " union all ".join(
            f"select '{t}', count(*) from public.{t}" for t in TABLES)

        async def op() -> dict[str, int]:
            async with self.pool.acquire() as conn:
                return {r[0]: int(r[1]) for r in await conn.fetch(sql)}

        return await self._run(op, "counts", "counts")

    async def history_models(self, since: datetime, until: datetime) -> list[str]:
        sql = ("select distinct model_id from public.interactions "
               "where ts >= $1 and ts < $2 order by 1")
        return [r["model_id"] for r in await self.fetch(sql, since, until)]

    async def history(self, model_id: str, since: datetime, until: datetime, *,
                      after: tuple[datetime, str] | None = None, limit: int = 50_000
                      ) -> list[HistoryRow]:
        # (model_id, ts desc) is indexed: read backwards, a page after the last one's row.
        where = "model_id = $1 and ts >= $2 and ts < $3"
        args: tuple[Any, ...] = (model_id, since, until, limit)
        if after is not None:
            where += " and (ts, event_id) > ($5, $6)"
            args += after
        rows = await self.fetch("select ts, event_id, latency_ms, output_tokens from "
                                f"public.interactions where {where} "
                                "order by ts, event_id limit $4", *args)
        return [HistoryRow(r["ts"], r["event_id"], r["latency_ms"], r["output_tokens"])
                for r in rows]

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Run a read query (dashboards, tests)."""
        async def op() -> list[dict[str, Any]]:
            async with self.pool.acquire() as conn:
                return [dict(r) for r in await conn.fetch(sql, *args)]

        return await self._run(op, "query", "query")


def interaction_record(it: dict[str, Any]) -> tuple[Any, ...]:
    """A contract-v1 interaction as a COPY record in ``INTERACTION_COLUMNS`` order."""
    fb = it.get("feedback")
    lat = it.get("latency_ms")
    meta = it.get("metadata")
    return (str(it["event_id"]), str(it["model_id"]), it.get("model_version"),
            to_datetime(it["ts"]), None if lat is None else float(lat),
            it.get("input_tokens"), it.get("output_tokens"), it.get("refusal"),
            None if fb is None else int(fb), it.get("correct"), embedding_of(it),
            None if meta is None else orjson.dumps(meta).decode())


__all__ = ["PostgresStore", "transient"]
