"""Session fixtures for a real PostgreSQL (embedded pgserver, pgvector) with the schema.

Use from any conftest: ``from tests.fixtures_postgres import *  # noqa``.

The database is prepared the way Supabase prepares one — roles ``anon``,
``authenticated`` and ``service_role`` (BYPASSRLS) exist, and new tables in ``public`` are
granted to all three by default privileges — before the migrations run, so the tests see
what a Supabase project would.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from driftline.streams.store.base import RetryPolicy
from driftline.streams.store.embedded import EmbeddedPostgres
from driftline.streams.store.migrate import apply_migrations
from driftline.streams.store.postgres import PostgresStore

__all__ = ["FAST_RETRY", "SUPABASE_ROLES_SQL", "TRUNCATE_SQL", "clean_dsn", "pg_store",
           "postgres_dsn", "postgres_server", "truncate_all"]

FAST_RETRY = RetryPolicy(initial_s=0.02, max_s=0.2, attempts=None, timeout_s=10.0)

SUPABASE_ROLES_SQL = """
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on sequences to anon, authenticated, service_role;
"""

TRUNCATE_SQL = ("truncate public.retrain_job_transitions, public.retrain_jobs,"
                " public.retrain_decisions, public.drift_events, public.interactions,"
                " public.model_versions")


async def _prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SUPABASE_ROLES_SQL)
    finally:
        await conn.close()
    await apply_migrations(dsn)


async def truncate_all(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TRUNCATE_SQL)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL for the session (or ``DRIFTLINE_TEST_DATABASE_URL``'s
    server is used instead by :func:`postgres_dsn`)."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_dsn(request: pytest.FixtureRequest) -> str:
    """DSN of a Postgres with Supabase's roles and driftline's migrations applied."""
    dsn = os.environ.get("DRIFTLINE_TEST_DATABASE_URL")
    if not dsn:
        dsn = request.getfixturevalue("postgres_server").dsn
    asyncio.run(_prepare(dsn))
    return dsn


@pytest.fixture
async def clean_dsn(postgres_dsn: str) -> str:
    """``postgres_dsn`` with every driftline table emptied."""
    await truncate_all(postgres_dsn)
    return postgres_dsn


@pytest.fixture
async def pg_store(clean_dsn: str) -> AsyncIterator[PostgresStore]:
    """A started :class:`PostgresStore` on empty tables (seeded jitter, fast retries)."""
    store = PostgresStore(clean_dsn, retry=FAST_RETRY, rng=random.Random(7))
    await store.start()
    try:
        yield store
    finally:
        await store.close()
