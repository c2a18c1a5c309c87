"""The batch consumer's commits on the real broker: never ahead of the checkpoint's output.

The periodic checkpoint returns what completes once its output is acknowledged; the
consumer goes on handling batches meanwhile and commits the offsets only after that.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from driftline.streams.config import Settings
from driftline.streams.ingest.consumer import BatchConsumer, CheckpointFailed

from tests.fixtures_kafka import _produce

pytestmark = pytest.mark.kafka


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return None if meta is None or meta.offset < 0 else int(meta.offset)


async def _until(cond: Any, what: str, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _consumer(bootstrap: str, topic: str, group: str, handled: list[Any],
                    checkpoint: Any) -> BatchConsumer:
    async def handle(records: list[Any]) -> None:
        handled.extend(records)

    bc = BatchConsumer(settings=Settings(kafka_bootstrap=bootstrap), group_id=group,
                       topics=[topic], handle=handle, checkpoint=checkpoint,
                       commit_interval_s=3600.0, within_s=0.05)
    await bc.start()
    return bc


async def test_commit_waits_for_the_checkpoint_output(kafka_bootstrap: str) -> None:
    topic, group = f"c{uuid.uuid4().hex[:10]}", f"g{uuid.uuid4().hex[:10]}"
    tp = TopicPartition(topic, 0)
    await _produce(kafka_bootstrap, [(topic, b"k", b"v%d" % i) for i in range(10)])
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handled: list[Any] = []
    seen_at_checkpoint: list[int] = []

    async def checkpoint() -> Any:
        if not handled:
            return None  # (the first join's revoke: nothing handled, nothing sent)
        seen_at_checkpoint.append(len(handled))
        return gate  # "sent, not acknowledged yet"

    bc = await _consumer(kafka_bootstrap, topic, group, handled, checkpoint)
    try:
        async def checkpointed() -> bool:
            return bool(seen_at_checkpoint) and seen_at_checkpoint[-1] == 10
        await _until(checkpointed, "a checkpoint after all 10 records")
        # The consumer is not held up: more records are handled while the gate is shut.
        await _produce(kafka_bootstrap, [(topic, b"k", b"w%d" % i) for i in range(5)])

        async def all_handled() -> bool:
            return len(handled) == 15
        await _until(all_handled, "the 5 records after the checkpoint")
        assert await _committed(kafka_bootstrap, group, tp) is None
        gate.set_result(None)  # acknowledged: now the offsets may go

        async def committed_10() -> bool:
            return (await _committed(kafka_bootstrap, group, tp) or 0) >= 10
        await _until(committed_10, "the commit after the acknowledgement")
    finally:
        if not gate.done():  # (a failed wait above: fail, do not hang in stop())
            gate.set_exception(RuntimeError("test failed before the acknowledgement"))
        await bc.stop()
    # stop() waited for the last checkpoint and committed everything handled.
    assert await _committed(kafka_bootstrap, group, tp) == 15
    assert [r.value for r in handled] == [b"v%d" % i for i in range(10)] + [
        b"w%d" % i for i in range(5)]


@pytest.mark.parametrize("how", ["acknowledgement", "send"])
async def test_failed_checkpoint_output_commits_nothing_then_or_at_stop(
        kafka_bootstrap: str, how: str) -> None:
    """A checkpoint's output fails: its acknowledgement, or the send itself (e.g. a state
    record too big for the producer). Nothing is committed -- nor later, when stop()
    checkpoints again: that checkpoint finds nothing left to send (the failed one had
    taken it), and committing its offsets would skip records whose state was lost."""
    topic, group = f"c{uuid.uuid4().hex[:10]}", f"g{uuid.uuid4().hex[:10]}"
    tp = TopicPartition(topic, 0)
    await _produce(kafka_bootstrap, [(topic, b"k", b"v%d" % i) for i in range(10)])
    handled: list[Any] = []
    fail: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    calls = 0

    async def checkpoint() -> Any:
        nonlocal calls
        if not handled:
            return None
        calls += 1
        if calls > 1:
            return None  # "nothing changed since": the lost output is not sent again
        if how == "send":
            raise RuntimeError("state topic unavailable")
        return fail

    bc = await _consumer(kafka_bootstrap, topic, group, handled, checkpoint)
    try:
        if how == "acknowledgement":
            async def all_handled() -> bool:
                return len(handled) == 10 and bc._in_flight is not None
            await _until(all_handled, "the records and a checkpoint in flight")
            fail.set_exception(RuntimeError("state topic unavailable"))
        # ("send": the checkpoint once caught up, after the 10 records, raises.)

        async def crashed() -> bool:  # the stream stops rather than commit past a loss
            return bc.crash_reason is not None
        await _until(crashed, "the consumer to stop on the failed checkpoint")
        assert len(handled) == 10
        assert "state topic unavailable" in str(bc.crash_reason)
        assert await _committed(kafka_bootstrap, group, tp) is None
    finally:
        await bc.stop()
    assert calls == 1  # stop() did not checkpoint again...
    assert await _committed(kafka_bootstrap, group, tp) is None  # ...nor commit


def test_an_empty_fetch_checkpoints_only_when_caught_up_or_due() -> None:
    """Behind, an empty fetch only means the next one is on its way: no checkpoint until
    the interval is up. Caught up, what was handled is made durable at once."""
    async def handle(records: list[Any]) -> None:
        pass

    bc = BatchConsumer(settings=Settings(kafka_bootstrap="127.0.0.1:9"), group_id="g",
                       topics=["t"], handle=handle, checkpoint=None, commit_interval_s=1.0)
    assert not bc.idle_checkpoint_due()  # nothing handled
    bc._uncommitted[TopicPartition("t", 0)] = 10
    bc._last_checkpoint = time.monotonic()
    bc.lag = 4000
    assert not bc.idle_checkpoint_due()
    bc.lag = 0
    assert bc.idle_checkpoint_due()
    bc.lag = 4000
    bc._last_checkpoint = time.monotonic() - 1.5
    assert bc.idle_checkpoint_due()


async def test_a_failed_assignment_callback_stops_the_consumer_before_any_record(
        kafka_bootstrap: str) -> None:
    """aiokafka logs and drops what a rebalance listener raises and goes on with the
    assignment; the consumer raises it instead (a state it could not restore is never
    replaced by a fresh one), handles nothing and commits nothing."""
    topic, group = f"c{uuid.uuid4().hex[:10]}", f"g{uuid.uuid4().hex[:10]}"
    await _produce(kafka_bootstrap, [(topic, b"k", b"v%d" % i) for i in range(10)])
    handled: list[Any] = []

    async def handle(records: list[Any]) -> None:
        handled.extend(records)

    async def assigned(tps: set[TopicPartition]) -> None:
        raise ValueError("unreadable state")

    bc = BatchConsumer(settings=Settings(kafka_bootstrap=kafka_bootstrap), group_id=group,
                       topics=[topic], handle=handle, on_assigned=assigned,
                       commit_interval_s=0.1, within_s=0.05)
    await bc.start()
    try:
        async def crashed() -> bool:
            return bc.crash_reason is not None
        await _until(crashed, "the consumer to stop on the failed assignment")
        assert isinstance(bc.crash_reason, CheckpointFailed)
        assert str(bc.crash_reason) == "batch: ValueError: unreadable state"
        assert handled == []
    finally:
        await bc.stop()
    assert await _committed(kafka_bootstrap, group, TopicPartition(topic, 0)) is None


async def test_a_stop_while_a_rebalance_waits_for_its_checkpoint_ends_and_commits(
        kafka_bootstrap: str) -> None:
    """A member joins while another stops. The stopping member's rebalance callback waits
    for the lock its stop holds for the checkpoint, and aiokafka's ``stop()`` waits for
    that callback: leaving the group under the lock never returns (the worker was
    killed after its grace). The stop must checkpoint, commit, and leave."""
    topic, group = f"c{uuid.uuid4().hex[:10]}", f"g{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, k) for k in range(2)]
    await _produce(kafka_bootstrap, [(topic, b"k%d" % (i % 7), b"v%d" % i) for i in range(40)])
    handled: list[Any] = []
    stopping = False
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def checkpoint() -> Any:
        if stopping:  # the stop's checkpoint: held until the rebalance waits for it
            await release
        return None

    bc = await _consumer(kafka_bootstrap, topic, group, handled, checkpoint)
    joiner = None
    try:
        async def all_handled() -> bool:
            return len(handled) == 40
        await _until(all_handled, "the 40 records")
        stopping = True
        stop = asyncio.ensure_future(bc.stop())

        async def stop_holds_the_lock() -> bool:
            return bc.lock.locked()
        await _until(stop_holds_the_lock, "the stop's checkpoint")
        joiner = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                                  enable_auto_commit=False,
                                  partition_assignment_strategy=(RangePartitionAssignor,))
        await joiner.start()
        joiner.subscribe([topic])  # its join makes the stopping member rebalance

        async def rebalance_waits() -> bool:
            return bc.rebalance_waiting > 0
        await _until(rebalance_waits, "the stopping member's revoke callback")
        release.set_result(None)
        await asyncio.wait_for(stop, 40)
        assert bc.rebalance_waiting == 0 and not bc.abandoned
    finally:
        if not release.done():
            release.set_result(None)
        if joiner is not None:
            await joiner.stop()
    committed = {tp.partition: await _committed(kafka_bootstrap, group, tp) for tp in tps}
    ends = {tp.partition: sum(1 for r in handled if r.partition == tp.partition)
            for tp in tps}
    assert committed == ends and sum(ends.values()) == 40, (committed, ends)
