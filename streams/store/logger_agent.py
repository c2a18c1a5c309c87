"""The logger agent: a sample of valid interactions into the store, in batches.

It is its own consumer group on ``driftline.interactions``, so a slow or unavailable
store holds back only the logger: the store's writes retry with backoff and block,
offsets are committed after the rows are stored, and Kafka keeps the backlog
(backpressure instead of an unbounded buffer). Sampling is by a hash of ``event_id``,
so a replay samples the same interactions.

A row the store refuses for good (``StoreError``: a value its column cannot hold) is no
reason to stop logging: the batch is split until the refused rows are found, and each
goes to the dead-letter topic (reason ``store_rejected``) before the offsets move on.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from driftline.streams.config import Settings
from driftline.streams.ingest.records import RecordLike, Reject
from driftline.streams.metrics import Metrics
from driftline.streams.store.errors import StoreError, StoreUnavailable
from driftline.streams.store.feed import StoreFeed

Sink = Callable[[list[dict[str, Any]]], Awaitable[None]]


def sampled(event_id: str, rate: float) -> bool:
    """Deterministic sampling: the same event is in or out on every run."""
    if rate >= 1.0:
        return True
    return (zlib.crc32(event_id.encode()) & 0xFFFFFFFF) < rate * 2**32


class LoggerAgent(StoreFeed):
    """Consumes interactions and hands the sampled valid ones to ``sink`` per batch."""

    store_log = logging.getLogger("driftline.logger")

    def __init__(self, settings: Settings, sink: Sink, metrics: Metrics,
                 **kwargs: Any) -> None:
        super().__init__(settings, metrics, group="logger", topic="interactions",
                         max_records=2000, **kwargs)
        self.sink = sink

    async def handle(self, records: list[RecordLike]) -> None:
        rate = self.settings.log_sample_rate
        rows: list[dict[str, Any]] = []
        sources: list[RecordLike] = []
        its = self.decoder.interactions([r.value for r in records],
                                        [r.key for r in records]).records
        for rec, it in zip(records, its, strict=True):
            # (Rejects are the monitor's to dead-letter: it reads the same records.)
            if it is not None and sampled(it.event_id, rate):
                rows.append(orjson.loads(rec.value))  # type: ignore[arg-type]
                sources.append(rec)
        if rows:
            # Retries until stored; only then are offsets committed.
            refused = await self._store(rows, sources)
            if refused:
                await self.dead_letter(refused)
        self.metrics.buffer_fill.labels("logger").set(len(records) / 2000)

    async def _store(self, rows: list[dict[str, Any]], sources: list[RecordLike]
                     ) -> list[Reject]:
        """Store rows; those the store refuses for good, found by halving, as rejects."""
        try:
            await self.sink(rows)
            return []
        except StoreUnavailable:
            raise  # the store is down (retries exhausted): not the rows' fault
        except StoreError as exc:
            if len(rows) == 1:
                return [Reject(sources[0], "store_rejected", str(exc))]
        half = len(rows) // 2
        return (await self._store(rows[:half], sources[:half])
                + await self._store(rows[half:], sources[half:]))
