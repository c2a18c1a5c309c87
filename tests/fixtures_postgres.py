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
from collections.abc import Iterator

import asyncpg
import pytest

from streams.store.embedded import EmbeddedPostgres
from streams.store.migrate import apply_migrations

__all__ = ["SUPABASE_ROLES_SQL", "TRUNCATE_SQL", "postgres_dsn", "postgres_server",
           "truncate_all"]

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
