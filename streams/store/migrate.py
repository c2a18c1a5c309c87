"""Apply ``supabase/migrations/*.sql`` to a Postgres database, once each.

The ledger is the Supabase CLI's own (``supabase_migrations.schema_migrations``), so
``driftline migrate`` and ``supabase db push`` agree on what has been applied.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
from driftline.streams.store.errors import redact

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
_NAME = re.compile(r"^(\d{14})_([A-Za-z0-9_]+)\.sql$")
_LOCK_KEY = 0x64726966746C  # pg_advisory_xact_lock: one migrator at a time

_LEDGER = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text not null primary key,
    statements text[],
    name text
);
"""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, str, Path]]:
    """``(version, name, path)`` of every migration, in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise ValueError(f"migration file name not <14 digits>_<name>.sql: {path.name}")
        found.append((m.group(1), m.group(2), path))
    return found


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet in the ledger; return the versions applied now."""
    try:
        conn = await asyncpg.connect(dsn)
    except Exception as exc:
        raise ConnectionError(redact(f"migrate: cannot connect: {exc}", dsn)) from None
    try:
        return await apply_on(conn, directory)
    finally:
        await conn.close()


async def apply_on(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Same as :func:`apply_migrations` on an open connection."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_LEDGER)
        done = {r["version"] for r in
                await conn.fetch("select version from supabase_migrations.schema_migrations")}
        for version, name, path in migration_files(directory):
            if version in done:
                continue
            sql = path.read_text(encoding="utf-8")
            await conn.execute(sql)
            await conn.execute(
                "insert into supabase_migrations.schema_migrations (version, statements, name)"
                " values ($1, $2, $3)", version, [sql], name)
            applied.append(version)
    return applied
