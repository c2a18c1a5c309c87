"""The monitor agent: interactions, feedback and deploys in; drift events and rejects out.

Per-model state lives in a compacted Kafka topic (``driftline.monitor-state``), keyed by
``model_id`` and written to the same partition number as the model's input records, so
whoever owns input partition *p* restores exactly state partition *p*. Order of work
per batch: process → publish drift events and dead letters → publish state → (the
consumer) commit input offsets. A crash before the commit replays the batch onto state
that may already contain it; the per-model offsets in the state skip those records, so
every record changes a model once and a re-emitted detection keeps its ``drift_id``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from operator import attrgetter
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from driftline.detectors import ModelMonitor, MonitorConfig, kernels
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.ingest.consumer import BatchConsumer
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import (
    REJECT_REASON,
    BatchResult,
    LatestStates,
    MonitorProcessor,
    RecordLike,
    Reject,
    count_rejects,
)
from driftline.streams.monitor.segments import export_segment_stats, segment_configs
from driftline.streams.store.errors import StoreError, StoreUnavailable
from mode import Service

log = logging.getLogger("driftline.monitor")

_REJECT_VALUE = attrgetter("record.value")

# Dead-letter headers, modelled on Kafka Connect's ``__connect.errors.*``.
H_REASON = "driftline.error.reason"
H_MESSAGE = "driftline.error.message"
H_TOPIC = "driftline.source.topic"
H_PARTITION = "driftline.source.partition"
H_OFFSET = "driftline.source.offset"
H_TRUNCATED = "driftline.error.truncated"
REJECT_LOG_EVERY_S = 10.0
# Rejects wait for the next checkpoint to be published, or until they hold this much.
DEAD_LETTER_BUFFER_BYTES = 1 << 20
# A dead letter is its source record's key and value plus the headers above. A record as
# big as the broker takes (message.max.bytes, 1 MiB by default) no longer fits with them,
# and a dead letter the broker refuses would fail every checkpoint: past this size a dead
# letter keeps the first bytes, and H_TRUNCATED names the original size (the whole record
# stays at its source offset for the topic's retention).
DEAD_LETTER_MAX_BYTES = 1_000_000
# A state record holds a model's warm-up values until the warm-up ends: two scalar signals
# of a 70,000-event warm-up are 1.1 MB, past the producer's and the broker's 1 MiB
# defaults. The state topic is created to take records up to this size, and the
# producer sends them (the default warm-up, 2,000, stays under 1 MB with embeddings).
STATE_RECORD_MAX_BYTES = 16 << 20


def dead_letter_headers(rej: Reject) -> list[tuple[str, bytes]]:
    message = rej.message.encode()
    if len(message) > 1000:  # cut without splitting a UTF-8 sequence
        message = message[:1000].decode(errors="ignore").encode()
    return [
        (H_REASON, rej.reason.encode()),
        (H_MESSAGE, message),
        (H_TOPIC, rej.record.topic.encode()),
        (H_PARTITION, str(rej.record.partition).encode()),
        (H_OFFSET, str(rej.record.offset).encode()),
    ]


def dead_letter_record(rej: Reject) -> tuple[bytes | None, bytes | None,
                                             list[tuple[str, bytes]]]:
    """The dead letter of a reject: key, value (cut to fit if need be) and headers."""
    rec = rej.record
    key, value = rec.key, rec.value
    headers = dead_letter_headers(rej)
    size = len(key or b"") + len(value or b"")
    if size > DEAD_LETTER_MAX_BYTES:
        headers.append((H_TRUNCATED, str(size).encode()))
        room = DEAD_LETTER_MAX_BYTES - sum(len(k) + len(v) for k, v in headers)
        if key is not None and len(key) > room // 2:
            key = key[:room // 2]
        if value is not None:
            value = value[:room - len(key or b"")]
    return key, value, headers


async def read_state(settings: Settings, topic: str, partitions: set[int]
                     ) -> dict[str, tuple[int, bytes]]:
    """The latest state (self-contained) and its partition per model in the given
    partitions (see ``processor.LatestStates``)."""
    if not partitions:
        return {}
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
        latest = LatestStates()
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=500)
            for tp, msgs in fetched.items():
                for m in msgs:
                    latest.add(m.key, m.value, tp.partition)
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
        return latest.result()
    finally:
        await consumer.stop()


class MonitorAgent(Service):
    """Wires a :class:`MonitorProcessor` to Kafka through a :class:`BatchConsumer`."""

    def __init__(self, settings: Settings, processor: MonitorProcessor, metrics: Metrics,
                 on_deployed: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self.on_deployed = on_deployed
        self.producer: AIOKafkaProducer | None = None
        # State records restored for the assigned partitions, until their model is first
        # seen (from then on its live monitor is the state), and their partitions.
        self._state: dict[str, bytes] = {}
        self._partition: dict[str, int] = {}
        # Models changed since the last checkpoint, and sends not yet acknowledged.
        self._dirty: dict[str, int] = {}
        # Models whose signal gauges are stale: refreshed when /metrics is scraped.
        self._stale: set[str] = set()
        self._pending: list[asyncio.Future[Any]] = []
        # Rejects waiting for the next checkpoint (or DEAD_LETTER_BUFFER_BYTES) to be
        # published as one record batch per partition.
        self._rejects: list[Reject] = []
        self._reject_bytes = 0
        self._reject_log: dict[str, tuple[float, int]] = {}  # reason -> (logged at, since)
        processor.load_state = self._take_state
        s = settings
        self.inputs = [s.topic("interactions"), s.topic("feedback"), s.topic("model-updates")]
        self.consumer = BatchConsumer(
            settings=s, group_id=f"{s.app_id}-monitor", topics=self.inputs,
            handle=self.handle, on_assigned=self.assigned, on_revoked=self.revoked,
            checkpoint=self.checkpoint, commit_interval_s=s.commit_interval_s,
            max_records=s.batch_size, within_s=s.batch_within_s, metrics=metrics,
            name="monitor", loop=kwargs.get("loop"), beacon=self.beacon)

    async def on_start(self) -> None:
        # Thresholds are computed once per process (and configuration): do it before
        # the first model completes its warm-up, not in the middle of a batch.
        t0 = time.perf_counter()
        await asyncio.to_thread(prime_calibration, self.processor.config)
        for cfg in segment_configs(self.processor.segments, self.processor.config):
            await asyncio.to_thread(prime_calibration, cfg)  # the segments' shares too
        log.info("detector thresholds calibrated in %.1fs", time.perf_counter() - t0)
        tune_gc()
        self.producer = kafka_clients.producer(
            self.settings, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1 << 20,
            max_request_size=STATE_RECORD_MAX_BYTES + (64 << 10))
        await self.producer.start()
        await self.consumer.start()

    async def on_stop(self) -> None:
        await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def assigned(self, tps: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.inputs[0]}
        t0 = time.perf_counter()
        state = await read_state(self.settings, self.settings.topic("monitor-state"), parts)
        for model_id, (partition, blob) in state.items():
            self._state[model_id] = blob
            self._partition[model_id] = partition
        log.info("assigned partitions %s: restored %d model states in %.2fs",
                 sorted(parts), len(state), time.perf_counter() - t0)

    def _take_state(self, model_id: str) -> bytes | None:
        """A restored state record, handed over once to the processor that loads it."""
        self._partition.pop(model_id, None)
        return self._state.pop(model_id, None)

    async def revoked(self, tps: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.inputs[0]}
        self.processor.forget_partitions(parts)
        for model_id in [m for m, p in self._partition.items() if p in parts]:
            del self._state[model_id], self._partition[model_id]
        log.info("revoked partitions %s", sorted(parts))

    async def handle(self, records: list[RecordLike]) -> None:
        t0 = time.perf_counter()
        # Caught up (what is left fits in the next batch): no run needs to wait.
        drain = self.consumer.lag < self.settings.batch_size
        await self._emit(self.processor.process(records, drain=drain))
        self.metrics.processing_seconds.observe(time.perf_counter() - t0)

    async def _emit(self, result: BatchResult) -> None:
        assert self.producer is not None
        send = self.producer.send
        s = self.settings
        futures = self._pending
        rejects = result.rejects
        if rejects:
            self._log_rejects(rejects)
            self._reject_bytes += (sum(map(len, filter(None, map(_REJECT_VALUE, rejects))))
                                   + 200 * len(rejects))
            self._rejects += rejects
            if self._reject_bytes >= DEAD_LETTER_BUFFER_BYTES:
                await self._publish_dead_letters()
        for model_id, ev in result.drift_events:
            futures.append(await send(s.topic("drift-events"), orjson.dumps(ev),
                                      key=model_id.encode()))
            log.info("drift %s %s/%s on %s (severity %.2f)", ev["drift_id"], ev["kind"],
                     ev["signal"], model_id, ev["severity"])
        self._dirty.update(result.dirty)
        if self.on_deployed is not None:
            for (model_id, version), rec in zip(result.deployed, result.deploy_records,
                                                strict=True):
                try:
                    await self.on_deployed(model_id, version)
                except StoreUnavailable:
                    raise  # the store is down (retries exhausted): not this record's fault
                except StoreError as exc:
                    # Admitted, then refused where it lands: retrying cannot help, and a
                    # raise would stop the worker on this record at every start.
                    self._dead_letter([Reject(rec, "store_rejected", str(exc))])

    def _dead_letter(self, rejects: list[Reject]) -> None:
        """Queue rejects found after processing (published with the next checkpoint)."""
        self._log_rejects(rejects)
        count_rejects(self.metrics.invalid, rejects)
        self._reject_bytes += (sum(map(len, filter(None, map(_REJECT_VALUE, rejects))))
                               + 200 * len(rejects))
        self._rejects += rejects

    async def _publish_dead_letters(self) -> None:
        """Publish the waiting rejects, one record batch per partition of the dead-letter
        topic. One ``send()`` each cost ~25 us a reject (its coroutine, the producer's
        partition lookup, a future per message resolved on the acknowledgement and
        gathered at the checkpoint) -- a quarter of what 1% of bad input cost the
        worker; appending to a batch costs ~4 us. Batches go out at checkpoints, not
        per input batch: aiokafka's ``send_batch`` waits while the partition's previous
        batch is not drained, which would hold the stream up.

        A reject goes to the partition of its source record's number (modulo the
        topic's): a model's dead letters stay together and in order."""
        rejects, self._rejects, self._reject_bytes = self._rejects, [], 0
        if not rejects:
            return
        producer = self.producer
        assert producer is not None
        topic = self.settings.topic("dead-letters")
        parts = sorted(await producer.partitions_for(topic))
        batches: dict[int, Any] = {}
        for rej in rejects:
            rec = rej.record
            p = parts[rec.partition % len(parts)]
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            key, value, headers = dead_letter_record(rej)
            if batch.append(key=key, value=value, timestamp=None,
                            headers=headers) is None:  # full: send it, start the next
                self._pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        for p, batch in batches.items():
            self._pending.append(await producer.send_batch(batch, topic, partition=p))
        count_rejects(self.metrics.dead_letters, rejects)

    def _log_rejects(self, rejects: list[Reject]) -> None:
        """One warning per reason per ``REJECT_LOG_EVERY_S`` (with a count of the rest):
        every reject is in the dead-letter topic and the metrics, a flood of bad input
        should not also flood the log and slow the worker down. (Counted per batch: a
        loop over the rejects cost the worker more than the rest of their handling.)"""
        now = time.monotonic()
        for reason, n in Counter(map(REJECT_REASON, rejects)).items():
            since, hidden = self._reject_log.get(reason, (-REJECT_LOG_EVERY_S, 0))
            if now - since < REJECT_LOG_EVERY_S:
                self._reject_log[reason] = (since, hidden + n)
                continue
            self._reject_log[reason] = (now, n - 1)
            rej = next(r for r in rejects if r.reason == reason)
            more = f" ({hidden} more {reason} rejects before it, not logged)" if hidden else ""
            log.warning("rejected %s[%d]@%d: %s: %s%s", rej.record.topic, rej.record.partition,
                        rej.record.offset, reason, rej.message, more)

    async def checkpoint(self) -> asyncio.Future[Any] | None:
        """Publish the state of every model changed since the last checkpoint; returns
        what completes when the broker acknowledged it and every drift event and dead
        letter before it. Only then does the consumer commit the input offsets."""
        assert self.producer is not None
        await self._emit(self.processor.flush())
        await self._publish_dead_letters()
        state_topic = self.settings.topic("monitor-state")
        futures, self._pending = self._pending, []
        dirty, self._dirty = self._dirty, {}
        for model_id, partition in dirty.items():
            if model_id not in self.processor.models:
                continue  # its partition was revoked and flushed already
            for key, value in self.processor.state_records(model_id):
                futures.append(await self.producer.send(state_topic, value, key=key,
                                                        partition=partition))
        self._stale.update(dirty)
        return asyncio.gather(*futures) if futures else None

    def export_stats(self) -> None:
        """Bring the per-model gauges up to date; called by the /metrics view on each
        scrape. (Reading every model's detectors costs ~0.4 ms per model: once a scrape,
        every 15 s, rather than once a checkpoint, every second.)"""
        stale, self._stale = self._stale, set()
        _export_stats(self.metrics, self.processor, stale)
        phases: dict[str, int] = {"warmup": 0, "monitoring": 0}
        for st in self.processor.models.values():
            phases[st.monitor.phase] = phases.get(st.monitor.phase, 0) + 1
        for phase, n in phases.items():
            self.metrics.monitored_models.labels(phase).set(n)


# Container allocations between two young-generation collections (CPython: 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Set the cyclic collector up for batch processing, once start-up is done.

    Everything alive now (modules, the app, numba's compiler) lives as long as the
    process: frozen, it stays out of the collector's full passes, which otherwise walk it
    every time and pause the event loop for a tenth of a second or more.

    A batch keeps thousands of small containers alive until it is done (a tuple per
    record, the runs' lists). At CPython's 700 allocations per young collection, each of
    them is walked several times and promoted to the older generations, whose
    collections then walk them again. At 50,000, most die by reference count before a
    collection sees them. Processor replay, interleaved in one process: 4.97 -> 4.37 us
    a record clean, 5.47 -> 4.50 with 1% poison (whose exceptions leave reference cycles
    behind: 0.91 of the clean rate -> 0.97); 4.32 / 4.33 with the collector off.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def prime_calibration(config: MonitorConfig) -> None:
    """Compile the threshold kernels; run a throwaway monitor through one warm-up of
    every scalar signal."""
    kernels.compile_all()
    n = config.warmup + 1
    rng = np.random.default_rng(0)
    monitor = ModelMonitor("__calibration__", config)
    monitor.observe_columns(
        [str(i) for i in range(n)], np.arange(n, dtype=np.float64),
        latency_ms=rng.lognormal(6.0, 0.3, n), output_tokens=np.round(rng.lognormal(5.0, 0.5, n)),
        refusal=(rng.random(n) < 0.05).astype(np.float64),
        feedback=rng.choice([-1.0, 0.0, 1.0], n), correct=(rng.random(n) < 0.9).astype(np.float64))


def _export_stats(metrics: Metrics, processor: MonitorProcessor, models: Any) -> None:
    for model_id in models:
        st = processor.models.get(model_id)
        if st is None:
            continue
        for signal, s in st.monitor.stats().items():
            metrics.observe_signal(model_id, signal, statistic=s.statistic,
                                   threshold=s.threshold, baseline=s.baseline, current=s.current)
        export_segment_stats(metrics, model_id, st.monitor)
