"""Apply ``supabase/migrations/*.sql`` to a Postgres database, once each.

The ledger is the Supabase CLI's own (``supabase_migrations.schema_migrations``), so
``driftline migrate`` and ``supabase db push`` agree on what has been applied. The SQL
files ship in the wheel as the data package ``driftline.migrations`` (pyproject.toml maps
it to ``supabase/migrations/``), so an installed driftline finds them without its source.
"""

from __future__ import annotations

import importlib
import importlib.resources
import re
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg
from driftline.streams.store.errors import redact

MIGRATIONS_PACKAGE = "driftline.migrations"
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


def migrations() -> Traversable:
    """The directory of the installed migrations (package data of ``driftline.migrations``)."""
    pkg = importlib.import_module(MIGRATIONS_PACKAGE)
    try:
        return importlib.resources.files(pkg)
    except NotADirectoryError:
        # Python 3.11 refuses a namespace path with a non-directory entry, which
        # setuptools' editable finder adds (a placeholder): take the real directory.
        return next(Path(p) for p in pkg.__path__ if Path(p).is_dir())


def migration_files(directory: Traversable | None = None
                    ) -> list[tuple[str, str, Traversable]]:
    """``(version, name, file)`` of every migration, in version order."""
    found = []
    root = migrations() if directory is None else directory
    files = [f for f in root.iterdir() if f.name.endswith(".sql") and f.is_file()]
    for path in sorted(files, key=lambda f: f.name):
        m = _NAME.match(path.name)
        if m is None:
            raise ValueError(f"migration file name not <14 digits>_<name>.sql: {path.name}")
        found.append((m.group(1), m.group(2), path))
    return found


async def apply_migrations(dsn: str, directory: Traversable | None = None,
                           timeout_s: float = 60.0) -> list[str]:
    """Apply the migrations not yet in the ledger; return the versions applied now.

    A database that does not answer within ``timeout_s`` raises :class:`ConnectionError`.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except Exception as exc:
        raise ConnectionError(redact(f"migrate: cannot connect: {exc}", dsn)) from None
    try:
        return await apply_on(conn, directory)
    finally:
        await conn.close()


async def apply_on(conn: asyncpg.Connection, directory: Traversable | None = None) -> list[str]:
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
