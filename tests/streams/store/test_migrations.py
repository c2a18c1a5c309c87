"""The schema: applies from scratch, re-applies cleanly, RLS keeps the public roles out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from driftline.streams.store import StoreError
from driftline.streams.store.base import TABLES
from driftline.streams.store.migrate import apply_migrations, migration_files

pytestmark = pytest.mark.postgres


def _with_db(dsn: str, db: str) -> str:
    u = urlsplit(dsn)
    return urlunsplit((u.scheme, u.netloc, f"/{db}", u.query, u.fragment))


@pytest.fixture
async def fresh_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute("drop database if exists driftline_fresh")
    await admin.execute("create database driftline_fresh")
    try:
        yield _with_db(postgres_dsn, "driftline_fresh")
    finally:
        await admin.execute("drop database if exists driftline_fresh with (force)")
        await admin.close()


async def test_apply_from_scratch_then_reapply(fresh_dsn: str) -> None:
    versions = [v for v, _, _ in migration_files()]
    assert await apply_migrations(fresh_dsn) == versions
    assert await apply_migrations(fresh_dsn) == []  # the ledger makes it idempotent

    conn = await asyncpg.connect(fresh_dsn)
    try:
        # and the SQL itself re-runs cleanly, as `supabase db reset` style tools may do
        for _, _, path in migration_files():
            await conn.execute(path.read_text())
        tables = {r[0] for r in await conn.fetch(
            "select tablename from pg_tables where schemaname = 'public'")}
        assert set(TABLES) <= tables
        rls = {r[0]: r[1] for r in await conn.fetch(
            "select relname, relrowsecurity from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'r'")}
        assert all(rls[t] for t in TABLES)
        ledger = await conn.fetch("select version, name from"
                                  " supabase_migrations.schema_migrations order by version")
        assert [r["version"] for r in ledger] == versions
        assert await conn.fetchval(
            "select count(*) from pg_extension where extname = 'vector'") == 1
    finally:
        await conn.close()


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_public_roles_can_neither_read_nor_write(clean_dsn: str, role: str) -> None:
    conn = await asyncpg.connect(clean_dsn)
    try:
        await conn.execute(
            "insert into drift_events (drift_id, model_id, kind, signal, detector,"
            " detected_at, raw) values ('d1', 'm', 'accuracy', 's', 'x', now(), '{}')")
        for table in TABLES:
            async with conn.transaction():
                await conn.execute(f"set local role {role}")
                with pytest.raises(asyncpg.InsufficientPrivilegeError,
                                   match=f"permission denied for table {table}"):
                    await conn.fetch(f"select * from public.{table}")
            async with conn.transaction():
                await conn.execute(f"set local role {role}")
                with pytest.raises(asyncpg.InsufficientPrivilegeError,
                                   match=f"permission denied for table {table}"):
                    await conn.execute(f"insert into public.{table} default values")
        # and with the grants back (a later migration's mistake), RLS still hides rows
        async with conn.transaction():
            await conn.execute(f"grant select, insert on public.drift_events to {role}")
            await conn.execute(f"set local role {role}")
            assert await conn.fetch("select * from public.drift_events") == []
            with pytest.raises(asyncpg.InsufficientPrivilegeError,
                               match="new row violates row-level security policy for table"
                                     ' "drift_events"'):
                await conn.execute(
                    "insert into drift_events (drift_id, model_id, kind, signal, detector,"
                    " detected_at, raw) values ('d2', 'm', 'accuracy', 's', 'x', now(), '{}')")
    finally:
        await conn.close()


@pytest.mark.parametrize("role", ["service_role", "driftline_writer"])
async def test_backend_roles_read_and_write(clean_dsn: str, role: str) -> None:
    conn = await asyncpg.connect(clean_dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"set local role {role}")
            await conn.execute(
                "insert into drift_events (drift_id, model_id, kind, signal, detector,"
                " detected_at, raw) values ('d1', 'm', 'accuracy', 's', 'x', now(), '{}')")
            await conn.execute("update drift_events set decision_id = 'x'")
            assert await conn.fetchval("select count(*) from drift_events") == 1
            if role == "driftline_writer":  # least privilege: no delete
                with pytest.raises(asyncpg.InsufficientPrivilegeError,
                                   match="permission denied for table drift_events"):
                    await conn.execute("delete from drift_events")
    finally:
        await conn.close()


async def test_least_privilege_login_writes_through_the_store(clean_dsn: str) -> None:
    from driftline.streams.store.postgres import PostgresStore

    from tests.streams.store.events import drift_event, interactions

    conn = await asyncpg.connect(clean_dsn)
    try:
        await conn.execute("""
            do $$ begin
              if not exists (select 1 from pg_roles where rolname = 'driftline_app') then
                create role driftline_app login in role driftline_writer;
              end if;
            end $$""")
    finally:
        await conn.close()
    u = urlsplit(clean_dsn)
    app_dsn = urlunsplit((u.scheme, u.netloc.replace("postgres:", "driftline_app:", 1),
                          u.path, u.query, u.fragment))
    store = PostgresStore(app_dsn)
    await store.start()  # cannot migrate; works on the applied schema
    try:
        assert await store.write_drift_events([drift_event(1)]) == [drift_event(1)["drift_id"]]
        assert await store.write_interactions(interactions(3, dim=16)) == 3
        assert (await store.counts())["drift_events"] == 1
        with pytest.raises(StoreError, match="permission denied"):
            await store.fetch("delete from drift_events returning drift_id")
    finally:
        await store.close()


async def test_the_segment_migration_backfills_events_stored_before_it(fresh_dsn: str) -> None:
    files = migration_files()
    seg = next(i for i, (_, name, _) in enumerate(files) if name == "drift_event_segment")
    conn = await asyncpg.connect(fresh_dsn)
    try:
        for _, _, path in files[:seg]:
            await conn.execute(path.read_text())
        await conn.execute(
            "insert into public.drift_events (drift_id, model_id, kind, signal, detector,"
            " detected_at, raw) values ('a', 'm', 'behavior', 'latency', 'cusum', now(),"
            " '{\"segment\": {\"metadata.tenant\": \"acme\"}}'::jsonb),"
            " ('b', 'm', 'behavior', 'latency', 'cusum', now(), '{}'::jsonb)")
        await conn.execute(files[seg][2].read_text())
        rows = await conn.fetch("select drift_id, segment::text from public.drift_events"
                                " order by drift_id")
        assert [(r[0], r[1]) for r in rows] == [("a", '{"metadata.tenant": "acme"}'),
                                                ("b", None)]
    finally:
        await conn.close()
