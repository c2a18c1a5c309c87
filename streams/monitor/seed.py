"""Seed: each model's seasonal profiles learned from the store's history before the worker
first sees it, so a fresh deploy knows the model's time of day (or week) at once instead
of after two periods (a profile counts a bin once it saw it in two, detectors/season.py).

``driftline seed`` runs while no worker does: it refuses when the monitor's consumer
group has members, since a state written under a running worker could overwrite one that
worker is writing. For each model with stored interactions and no state on the
monitor-state topic, it reads the model's interactions of the last ``periods`` periods
before the *cut* -- the earliest event time the worker will read from the interactions
topic (at its group's committed offsets, else at the retained beginning), so that nothing
is learned twice -- into a fresh monitor (:meth:`ModelMonitor.learn_history`: profiles
only, nothing observed), and writes that state, marked a seed, to the model's partition.

The partition is the one Kafka's default partitioner gives the key (murmur2, as
driftline's client, aiokafka, kafka-python and the Java clients key records; librdkafka's
clients need ``partitioner=murmur2_random``). A seed never replaces a state a worker wrote
(:mod:`.state_codec`): a seed in the wrong partition is ignored, not harmful.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2
from driftline.detectors import ModelMonitor
from driftline.detectors.segmented import SegmentedMonitor, new_monitor
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.ingest.decoder import BatchDecoder
from driftline.streams.monitor.restore import read_to_end
from driftline.streams.monitor.state_codec import ModelState, checkpoint_records, is_blob_key
from driftline.streams.store.base import Store

PAGE = 50_000  # history rows per query
HEAD = 200  # records read at a partition's start to find its earliest event time


class SeedRefused(RuntimeError):
    """Seeding now could overwrite a worker's state, or has nothing to learn with."""


@dataclass(frozen=True)
class Seeded:
    """One model's seed: its state partition, the history rows read and, per seasonal
    signal, the bins of the period that count (``known``) of all (``bins``)."""

    model_id: str
    partition: int
    rows: int
    known: dict[str, int]
    bins: int


@dataclass(frozen=True)
class SeedReport:
    """What a seed run did: the history window (up to the cut) and each model seeded; the
    models skipped because a state exists already, and those with no history in it."""

    since: float
    cut: float
    seeded: list[Seeded]
    skipped: list[str]
    empty: list[str]


