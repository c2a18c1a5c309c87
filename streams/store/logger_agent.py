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
from aiokafka import AIOKafkaProducer
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.ingest.consumer import BatchConsumer
from driftline.streams.ingest.dead_letters import dead_letter_record
from driftline.streams.ingest.decoder import BatchDecoder
from driftline.streams.ingest.records import RecordLike, Reject, count_rejects
from driftline.streams.metrics import Metrics
from driftline.streams.store.errors import StoreError, StoreUnavailable
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
        self.decoder = BatchDecoder(settings.max_payload_bytes)
        self.consumer = BatchConsumer(
            settings=settings, group_id=f"{settings.app_id}-logger",
            topics=[settings.topic("interactions")], handle=self.handle,
            max_records=2000, within_s=0.5, metrics=None, name="logger",
            loop=kwargs.get("loop"), beacon=self.beacon)

        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self.producer = kafka_clients.producer(self.settings, acks="all",
                                               enable_idempotence=True)
        await kafka_clients.start(self.producer, self.settings)
        await self.consumer.start()

    async def on_stop(self) -> None:
        await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

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
                await self._dead_letter(refused)
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

    async def _dead_letter(self, rejects: list[Reject]) -> None:
        assert self.producer is not None
        topic = self.settings.topic("dead-letters")
        for rej in rejects:
            log.warning("store refused %s[%d]@%d: %s", rej.record.topic,
                        rej.record.partition, rej.record.offset, rej.message)
            key, value, headers = dead_letter_record(rej)
            await self.producer.send_and_wait(topic, value, key=key, headers=headers)
        count_rejects(self.metrics.dead_letters, rejects)
