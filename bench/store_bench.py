"""Interaction logging throughput of the store paths, side by side.

    .venv/bin/python bench/store_bench.py [--rows 20000] [--dim 384] [--batch 5000]
                                          [--dsn postgresql://...]

Paths (each writes the same seeded interactions with ``dim``-d float32 embeddings into an
empty ``interactions`` table, idempotently):

* ``postgres COPY``: ``PostgresStore.write_interactions`` — binary COPY straight into the
  table inside a savepoint (the production path when the batch has no duplicate ids).
* ``postgres COPY, dups``: the same when every batch holds one already-stored id: the
  savepoint rolls back and the batch goes COPY → temp table → ``insert … select … on
  conflict do nothing`` (a replay).
* ``postgres executemany``: the same rows through ``insert … values ($1…) on conflict do
  nothing`` with asyncpg ``executemany`` (the obvious alternative).
* ``rest (client side)``: ``RestStore.write_interactions`` against a local HTTP server that
  reads each request and answers like PostgREST would (201 + Content-Range) without storing
  anything. It measures what driftline's process can push — row conversion, JSON, the
  supabase/httpx client, loopback HTTP — not PostgREST or the database behind it, which a
  real Supabase project adds on top.

Without ``--dsn`` (or ``DATABASE_URL``) an embedded PostgreSQL is started in a temp dir.
Rows/s are wall-clock, including row conversion; the machine is shared, so compare the
columns of one run rather than runs with each other. The run ends with a gate
(``bench/gate.py``; exit status 1 on a miss) on those side-by-side ratios: the COPY path
is the production path because it beats ``executemany`` (at least
:data:`MIN_COPY_VS_EXECUTEMANY` times its rate), and its fallback for batches with
already-stored ids (a replay) must be no slower than ``executemany``. The REST row has no
target: it measures this process's side only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from driftline.streams.store.base import INTERACTION_COLUMNS
from driftline.streams.store.embedded import EmbeddedPostgres
from driftline.streams.store.postgres import PostgresStore, interaction_record
from driftline.streams.store.rest import RestStore
from gate import Gate

MIN_COPY_VS_EXECUTEMANY = 1.5
MIN_COPY_DUPS_VS_EXECUTEMANY = 1.0


def make_rows(n: int, dim: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    return [{"event_id": f"bench-{i}", "model_id": f"model-{i % 8}", "model_version": "v1",
             "ts": 1_700_000_000.0 + i, "latency_ms": float(100 + i % 50),
             "input_tokens": 12, "output_tokens": 80, "refusal": False, "feedback": None,
             "correct": None, "embedding": emb[i], "metadata": {"route": "chat"}}
            for i in range(n)]


async def bench_copy(store: PostgresStore, rows: list[dict[str, Any]], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        await store.write_interactions(rows[i:i + batch])
    return time.perf_counter() - t0


async def bench_copy_dups(store: PostgresStore, rows: list[dict[str, Any]],
                          batch: int) -> float:
    await store.write_interactions(rows[::batch])  # one stored id in every batch
    return await bench_copy(store, rows, batch)


async def bench_executemany(store: PostgresStore, rows: list[dict[str, Any]],
                            batch: int) -> float:
    cols = ", ".join(INTERACTION_COLUMNS)
    params = ", ".join(f"${i + 1}" for i in range(len(INTERACTION_COLUMNS)))
    sql = (f"insert into public.interactions ({cols}) values ({params})"
           " on conflict (event_id) do nothing")
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        records = [interaction_record(r) for r in rows[i:i + batch]]
        async with store.pool.acquire() as conn:
            await conn.executemany(sql, records)
    return time.perf_counter() - t0


async def bench_rest(rows: list[dict[str, Any]], batch: int) -> float:
    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        n = body.count(b'"event_id"')
        return web.Response(status=201, headers={"Content-Range": f"*/{n}"})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/rest/v1/interactions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    store = RestStore(f"http://127.0.0.1:{port}", "bench.service.key", batch_size=batch)
    await store.start()
    try:
        t0 = time.perf_counter()
        written = await store.write_interactions(rows)
        elapsed = time.perf_counter() - t0
        assert written == len(rows), written
        return elapsed
    finally:
        await store.close()
        await runner.cleanup()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--rest-batch", type=int, default=500,
                    help="rows per REST request (Settings.batch_size default)")
    ap.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""))
    args = ap.parse_args()

    rows = make_rows(args.rows, args.dim)
    server = None
    tmp = None
    dsn = args.dsn
    if not dsn:
        tmp = tempfile.TemporaryDirectory(prefix="driftline-bench-")
        server = EmbeddedPostgres(Path(tmp.name) / "pg")
        dsn = await asyncio.to_thread(server.start)
    store = PostgresStore(dsn, batch_size=args.batch)
    await store.start()
    results: list[tuple[str, int, float, str]] = []
    try:
        for name, fn in (("postgres COPY", bench_copy),
                         ("postgres COPY, dups", bench_copy_dups),
                         ("postgres executemany", bench_executemany)):
            async with store.pool.acquire() as conn:
                await conn.execute("truncate public.interactions")
            secs = await fn(store, rows, args.batch)
            async with store.pool.acquire() as conn:
                n = await conn.fetchval("select count(*) from public.interactions")
            assert n == len(rows), (name, n)
            results.append((name, args.batch, secs, "rows in Postgres, verified by count"))
        async with store.pool.acquire() as conn:
            await conn.execute("truncate public.interactions")
        secs = await bench_rest(rows, args.rest_batch)
        results.append(("rest (client side)", args.rest_batch, secs,
                        "local HTTP sink; excludes PostgREST + DB"))
    finally:
        await store.close()
        if server is not None:
            await asyncio.to_thread(server.close)
        if tmp is not None:
            tmp.cleanup()

    print(f"interactions: {args.rows:,} rows, {args.dim}-d float32 embeddings, "
          f"{os.cpu_count()} CPUs (shared)")
    print(f"{'path':<22} {'batch':>6} {'seconds':>8} {'rows/s':>10}  note")
    print("-" * 84)
    for name, batch, secs, note in results:
        print(f"{name:<22} {batch:>6} {secs:>8.2f} {args.rows / secs:>10,.0f}  {note}")
    secs_of = {name: secs for name, _, secs, _ in results}
    many = secs_of["postgres executemany"]
    gate = Gate("interaction logging, store paths side by side")
    gate.check("postgres COPY / executemany (rows/s)", many / secs_of["postgres COPY"], ">=",
               MIN_COPY_VS_EXECUTEMANY)
    gate.check("postgres COPY with dups / executemany (rows/s)",
               many / secs_of["postgres COPY, dups"], ">=", MIN_COPY_DUPS_VS_EXECUTEMANY)
    print()
    print(gate.table())
    return gate.status()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
