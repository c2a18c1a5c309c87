"""Lean fetched records on the real broker: the same messages as stock aiokafka, cheaper."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from driftline.streams.ingest.leanfetch import LEAN_KEYS, LeanRecord

from tests.fixtures_kafka import produce

pytestmark = pytest.mark.kafka


async def _read(bootstrap: str, topic: str, n: int, lean: bool) -> list[Any]:
    kw: dict[str, Any] = {"key_deserializer": LEAN_KEYS} if lean else {}
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                # small fetches: many batches, several per getmany
                                max_partition_fetch_bytes=4096, **kw)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while len(out) < n and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=37)).values():
                out.extend(msgs)
    finally:
        await consumer.stop()
    return out


def _fields(r: Any) -> tuple[Any, ...]:
    return (r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)


def test_lean_consumer_reads_what_stock_aiokafka_reads(kafka_bootstrap, topic_prefix):
    topic = f"{topic_prefix}.lean"
    msgs: list[tuple[str, bytes | None, bytes | None]] = [
        (topic, f"m{i % 5}".encode(), f'{{"i":{i},"pad":"{"x" * (i % 300)}"}}'.encode())
        for i in range(1500)]
    msgs[7] = (topic, None, b"no key")
    msgs[11] = (topic, b"m1", None)  # a tombstone
    msgs[12] = (topic, b"m2", b"")
    produce(kafka_bootstrap, msgs)

    stock = asyncio.run(_read(kafka_bootstrap, topic, len(msgs), lean=False))
    lean = asyncio.run(_read(kafka_bootstrap, topic, len(msgs), lean=True))

    assert len(stock) == len(lean) == len(msgs)
    assert all(type(r) is ConsumerRecord for r in stock)
    # The hook is live: if an aiokafka upgrade bypassed it this fails (records would
    # still be right, only slower).
    assert all(type(r) is LeanRecord for r in lean)
    assert sorted(map(_fields, lean), key=lambda f: (f[1], f[2])) == \
        sorted(map(_fields, stock), key=lambda f: (f[1], f[2]))
    values = {r.value for r in lean}
    assert None in values and b"" in values and b"no key" in values
