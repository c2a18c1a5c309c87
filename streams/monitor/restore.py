"""Restore: read the monitor-state topic's partitions this worker was assigned, back to
each model's latest state (self-contained, see :class:`.state_codec.LatestStates`); and
the reading of a topic's partitions to their end that it (and ``driftline seed``) rests
on."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.monitor.state_codec import LatestStates, StateStore


async def read_state(settings: Settings, topic: str, partitions: set[int],
                     into: StateStore) -> None:
    """Write the latest state (self-contained) and its partition per model in the given
    partitions ``into`` a store (the worker's is on disk: a topic that holds a flood's
    models would not fit in memory). Raises :class:`.state_codec.StateError` when a
    state cannot be put together (the caller stops rather than starting that model
    afresh)."""
    latest = LatestStates(into)
    await read_to_end(settings, topic, partitions,
                      lambda m: latest.add(m.key, m.value, m.partition))
    latest.settle()


async def read_to_end(settings: Settings, topic: str, partitions: set[int],
                      take: Callable[[ConsumerRecord], None]) -> None:
    """Hand every record of the given partitions of ``topic``, from the beginning to the
    end they had when called, to ``take`` in log order (per partition)."""
    if not partitions:
        return
    # "earliest": with the default "latest", the reset that assign() starts can land after
    # seek_to_beginning() and move the position to the end (aiokafka 0.14) -- nothing read.
    consumer = kafka_clients.consumer(settings, enable_auto_commit=False, group_id=None,
                                      max_partition_fetch_bytes=8 << 20,
                                      auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=500)
            for msgs in fetched.values():
                for m in msgs:
                    take(m)
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
