"""Batch consumption for the hot topics, straight from aiokafka, hosted by the Faust worker.

Faust delivers every record through its conductor, an ``Event`` and a stream iteration
(``wait_first`` on two awaitables per message): measured here at well over ten times
the cost of fetching and decoding the record. driftline's high-volume paths (the
monitor and the interaction logger) therefore run as services of the Faust app that own
a consumer-group member each: a batch is fetched with ``getmany``, handed over whole,
and its offsets are committed only after the handler returned, i.e. after everything
it produced was acknowledged by the broker (at-least-once, ids make repeats harmless).
A rebalance waits for the batch in flight: the revoke callback takes the same lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from mode import Service

from streams.metrics import Metrics
from streams.processor import Record

log = logging.getLogger("driftline.consumer")

BatchHandler = Callable[[list[Record]], Awaitable[None]]
PartitionsHook = Callable[[set[TopicPartition]], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.owner.lock:  # the batch in flight finishes and commits first
            if self.owner.on_revoked is not None:
                await self.owner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        async with self.owner.lock:
            if self.owner.on_assigned is not None:
                await self.owner.on_assigned(set(assigned))


class BatchConsumer(Service):
    """One consumer-group member that hands whole batches to ``handle``."""

    def __init__(self, *, bootstrap: str, group_id: str, topics: list[str],
                 handle: BatchHandler, on_assigned: PartitionsHook | None = None,
                 on_revoked: PartitionsHook | None = None, max_records: int = 5000,
                 within_s: float = 0.05, metrics: Metrics | None = None,
                 name: str = "batch", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = topics
        self.handle = handle
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.max_records = max_records
        self.within_ms = max(1, int(within_s * 1000))
        self.metrics = metrics
        self.kind = name
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.batches = 0

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            # Range keeps equal partition numbers of co-partitioned topics together.
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
            client_id=f"{self.group_id}-{self.kind}")
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        if self.consumer is not None:
            async with self.lock:
                await self.consumer.stop()

    @Service.task
    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop:
            fetched = await consumer.getmany(timeout_ms=self.within_ms,
                                             max_records=self.max_records)
            if not fetched:
                continue
            async with self.lock:
                records: list[Record] = []
                commit: dict[TopicPartition, int] = {}
                assigned = consumer.assignment()
                for tp, msgs in fetched.items():
                    if tp not in assigned:  # revoked while we waited for the lock
                        continue
                    records.extend(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                          m.timestamp / 1000.0) for m in msgs)
                    commit[tp] = msgs[-1].offset + 1
                if not records:
                    continue
                await self.handle(records)
                await consumer.commit(commit)
                self.batches += 1
                self._export_lag(consumer, commit)

    def _export_lag(self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]
                    ) -> None:
        if self.metrics is None:
            return
        for tp, pos in positions.items():
            high = consumer.highwater(tp)
            if high is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - pos))
