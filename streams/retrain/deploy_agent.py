"""The deploy agent: ``deployed`` model updates into the retrain service and the store.

The monitor reads ``driftline.model-updates`` for its baselines and never waits for the
store; recording a deploy (the model's version, its open retrain jobs closed as
succeeded, its open drift group superseded) is this agent's job, in a consumer group of
its own. A store outage therefore holds back only the deploy notices: the handler
retries with the store's backoff and blocks, the offsets are committed after it
returned, and Kafka keeps the backlog until the store is back — while detection goes on.
A crash before the commit hands the notices over again; recording one twice changes
nothing (the version is stored once, a closed job stays closed).

Invalid records are the monitor's to dead-letter (it reads the same ones). A valid
notice the store refuses for good (``StoreError``) is dead-lettered here with reason
``store_rejected``: a retry would fail the same way at every start.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

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

log = logging.getLogger("driftline.deploys")

DeployHandler = Callable[[str, str], Awaitable[Any]]


class DeployAgent(Service):
    """Consumes deploy notices and hands each valid one to ``handler(model_id, version)``."""

    def __init__(self, settings: Settings, handler: DeployHandler, metrics: Metrics,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.handler = handler
        self.metrics = metrics
        self.decoder = BatchDecoder(settings.max_payload_bytes)
        self.consumer = BatchConsumer(
            settings=settings, group_id=f"{settings.app_id}-deploys",
            topics=[settings.topic("model-updates")], handle=self.handle,
            max_records=500, within_s=0.5, metrics=None, name="deploys",
            loop=kwargs.get("loop"), beacon=self.beacon)
        self.producer: Any = None  # AIOKafkaProducer, for store_rejected dead letters
        self.recorded = 0

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
        """Record each valid deploy notice, in order (blocks while the store is down)."""
        updates, _ = self.decoder.model_updates([r.value for r in records],
                                                [r.key for r in records])
        refused: list[Reject] = []
        for rec, upd in zip(records, updates, strict=True):
            if upd is None:
                continue  # the monitor dead-letters it
            try:
                await self.handler(upd.model_id, upd.model_version)
            except StoreUnavailable:
                raise  # the store is down (a retry budget ran out): not the record's fault
            except StoreError as exc:
                refused.append(Reject(rec, "store_rejected", str(exc)))
                continue
            self.recorded += 1
        if refused:
            await self._dead_letter(refused)

    async def _dead_letter(self, rejects: list[Reject]) -> None:
        assert self.producer is not None
        topic = self.settings.topic("dead-letters")
        for rej in rejects:
            log.warning("store refused the deploy notice %s[%d]@%d: %s", rej.record.topic,
                        rej.record.partition, rej.record.offset, rej.message)
            key, value, headers = dead_letter_record(rej)
            await self.producer.send_and_wait(topic, value, key=key, headers=headers)
        count_rejects(self.metrics.dead_letters, rejects)
