"""Batch consumption for the hot topics, straight from aiokafka, hosted by the Faust worker.

Faust delivers every record through its conductor, an ``Event`` and a stream iteration
(``wait_first`` on two awaitables per message): measured here at well over ten times
the cost of fetching and decoding the record. driftline's high-volume paths (the
monitor and the interaction logger) therefore run as services of the Faust app that own
a consumer-group member each: a batch is fetched with ``getmany``, handed over whole,
and its offsets are committed only after everything it produced was acknowledged by the
broker (at-least-once; deterministic ids make repeats harmless).
A rebalance waits for the batch in flight: the revoke callback takes the same lock and
checkpoints. Offsets are committed at checkpoints (every ``commit_interval_s``), after
the handler's ``checkpoint`` made its output durable, as Kafka Streams commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.ingest.leanfetch import LEAN_KEYS
from driftline.streams.ingest.records import RecordLike
from driftline.streams.metrics import Metrics
from mode import Service

log = logging.getLogger("driftline.consumer")

BatchHandler = Callable[[list[RecordLike]], Awaitable[None]]
PartitionsHook = Callable[[set[TopicPartition]], Awaitable[None]]
# A checkpoint starts making the handled batches' output durable and returns what to
# await for it (None: already durable); the offsets are committed once that completes.
Checkpoint = Callable[[], Awaitable[Awaitable[Any] | None]]


class CheckpointFailed(RuntimeError):
    """A checkpoint's output (or the state restore of an assignment) failed: this member
    stops rather than go on without committing or over state it could not read."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalance callbacks. aiokafka logs and drops what a listener raises (and goes on
    with the assignment), so a failure here is handed to the consumer, whose loop raises
    it: a partition whose state could not be restored is never processed afresh."""

    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        try:
            async with self.owner.locked_for_rebalance():  # the batch in flight first
                if not self.owner.abandoned:  # (a stop abandoned a batch: commit nothing)
                    await self.owner.checkpoint_now()  # state flushed, offsets committed
                if self.owner.on_revoked is not None:
                    await self.owner.on_revoked(set(revoked))
        except Exception as exc:
            self.owner.fail(exc)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        try:
            async with self.owner.locked_for_rebalance():
                self.owner.raise_if_failed()
                # A member that is stopping handles nothing more: no state to restore.
                if self.owner.on_assigned is not None and not self.owner.should_stop:
                    await self.owner.on_assigned(set(assigned))
        except Exception as exc:
            self.owner.fail(exc)


# How long a stop waits for the batch being handled before it abandons it, for its
# checkpoint, and for leaving the group (which finishes a rebalance in progress first).
# A step that runs out abandons what it was doing; nothing past it is committed.
STOP_GRACE_S = 5.0
STOP_CHECKPOINT_S = 15.0
STOP_LEAVE_S = 15.0


class BatchConsumer(Service):
    """One consumer-group member that hands whole batches to ``handle``.

    Offsets are committed at a checkpoint: every ``commit_interval_s``, on revoke and on
    stop. ``checkpoint`` (if given) runs first and sends everything the handled batches
    produced (e.g. state); the commit waits for the broker's acknowledgement of it, so it
    never runs ahead of it. The periodic checkpoint does not hold the stream up while it
    waits: the next batches are handled meanwhile, and a checkpoint first waits for the
    previous one's commit (one in flight, commits in order). Revoke and stop wait for all.
    """

    def __init__(self, *, settings: Settings, group_id: str, topics: list[str],
                 handle: BatchHandler, on_assigned: PartitionsHook | None = None,
                 on_revoked: PartitionsHook | None = None, checkpoint: Checkpoint | None = None,
                 commit_interval_s: float = 1.0, max_records: int = 5000,
                 within_s: float = 0.05, metrics: Metrics | None = None,
                 name: str = "batch", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings  # the connection (and its security) come from here
        self.group_id = group_id
        self.topics = topics
        self.handle = handle
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.checkpoint = checkpoint
        self.commit_interval_s = commit_interval_s
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_checkpoint = time.monotonic()
        self.max_records = max_records
        self.within_ms = max(1, int(within_s * 1000))
        self.metrics = metrics
        self.kind = name
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.batches = 0
        self.records = 0  # handed to ``handle``, good or bad, from every input topic
        # Records known to wait behind the batch being handled (high watermarks of its
        # partitions as of their last fetch): 0 when the consumer has caught up.
        self.lag = 0
        self._in_flight: asyncio.Future[None] | None = None  # the last checkpoint's commit
        # A checkpoint whose output failed (to be sent or acknowledged), or a rebalance
        # callback that raised: from then on nothing is committed, not even at stop or
        # revoke, and the loop raises it (the worker stops, /healthz says so). The output
        # it lost is not in any later checkpoint, which would otherwise commit offsets
        # past it; the next owner replays from the last good commit.
        self.failed: Exception | None = None
        self._handling: asyncio.Future[None] | None = None  # the batch being handled
        # A stop abandoned a batch or its checkpoint: nothing more is committed.
        self.abandoned = False
        self.rebalance_waiting = 0  # rebalance callbacks waiting for the lock

    async def on_start(self) -> None:
        self.consumer = kafka_clients.consumer(
            self.settings, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            # A transactional producer's aborted records (and those of transactions
            # still open) never reach a detector or the store.
            isolation_level="read_committed",
            # Range keeps equal partition numbers of co-partitioned topics together.
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
            # A batch is processed on the event loop: give heartbeats slack on busy hosts.
            # (A dead member's partitions wait this long before they move.)
            session_timeout_ms=15_000, heartbeat_interval_ms=3_000,
            client_id=f"{self.group_id}-{self.kind}",
            key_deserializer=LEAN_KEYS)  # LeanRecords, not ConsumerRecords (leanfetch)
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        """Finish or abandon the batch in flight, checkpoint, leave the group: each step
        within its deadline, so a stop always ends (a hung store or a rebalance that
        does not complete cannot keep the process alive until it is killed)."""
        if self.consumer is None:
            return
        handling = self._handling
        if handling is not None and not handling.done():
            # A batch still being handled (a store that does not answer retries for
            # ever) gets a grace period, then is abandoned: nothing more is committed,
            # and the next owner handles it again from the last commit.
            await asyncio.wait([handling], timeout=STOP_GRACE_S)
            if not handling.done():
                log.warning("%s: stopping with a batch unfinished after %.0f s; it is "
                            "not committed and will be handled again", self.kind,
                            STOP_GRACE_S)
                self.abandoned = True
                handling.cancel()
        try:
            async with self.lock:
                if self.failed is None and not self.abandoned:
                    try:
                        await asyncio.wait_for(self.checkpoint_now(), STOP_CHECKPOINT_S)
                    except TimeoutError:
                        self.abandoned = True
                        log.warning("%s: the checkpoint at stop did not finish within "
                                    "%.0f s; nothing more is committed, and the records "
                                    "since the last commit will be handled again",
                                    self.kind, STOP_CHECKPOINT_S)
        finally:
            # Not under the lock: leaving the group first completes a rebalance in
            # progress, whose callbacks take the lock.
            await self._leave_group(self.consumer)

    async def _leave_group(self, consumer: AIOKafkaConsumer) -> None:
        if self.rebalance_waiting:
            log.info("%s: leaving the group while a rebalance is in progress", self.kind)
        try:
            await asyncio.wait_for(consumer.stop(), STOP_LEAVE_S)
        except TimeoutError:
            log.warning("%s: did not leave the consumer group within %.0f s; its "
                        "partitions move to the other members when its session times "
                        "out", self.kind, STOP_LEAVE_S)

    @contextlib.asynccontextmanager
    async def locked_for_rebalance(self) -> AsyncIterator[None]:
        """The lock, for a rebalance callback (counted while it waits for it)."""
        self.rebalance_waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.rebalance_waiting -= 1
        try:
            yield
        finally:
            self.lock.release()

    def fail(self, exc: Exception) -> None:
        """Stop committing for good; the loop raises ``exc`` (the first failure kept)."""
        if self.failed is None:
            log.error("%s: stopping: %s: %s", self.kind, type(exc).__name__, exc)
            self.failed = exc

    def raise_if_failed(self) -> None:
        if self.failed is not None:
            raise CheckpointFailed(f"{self.kind}: {type(self.failed).__name__}: "
                                   f"{self.failed}") from self.failed

    async def checkpoint_now(self, wait: bool = True) -> None:
        """Make the handled batches durable, then commit their offsets (lock held).

        ``wait=False``: return once the output is sent; the commit follows its
        acknowledgement in the background (awaited by the next checkpoint).
        """
        self.raise_if_failed()
        try:
            await self.settle()
            durable = await self.checkpoint() if self.checkpoint is not None else None
        except Exception as exc:
            self.fail(exc)
            raise
        self._last_checkpoint = time.monotonic()
        offsets, self._uncommitted = self._uncommitted, {}
        if durable is None and not offsets:
            return
        commit = self._commit_after(durable, offsets)
        if wait:
            await commit
        else:
            self._in_flight = asyncio.ensure_future(commit)

    async def settle(self) -> None:
        """Wait for the commit in flight, if any; its failure is raised here."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def _commit_after(self, durable: Awaitable[Any] | None,
                            offsets: dict[TopicPartition, int]) -> None:
        if durable is not None:
            try:
                await durable  # a failed send raises: nothing is committed
            except Exception as exc:
                self.fail(exc)
                raise
        consumer = self.consumer
        if not offsets or consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group moved on while we worked; the new owner re-reads these records
            # and the per-model offsets in the state make that harmless.
            log.warning("%s: commit failed after a rebalance: %s", self.kind, exc)
            return
        self._export_lag(consumer, offsets)

    def idle_checkpoint_due(self) -> bool:
        """After an empty fetch: make what was handled durable now -- unless the consumer
        is behind and only waits for its next fetch. A checkpoint there would cut the
        detectors' runs short and write every state again (three times a second on
        384-d embeddings, a third of the worker's time); the interval still applies."""
        if not self._uncommitted:
            return False
        return (self.lag == 0 or
                time.monotonic() - self._last_checkpoint >= self.commit_interval_s)

    @Service.task
    async def _run(self) -> None:
        try:
            await self._consume()
        except Exception as exc:
            # The service crashes with it (mode stops the worker, which exits non-zero);
            # until then nothing more is committed and /healthz reports it.
            self.fail(exc)
            raise

    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop:
            self.raise_if_failed()
            fetched = await consumer.getmany(timeout_ms=self.within_ms,
                                             max_records=self.max_records)
            self.raise_if_failed()  # (a rebalance during the fetch may have failed)
            if self.should_stop:  # (fetched after the stop's checkpoint: not handled)
                return
            if self._in_flight is not None and self._in_flight.done():
                await self.settle()  # the last checkpoint's commit (raises if it failed)
            if not fetched:
                if self.idle_checkpoint_due():
                    async with self.lock:
                        await self.checkpoint_now(wait=False)
                continue
            async with self.lock:
                records: list[RecordLike] = []
                commit: dict[TopicPartition, int] = {}
                assigned = consumer.assignment()
                for tp, msgs in fetched.items():
                    if tp not in assigned:  # revoked while we waited for the lock
                        continue
                    records.extend(msgs)  # LeanRecords as they are
                    commit[tp] = msgs[-1].offset + 1
                if not records:
                    continue
                lag = 0
                for tp, end in commit.items():
                    high = consumer.highwater(tp)
                    if high is not None and high > end:
                        lag += high - end
                self.lag = lag
                self._handling = asyncio.ensure_future(self.handle(records))
                try:
                    await self._handling
                finally:
                    self._handling = None
                self.batches += 1
                self.records += len(records)
                self._uncommitted.update(commit)
                if time.monotonic() - self._last_checkpoint >= self.commit_interval_s:
                    await self.checkpoint_now(wait=False)

    def _export_lag(self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]
                    ) -> None:
        if self.metrics is None:
            return
        for tp, pos in positions.items():
            high = consumer.highwater(tp)
            if high is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - pos))
