"""States of models this worker owns but does not hold in memory, on local disk.

Two kinds live here: states restored from the state topic at an assignment, until their
model is first seen, and states of idle models evicted to keep the held ones under
``DRIFTLINE_MAX_MODELS``. Either way the state topic already has (or is being sent) the
same state: the spill is a cache of it for this process, never read after a restart (a
new worker restores from the topic), so a lost spill costs a re-read, not a detection.

It is a SQLite file with journaling off: memory stays flat however many models a flood
brings (SQLite keeps a small page cache; the states are on disk), and a lookup by model
id is an index probe.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["StateSpill"]

# A Bloom filter in front of the file: most ids a flood brings were never spilled, and a
# probe of SQLite costs several times the rest of refusing one. 2**24 bits (2 MiB), two
# bits an id: ~1.4% of a million never-spilled ids still probe.
_BLOOM_BITS = 1 << 24
_MASK = _BLOOM_BITS - 1


class StateSpill:
    """``model_id -> (partition, self-contained state record)`` on disk."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = directory
        self.path: str | None = None
        self._conn: sqlite3.Connection | None = None  # opened at the first state kept
        self._bloom = bytearray(_BLOOM_BITS // 8)  # ids ever stored (never cleared)

    @staticmethod
    def _bits(model_id: str) -> tuple[int, int]:
        h = hash(model_id)
        return h & _MASK, (h >> 24) & _MASK

    def _mark(self, model_id: str) -> None:
        for bit in self._bits(model_id):
            self._bloom[bit >> 3] |= 1 << (bit & 7)

    def _may_hold(self, model_id: str) -> bool:
        a, b = self._bits(model_id)
        bloom = self._bloom
        return bool(bloom[a >> 3] >> (a & 7) & 1 and bloom[b >> 3] >> (b & 7) & 1)

    def _select(self, model_id: str, columns: str) -> tuple | None:
        """A model's row (``columns``, a constant), or None; the Bloom filter first."""
        if self._conn is None or not self._may_hold(model_id):
            return None
        return self._db.execute(f"SELECT {columns} FROM states WHERE model_id = ?",
                                (model_id,)).fetchone()

    def _get(self, model_id: str) -> tuple[int, bytes] | None:
        row = self._select(model_id, "partition, state")
        return None if row is None else (int(row[0]), bytes(row[1]))

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.directory is not None:
                Path(self.directory).mkdir(parents=True, exist_ok=True)
            fd, self.path = tempfile.mkstemp(prefix="driftline-spill-", suffix=".sqlite",
                                             dir=self.directory)
            os.close(fd)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-16384",
                           "temp_store=MEMORY"):
                db.execute(f"PRAGMA {pragma}")
            db.execute("CREATE TABLE states (model_id TEXT PRIMARY KEY, partition INTEGER"
                       " NOT NULL, state BLOB NOT NULL)")
            db.execute("CREATE INDEX by_partition ON states (partition)")
            self._conn = db
        return self._conn

    def __len__(self) -> int:  # (a count over the table: for gauges, not the hot path)
        if self._conn is None:
            return 0
        return int(self._db.execute("SELECT count(*) FROM states").fetchone()[0])

    def __contains__(self, model_id: str) -> bool:
        return self._select(model_id, "1") is not None  # (without reading the state)

    def put_many(self, rows: Iterable[tuple[str, int, bytes]]) -> None:
        """Store ``(model_id, partition, state)`` rows, replacing what a model had."""
        rows = list(rows)
        if not rows:
            return
        for model_id, _, _ in rows:
            self._mark(model_id)
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO states VALUES (?, ?, ?)", rows)

    def __setitem__(self, model_id: str, row: tuple[int, bytes]) -> None:
        self._mark(model_id)
        self._db.execute("INSERT OR REPLACE INTO states VALUES (?, ?, ?)",
                         (model_id, row[0], row[1]))

    def __getitem__(self, model_id: str) -> tuple[int, bytes]:
        got = self._get(model_id)
        if got is None:
            raise KeyError(model_id)
        return got

    def items(self) -> Iterator[tuple[str, tuple[int, bytes]]]:
        if self._conn is None:
            return
        for model_id, partition, blob in self._db.execute(
                "SELECT model_id, partition, state FROM states ORDER BY model_id").fetchall():
            yield model_id, (int(partition), bytes(blob))

    def pop(self, model_id: str, default: None = None) -> tuple[int, bytes] | None:
        """A mapping's ``pop`` (the state restore writes here as into a dict)."""
        return self.take(model_id)

    def take(self, model_id: str) -> tuple[int, bytes] | None:
        """A model's partition and state, removed from the spill (the caller holds the
        model from now on), or None."""
        got = self._get(model_id)
        if got is not None:
            self._db.execute("DELETE FROM states WHERE model_id = ?", (model_id,))
        return got

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the states of partitions this worker no longer owns; how many."""
        parts = sorted(set(partitions))
        if not parts or self._conn is None:
            return 0
        marks = ",".join("?" * len(parts))
        with self._transaction():
            n = self._db.execute(f"DELETE FROM states WHERE partition IN ({marks})",
                                 parts).rowcount
        return int(n)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.path is not None:
            Path(self.path).unlink(missing_ok=True)
            self.path = None

    def _transaction(self) -> sqlite3.Connection:
        self._db.execute("BEGIN")
        return self._db  # its context manager commits (or rolls back on an error)
