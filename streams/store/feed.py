"""A consumer group of its own that feeds the store: the logger's and the deploy agent's
shape.

Each reads one topic in batches (:class:`~driftline.streams.ingest.consumer.BatchConsumer`)
and hands a batch to :meth:`StoreFeed.handle`, which writes to the store and blocks while
the store retries; the offsets are committed after it returned, so a store outage holds
back only this group and Kafka keeps the backlog. What the store refuses for good
(``StoreError``) is no reason to stop: :meth:`StoreFeed.dead_letter` sends those records
to the dead-letter topic (reason ``store_rejected``) before the offsets move on.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.ingest.consumer import BatchConsumer
from driftline.streams.ingest.dead_letters import dead_letter_record
from driftline.streams.ingest.decoder import BatchDecoder
from driftline.streams.ingest.records import RecordLike, Reject, count_rejects
from driftline.streams.metrics import Metrics
from mode import Service


class StoreFeed(Service):
    """One topic's records, in batches of up to ``max_records``, into the store.

    Subclasses implement :meth:`handle`; ``store_log`` is the logger of its warnings.
    """

    store_log = logging.getLogger("driftline.store")

    def __init__(self, settings: Settings, metrics: Metrics, *, group: str, topic: str,
                 max_records: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.decoder = BatchDecoder(settings.max_payload_bytes)
        self.consumer = BatchConsumer(
            settings=settings, group_id=f"{settings.app_id}-{group}",
            topics=[settings.topic(topic)], handle=self.handle,
            max_records=max_records, within_s=0.5, metrics=None, name=group,
            loop=kwargs.get("loop"), beacon=self.beacon)
        self.producer: Any = None  # AIOKafkaProducer, for store_rejected dead letters

    async def on_start(self) -> None:
        producer: AIOKafkaProducer = kafka_clients.producer(
            self.settings, acks="all", enable_idempotence=True)
        self.producer = producer
        await kafka_clients.start(producer, self.settings)
        await self.consumer.start()

    async def on_stop(self) -> None:
        await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def handle(self, records: list[RecordLike]) -> None:
        """Write a batch to the store (blocks while the store is down)."""
        raise NotImplementedError

    async def dead_letter(self, rejects: list[Reject], what: str = "") -> None:
        """Send records the store refused for good to the dead-letter topic."""
        assert self.producer is not None
        topic = self.settings.topic("dead-letters")
        for rej in rejects:
            self.store_log.warning("store refused %s%s[%d]@%d: %s", what, rej.record.topic,
                             rej.record.partition, rej.record.offset, rej.message)
            key, value, headers = dead_letter_record(rej)
            await self.producer.send_and_wait(topic, value, key=key, headers=headers)
        count_rejects(self.metrics.dead_letters, rejects)
