"""Supabase REST backend: the ``supabase`` async client with the service-role key.

PostgREST turns ``upsert(..., on_conflict=<id>, ignore_duplicates=True)`` into
``insert … on conflict (<id>) do nothing returning …`` (``Prefer:
resolution=ignore-duplicates``), so a representation lists only the rows that were new —
the same answer the Postgres backend gives. The schema must be applied beforehand
(``supabase db push``, or ``driftline migrate`` with ``DATABASE_URL``): REST cannot run DDL.

Not atomic across tables: a decision and the linking of its drift events are two
requests (the Postgres backend does both in one statement).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson
from driftline.streams.metrics import Metrics
from driftline.streams.store.base import (
    JOB_STATES,
    TABLES,
    RetryPolicy,
    Store,
    check_state,
    chunks,
    decision_row,
    dedupe,
    drift_row,
    interaction_row,
    job_row,
    now_iso,
    observed,
)
from driftline.streams.store.errors import StoreUnavailable
from postgrest import APIError, CountMethod, ReturnMethod

from supabase import AsyncClient, AsyncClientOptions

T = TypeVar("T")
_RETRY_CODES = {"429", "PGRST000", "PGRST001", "PGRST002", "PGRST003"}
_IN_CHUNK = 200  # ids per `in.(...)` filter: keeps URLs short


def transient(exc: BaseException) -> bool:
    """Network errors, timeouts, 5xx, 429, and PostgREST's "database unreachable" codes."""
    if isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, APIError):
        code = str(exc.code or "")
        return code.startswith("5") or code in _RETRY_CODES
    return False


def _rows(resp: Any) -> list[dict[str, Any]]:
    return list(resp.data or [])


def _vector_text(arr: np.ndarray | None) -> str | None:
    """pgvector's text form ``[x,y,…]``; orjson writes float32 at its shortest."""
    if arr is None:
        return None
    return orjson.dumps(np.ascontiguousarray(arr, dtype=np.float32),
                        option=orjson.OPT_SERIALIZE_NUMPY).decode()


