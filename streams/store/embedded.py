"""An embedded PostgreSQL (with pgvector) from the ``pgserver`` wheel, for the demo and tests.

The server listens on a Unix socket inside (or next to) its data directory; the DSN
stays the same across :meth:`EmbeddedPostgres.stop` / :meth:`EmbeddedPostgres.start`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from driftline.streams.store.postgres import PostgresStore


class EmbeddedPostgres:
    """Start, stop and restart the pgserver PostgreSQL under ``data_dir``."""

    def __init__(self, data_dir: Path | str, *, cleanup_mode: str | None = "stop") -> None:
        self.data_dir = Path(data_dir)
        self._cleanup_mode = cleanup_mode
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; return its DSN. Blocking: use a thread
        from async code."""
        import pgserver

        if self._server is None:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = pgserver.get_server(self.data_dir, cleanup_mode=self._cleanup_mode)
        else:
            with self._server._lock:
                self._server.ensure_postgres_running()
        return str(self._server.get_uri())

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded postgres not started")
        return str(self._server.get_uri())

    @property
    def pid(self) -> int | None:
        return None if self._server is None else self._server.get_pid()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``: open connections are cut)."""
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        if self._server is None:
            return
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.data_dir.resolve(),
               user=self._server.system_user, timeout=30)

    def close(self) -> None:
        """Release this process's handle; the server stops when the last handle goes
        (``cleanup_mode='stop'``)."""
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()

    def is_running(self) -> bool:
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir.resolve())
        return info is not None and info.is_running()


class EmbeddedStore(PostgresStore):
    """The Postgres backend on an :class:`EmbeddedPostgres` it starts itself (the
    zero-configuration default)."""

    name = "embedded"

    def __init__(self, data_dir: Path | str, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.server = EmbeddedPostgres(data_dir)

    async def start(self) -> None:
        self._dsn = await asyncio.to_thread(self.server.start)
        await super().start()

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self.server.close)
