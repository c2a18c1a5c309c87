"""The logger agent: a sample of valid interactions into the store, in batches.

It is its own consumer group on ``driftline.interactions``, so a slow or unavailable
store holds back only the logger: the store's writes retry with backoff and block,
offsets are committed after the rows are stored, and Kafka keeps the backlog
(backpressure instead of an unbounded buffer). Sampling is by a hash of ``event_id``,
so a replay samples the same interactions.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from driftline.streams.config import Settings
from driftline.streams.ingest.consumer import BatchConsumer
from driftline.streams.ingest.contract import InvalidEvent, parse_interaction
from driftline.streams.ingest.decoder import FastPath
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import RecordLike
from mode import Service

log = logging.getLogger("driftline.logger")

Sink = Callable[[list[dict[str, Any]]], Awaitable[None]]


def sampled(event_id: str, rate: float) -> bool:
    """Deterministic sampling: the same event is in or out on every run."""
    if rate >= 1.0:
        return True
    return (zlib.crc32(event_id.encode()) & 0xFFFFFFFF) < rate * 2**32


class LoggerAgent(Service):
    """Consumes interactions and hands the sampled valid ones to ``sink`` per batch."""

    def __init__(self, settings: Settings, sink: Sink, metrics: Metrics,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.fast = FastPath(settings.max_payload_bytes)
        self.consumer = BatchConsumer(
            settings=settings, group_id=f"{settings.app_id}-logger",
            topics=[settings.topic("interactions")], handle=self.handle,
            max_records=2000, within_s=0.5, metrics=None, name="logger",
            loop=kwargs.get("loop"), beacon=self.beacon)

    async def on_start(self) -> None:
        await self.consumer.start()

    async def on_stop(self) -> None:
        await self.consumer.stop()

    async def handle(self, records: list[RecordLike]) -> None:
        rate = self.settings.log_sample_rate
        limit = self.settings.max_payload_bytes
        rows: list[dict[str, Any]] = []
        its = self.fast.decode_many([r.value for r in records], [r.key for r in records])
        for rec, it in zip(records, its, strict=True):
            if it is not None:
                if sampled(it.event_id, rate):
                    rows.append(orjson.loads(rec.value))  # type: ignore[arg-type]
                continue
            try:
                doc = parse_interaction(rec.value, rec.key, limit).raw
            except InvalidEvent:
                continue  # the monitor dead-letters it
            if sampled(doc["event_id"], rate):
                rows.append(doc)
        if rows:
            await self.sink(rows)  # retries until stored; only then are offsets committed
        self.metrics.buffer_fill.labels("logger").set(len(records) / 2000)