def partition_of(model_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, Java's) gives a key."""
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % partitions


async def seed(settings: Settings, store: Store, *, models: Sequence[str] | None = None,
               periods: float = 3.0, dry_run: bool = False,
               progress: Callable[[str, int], None] | None = None) -> SeedReport:
    """Seed the seasonal profiles of ``models`` (default: every model with history in the
    window) that have no state yet; see the module text. ``dry_run`` reads and learns
    but writes nothing. Raises :class:`SeedRefused`."""
    from driftline.streams.app import ensure_topics

    config = settings.monitor_config()
    if config.season_period_s <= 0:
        raise SeedRefused("no seasonal profile is configured (DRIFTLINE_SEASON_PERIOD_S=0): "
                          "there is nothing to seed")
    if not periods > 0:
        raise SeedRefused("--periods must be > 0")
    await ensure_topics(settings)
    group = f"{settings.app_id}-monitor"
    members, partitions, committed = await _group(settings, group)
    if members:
        raise SeedRefused(f"the monitor's consumer group {group} has {members} member(s): "
                          "stop the workers first (a seed must not race a worker's state)")
    cut = await _cut(settings, partitions, committed)
    since = cut - periods * config.season_period_s
    window = (datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(cut, UTC))
    stated = await _stated_models(settings, len(partitions))
    wanted = list(models) if models is not None else await store.history_models(*window)
    skipped = [m for m in wanted if m in stated]
    plan = settings.segment_plan()
    seeded: list[Seeded] = []
    empty: list[str] = []
    producer = None if dry_run else kafka_clients.producer(settings, acks="all")
    if producer is not None:
        await kafka_clients.start(producer, settings)
    try:
        for model_id in (m for m in wanted if m not in stated):
            monitor = new_monitor(model_id, config, plan.for_model(model_id) if plan else None)
            learner = _model_level(monitor)
            rows = await _learn(store, learner, model_id, window, progress)
            if rows == 0:
                empty.append(model_id)
                continue
            profiles = learner.seasons
            part = partition_of(model_id, len(partitions))
            seeded.append(Seeded(model_id, part, rows,
                                 {name: p.known for name, p in profiles.items()},
                                 config.season_bins))
            if producer is None:
                continue
            st = ModelState(monitor, {}, part, seeded=True)
            acks = [await producer.send(settings.topic("monitor-state"), value, key=key,
                                        partition=part)
                    for key, value in checkpoint_records(st, model_id,
                                                         settings.state_apart_bytes)]
            for ack in acks:
                await ack
    finally:
        if producer is not None:
            await producer.stop()
    return SeedReport(since, cut, seeded, skipped, empty)


def _model_level(monitor: ModelMonitor | SegmentedMonitor) -> ModelMonitor:
    """The monitor whose profiles a seed learns (a segmented model's model level: its
    segments start their own when they first appear)."""
    return monitor.model if isinstance(monitor, SegmentedMonitor) else monitor


async def _learn(store: Store, monitor: ModelMonitor, model_id: str,
                 window: tuple[datetime, datetime],
                 progress: Callable[[str, int], None] | None) -> int:
    """Feed a model's history in ``window`` to its profiles, page by page; the rows read."""
    rows = 0
    after: tuple[datetime, str] | None = None
    while True:
        page = await store.history(model_id, *window, after=after, limit=PAGE)
        if not page:
            return rows
        ts = np.array([r.ts.timestamp() for r in page], dtype=np.float64)
        latency = np.array([math.nan if r.latency_ms is None else r.latency_ms
                            for r in page], dtype=np.float64)
        tokens = np.array([math.nan if r.output_tokens is None else r.output_tokens
                           for r in page], dtype=np.float64)
        monitor.learn_history(ts, latency_ms=latency, output_tokens=tokens)
        rows += len(page)
        if progress is not None:
            progress(model_id, rows)
        after = (page[-1].ts, page[-1].event_id)
        if len(page) < PAGE:
            return rows


async def _group(settings: Settings, group: str
                 ) -> tuple[int, list[int], dict[int, int]]:
    """The monitor group's members now, the interactions topic's partitions and the
    group's committed offset in each (where it has one)."""
    topic = settings.topic("interactions")
    admin = kafka_clients.admin(settings)
    await kafka_clients.start(admin, settings)
    try:
        described = await admin.describe_consumer_groups([group])
        meta = await admin.describe_topics([topic])
        partitions = sorted(p["partition"] for t in meta for p in t["partitions"])
        if not partitions:
            raise SeedRefused(f"topic {topic} has no partitions")
        committed = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(topic, p) for p in partitions])
    finally:
        await admin.close()
    members = sum(len(g[5]) for resp in described for g in resp.groups if g[1] == group)
    return members, partitions, {tp.partition: om.offset for tp, om in committed.items()
                                 if om.offset >= 0}


async def _cut(settings: Settings, partitions: list[int], committed: dict[int, int]
               ) -> float:
    """The earliest event time (epoch s) the worker will read from the interactions
    topic: of the decodable records among the first :data:`HEAD` at each partition's
    committed offset (else its beginning; a partition with none decodable: its first
    record's timestamp). Now when there is nothing left to read."""
    topic = settings.topic("interactions")
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = kafka_clients.consumer(settings, group_id=None, enable_auto_commit=False,
                                      auto_offset_reset="earliest")
    await kafka_clients.start(consumer, settings)
    cut = time.time()
    try:
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        stop: dict[TopicPartition, int] = {}
        for tp in tps:
            start = max(committed.get(tp.partition, begin[tp]), begin[tp])
            if start < end[tp]:
                consumer.seek(tp, start)
                stop[tp] = min(end[tp], start + HEAD)
        head: dict[TopicPartition, list[ConsumerRecord]] = {tp: [] for tp in stop}
        deadline = time.monotonic() + 60.0
        todo = set(stop)
        while todo:
            if time.monotonic() > deadline:
                raise SeedRefused(f"cannot read the start of {topic} within 60 s")
            fetched = await consumer.getmany(*todo, timeout_ms=500)
            for tp, msgs in fetched.items():
                head[tp].extend(m for m in msgs if m.offset < stop[tp])
            for tp in list(todo):
                if await consumer.position(tp) >= stop[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    decoder = BatchDecoder()
    for msgs in (m for m in head.values() if m):
        good = [float(r.ts) for r in decoder.interactions([m.value for m in msgs]).records
                if r is not None]
        cut = min(cut, min(good) if good else msgs[0].timestamp / 1000.0)
    return cut


async def _stated_models(settings: Settings, partitions: int) -> set[str]:
    """Models with a state on the state topic (its keys only: values are not kept)."""
    models: set[str] = set()

    def take(m: ConsumerRecord) -> None:
        if m.key is None or is_blob_key(m.key):
            return
        if m.value is None:
            models.discard(m.key.decode())
        else:
            models.add(m.key.decode())

    await read_to_end(settings, settings.topic("monitor-state"), set(range(partitions)), take)
    return models