class RestStore(Store):
    """Store on a Supabase project's REST API (PostgREST)."""

    name = "rest"

    def __init__(self, url: str, service_key: str, *, retry: RetryPolicy | None = None,
                 rng: random.Random | None = None, metrics: Metrics | None = None,
                 batch_size: int = 500, schema: str = "public") -> None:
        self._url = url
        self._key = service_key
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._metrics = metrics
        self.batch_size = batch_size
        self._schema = schema
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"RestStore(url={self._url!r}, key='***')"

    async def start(self) -> None:
        if self._client is None:
            # our own HTTP client: one connection pool, our timeout; retries are ours too
            self._http = httpx.AsyncClient(timeout=self.retry.timeout_s)
            options = AsyncClientOptions(schema=self._schema, httpx_client=self._http,
                                         postgrest_client_retry=False)
            self._client = AsyncClient(self._url, self._key, options=options)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.postgrest.aclose()
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            # Not started, or closed while the worker stops: the store is not there,
            # which is no fault of the rows (they must not be dead-lettered for it).
            raise StoreUnavailable("store not started, or closed (the worker is stopping)")
        return self._client

    async def _run(self, op: Callable[[], Awaitable[T]], what: str, table: str) -> T:
        return await observed(op, what=f"supabase {what}", table=table, backend=self.name,
                              policy=self.retry, rng=self._rng, transient=transient,
                              secrets=(self._key,), metrics=self._metrics)

    async def _upsert(self, table: str, rows: list[dict[str, Any]], on_conflict: str,
                      select: str | None) -> list[dict[str, Any]]:
        """Insert-or-ignore in batches; the new rows' ``select`` columns (or nothing)."""
        out: list[dict[str, Any]] = []
        for batch in chunks(rows, self.batch_size):
            async def op(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
                q = self.client.table(table).upsert(
                    batch, on_conflict=on_conflict, ignore_duplicates=True,
                    returning=ReturnMethod.representation if select else ReturnMethod.minimal)
                if select:
                    q = q.select(select)
                return _rows(await q.execute())

            new = await self._run(partial(op, list(batch)), f"upsert {table}", table)
            self._written(table, len(new))
            out.extend(new)
        return out

    # -- writes ---------------------------------------------------------------------

    async def write_drift_events(self, events: list[dict[str, Any]]) -> list[str]:
        rows = dedupe([drift_row(e) for e in events], "drift_id")
        new = await self._upsert("drift_events", rows, "drift_id", "drift_id")
        return [r["drift_id"] for r in new]

    async def undecided(self, drift_ids: list[str]) -> list[str]:
        out: list[str] = []
        for ids in chunks(drift_ids, _IN_CHUNK):
            async def op(ids: list[str]) -> list[str]:
                resp = await (self.client.table("drift_events").select("drift_id")
                              .in_("drift_id", ids).is_("decision_id", "null").execute())
                return [r["drift_id"] for r in _rows(resp)]

            out.extend(await self._run(partial(op, list(ids)), "read undecided",
                                       "drift_events"))
        return out

    async def pending_drift_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        async def op() -> list[dict[str, Any]]:
            resp = await (self.client.table("drift_events").select("raw")
                          .is_("decision_id", "null").order("stored_at")
                          .order("drift_id").limit(limit).execute())
            return [r["raw"] for r in _rows(resp)]

        return await self._run(op, "read pending", "drift_events")

    async def write_decisions(self, decisions: list[dict[str, Any]]) -> list[str]:
        rows = dedupe([decision_row(d) for d in decisions], "decision_id")
        new = await self._upsert("retrain_decisions", rows, "decision_id",
                                 "decision_id,drift_ids")
        for d in new:
            for ids in chunks(d["drift_ids"], _IN_CHUNK):
                async def link(decision_id: str, ids: list[str]) -> None:
                    await (self.client.table("drift_events")
                           .update({"decision_id": decision_id},
                                   returning=ReturnMethod.minimal)
                           .in_("drift_id", ids).is_("decision_id", "null").execute())

                await self._run(partial(link, d["decision_id"], list(ids)), "link decision",
                                "drift_events")
        return [d["decision_id"] for d in new]

    async def write_jobs(self, jobs: list[dict[str, Any]]) -> list[str]:
        rows = dedupe([job_row(j) for j in jobs], "job_id")
        new = await self._upsert("retrain_jobs", rows, "job_id", "job_id,requested_at")
        await self._upsert("retrain_job_transitions",
                           [{"job_id": r["job_id"], "state": "requested",
                             "at": r["requested_at"], "detail": {}} for r in new],
                           "job_id,state", None)
        return [r["job_id"] for r in new]

    async def job_states(self, job_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for ids in chunks(job_ids, _IN_CHUNK):
            async def op(ids: list[str]) -> dict[str, str]:
                resp = await (self.client.table("retrain_jobs").select("job_id,state")
                              .in_("job_id", ids).execute())
                return {r["job_id"]: r["state"] for r in _rows(resp)}

            out.update(await self._run(partial(op, list(ids)), "read job states",
                                       "retrain_jobs"))
        return out

    async def job_transition(self, job_id: str, state: str,
                             detail: dict[str, Any] | None = None) -> bool:
        check_state(state)
        rank = {"requested": 0, "running": 1, "succeeded": 2, "failed": 2}
        before = [s for s in JOB_STATES if rank[s] < rank[state]]
        if not before:
            return False
        detail = detail or {}
        at = now_iso()

        async def op() -> bool:
            # A transition's detail adds to the job's (its reason and segment stay), as the
            # Postgres store's ``detail || $3``. PostgREST cannot merge in an update: read
            # the job, then update it only if its state has not moved since (a job's detail
            # changes only with its state, so that guard covers the detail too).
            resp = await (self.client.table("retrain_jobs").select("state,detail")
                          .eq("job_id", job_id).in_("state", before).execute())
            rows = _rows(resp)
            if not rows:
                return False
            old = rows[0].get("detail") or {}
            resp = await (self.client.table("retrain_jobs")
                          .update({"state": state, "detail": {**old, **detail},
                                   "updated_at": at})
                          .eq("job_id", job_id).eq("state", rows[0]["state"]).execute())
            return bool(_rows(resp))

        moved = await self._run(op, "job transition", "retrain_jobs")
        if moved:
            await self._upsert("retrain_job_transitions",
                               [{"job_id": job_id, "state": state, "at": at,
                                 "detail": detail}], "job_id,state", None)
        return moved

    async def write_interactions(self, interactions: list[dict[str, Any]]) -> int:
        rows = dedupe([interaction_row(i) for i in interactions], "event_id")
        for r in rows:
            r["embedding"] = _vector_text(r["embedding"])
        total = 0
        for batch in chunks(rows, self.batch_size):
            async def op(batch: list[dict[str, Any]]) -> int:
                resp = await self.client.table("interactions").upsert(
                    batch, on_conflict="event_id", ignore_duplicates=True,
                    returning=ReturnMethod.minimal, count=CountMethod.exact).execute()
                return int(resp.count or 0)

            total += await self._run(partial(op, list(batch)), "upsert interactions",
                                     "interactions")
        self._written("interactions", total)
        return total

    async def mark_deployed(self, model_id: str, model_version: str) -> list[str]:
        at = now_iso()
        await self._upsert("model_versions",
                           [{"model_id": model_id, "model_version": model_version,
                             "deployed_at": at, "baseline_started_at": at}],
                           "model_id,model_version", None)

        async def op() -> list[str]:
            resp = await (self.client.table("retrain_jobs")
                          .update({"state": "succeeded", "deployed_version": model_version,
                                   "updated_at": at})
                          .eq("model_id", model_id).in_("state", ["requested", "running"])
                          .in_("action", ["retrain", "reindex"]).execute())
            return [r["job_id"] for r in _rows(resp)]

        closed = await self._run(op, "mark deployed", "retrain_jobs")
        await self._upsert("retrain_job_transitions",
                           [{"job_id": j, "state": "succeeded", "at": at,
                             "detail": {"deployed_version": model_version}} for j in closed],
                           "job_id,state", None)
        return closed

    # -- reads ----------------------------------------------------------------------

    async def jobs(self, model_id: str | None = None) -> list[dict[str, Any]]:
        async def op() -> list[dict[str, Any]]:
            q = self.client.table("retrain_jobs").select(
                "*,retrain_job_transitions(state,at)")
            if model_id is not None:
                q = q.eq("model_id", model_id)
            return _rows(await q.order("requested_at", desc=True).execute())

        rows = await self._run(op, "read jobs", "retrain_jobs")
        rank = {"requested": 0, "running": 1, "succeeded": 2, "failed": 2}
        for r in rows:
            tr = r.pop("retrain_job_transitions", None) or []
            r["states"] = [t["state"] for t in
                           sorted(tr, key=lambda t: (t["at"], rank[t["state"]]))]
        return rows

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for table in TABLES:
            async def op(table: str) -> int:
                resp = await (self.client.table(table)
                              .select("*", count=CountMethod.exact, head=True).execute())
                return int(resp.count or 0)

            out[table] = await self._run(partial(op, table), f"count {table}", table)
        return out
