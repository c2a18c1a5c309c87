"""The monitor agent: interactions, feedback and deploys in; drift events and rejects out.

Per-model state lives in a compacted Kafka topic (``driftline.monitor-state``), keyed by
``model_id`` and written to the same partition number as the model's input records, so
whoever owns input partition *p* restores exactly state partition *p*. Order of work
per checkpoint: process → publish drift events and dead letters → their
acknowledgements → publish state → its acknowledgement → (the consumer) commit input
offsets. A crash before the commit replays the batch onto state that may already
contain it; the per-model offsets in the state skip those records, so every record
changes a model once and a re-emitted detection keeps its ``drift_id``. A failure
anywhere in that chain stops the worker (see ``ingest.consumer``): nothing after it is
committed, and the next owner starts from the last state that was whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from operator import attrgetter
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from driftline.detectors.priming import prime
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.ingest.consumer import BatchConsumer
from driftline.streams.ingest.dead_letters import dead_letter_record
from driftline.streams.ingest.records import REJECT_REASON, RecordLike, Reject, count_rejects
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.gauges import ModelGauges
from driftline.streams.monitor.processor import BatchResult, MonitorProcessor
from driftline.streams.monitor.restore import read_state
from driftline.streams.monitor.segments import segment_configs
from driftline.streams.monitor.spill import StateSpill
from driftline.streams.runtime import tune_gc
from driftline.streams.store.errors import StoreError, StoreUnavailable
from mode import Service

log = logging.getLogger("driftline.monitor")

_REJECT_VALUE = attrgetter("record.value")

REJECT_LOG_EVERY_S = 10.0
# Rejects wait for the next checkpoint to be published, or until they hold this much.
DEAD_LETTER_BUFFER_BYTES = 1 << 20
# A state record holds a model's warm-up values until the warm-up ends: two scalar signals
# of a 70,000-event warm-up are 1.1 MB, past the producer's and the broker's 1 MiB
# defaults. The state topic is created to take records up to this size, and the
# producer sends them (the default warm-up, 2,000, stays under 1 MB with embeddings).
STATE_RECORD_MAX_BYTES = 16 << 20


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
        # States of owned models not held in memory, on local disk: restored for the
        # assigned partitions until their model is first seen (from then on its live
        # monitor is the state), and idle models evicted past DRIFTLINE_MAX_MODELS.
        self.spill = StateSpill()  # (in TMPDIR: a cache of the topic for this process)
        metrics.models_spilled.set_function(lambda: float(len(self.spill)))
        # Models changed since the last checkpoint, and sends not yet acknowledged.
        self._dirty: dict[str, int] = {}
        # The per-model gauges, read from the monitors when /metrics is scraped.
        self.gauges = ModelGauges(processor, metrics)
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
        await asyncio.to_thread(prime, self.processor.config)
        for cfg in segment_configs(self.processor.segments, self.processor.config):
            await asyncio.to_thread(prime, cfg)  # the segments' shares too
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
        self.spill.close()

    async def assigned(self, tps: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.inputs[0]}
        t0 = time.perf_counter()
        before = len(self.spill)
        # Straight to disk: after a flood the topic may hold many more models than fit.
        await read_state(self.settings, self.settings.topic("monitor-state"), parts,
                         into=self.spill)
        log.info("assigned partitions %s: restored %d model states in %.2fs",
                 sorted(parts), len(self.spill) - before, time.perf_counter() - t0)

    def _take_state(self, model_id: str) -> bytes | None:
        """A restored or evicted state record, handed over once to the processor that
        loads it."""
        got = self.spill.take(model_id)
        return None if got is None else got[1]

    async def revoked(self, tps: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.inputs[0]}
        self.gauges.mark(m for m, st in self.processor.models.items() if st.partition in parts)
        self.processor.forget_partitions(parts)
        self.spill.drop_partitions(parts)
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
        topic: a ``send()`` per reject (its coroutine, the producer's partition lookup, a
        future per message) costs several times an append to a batch. Batches go out at
        checkpoints, not per input batch: aiokafka's ``send_batch`` waits while the
        partition's previous batch is not drained, which would hold the stream up.

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

    async def checkpoint(self) -> Awaitable[None] | None:
        """Take the state of every model changed since the last checkpoint; return what
        completes once it is acknowledged, and the consumer commits the input offsets
        after that.

        Strict acknowledgement order: the drift events and dead letters sent before this
        checkpoint are acknowledged first, and only then is the state sent. A state in
        the topic therefore never covers a record whose detection (or dead letter) the
        broker does not hold: if an output fails, no state or offset goes past it, the
        consumer stops (fail closed) and the next owner re-reads the records and
        publishes the detection again, with the same ``drift_id``. The state records
        are encoded now (the state as of these offsets), sent later."""
        assert self.producer is not None
        await self._emit(self.processor.flush())
        await self._publish_dead_letters()
        outputs, self._pending = self._pending, []
        dirty, self._dirty = self._dirty, {}
        states: list[tuple[bytes, bytes | None, int]] = []
        for model_id, partition in dirty.items():
            if model_id not in self.processor.models:
                continue  # its partition was revoked and flushed already
            states += [(key, value, partition)
                       for key, value in self.processor.state_records(model_id)]
        self.gauges.mark(dirty)
        # Past the cap, idle models leave memory now: their state is the one above (or
        # an earlier checkpoint's), and the spill hands it back when they return.
        evicted = self.processor.evict_idle()
        if evicted:
            self.spill.put_many(evicted)
            self.gauges.mark(model_id for model_id, _, _ in evicted)
        if not outputs and not states:
            return None
        return self._send_states_after(outputs, states)

    async def _send_states_after(self, outputs: list[asyncio.Future[Any]],
                                 states: list[tuple[bytes, bytes | None, int]]) -> None:
        """Wait for the outputs' acknowledgements (a failure raises: nothing sent), then
        send the state records in order and wait for theirs."""
        if outputs:
            await asyncio.gather(*outputs)
        producer = self.producer
        assert producer is not None
        topic = self.settings.topic("monitor-state")
        acks = [await producer.send(topic, value, key=key, partition=partition)
                for key, value, partition in states]
        if acks:
            await asyncio.gather(*acks)
