"""Fetched records without aiokafka's per-message ``ConsumerRecord``.

aiokafka parses a fetched batch in C, then builds a ``ConsumerRecord`` dataclass per
message in Python: eleven fields, a size computation per key and value, the headers
copied into a tuple. For a 250-byte interaction that is about half of what a plain
``getmany`` + ``orjson.loads`` loop spends per record (``bench/throughput.py`` measures
that loop as the practical limit). The hot consumers need five of those fields.

A consumer opts in by passing :data:`LEAN_KEYS` as its ``key_deserializer``: its fetched
partitions then yield :class:`LeanRecord` structs (built in C by msgspec), everything
else of aiokafka's fetch path unchanged (CRC checks, control batches, aborted
transactions, positions). Every other consumer in the process (Faust's own, the state
reader) keeps stock ``ConsumerRecord`` objects. Should a future aiokafka construct its
partition records differently, the hook is simply not called: the marker is an identity
key deserializer and the consumer gets stock records (``tests/streams/test_leanfetch.py``
fails then, so the loss of speed does not go unnoticed).
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiokafka.consumer import fetcher as _fetcher


class LeanRecord(msgspec.Struct, gc=False):
    """What the processor reads of a Kafka record (see ``processor.RecordLike``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # milliseconds, as the broker or the producer set it


def _identity(key: bytes | None) -> bytes | None:
    return key


LEAN_KEYS = _identity  # key_deserializer of a consumer that wants LeanRecords

_STOCK = _fetcher.PartitionRecords


class LeanPartitionRecords(_STOCK):  # type: ignore[misc,valid-type]
    """aiokafka's partition records, one :class:`LeanRecord` per message."""

    def _consumer_record(self, tp: Any, record: Any) -> LeanRecord:
        return LeanRecord(tp.topic, tp.partition, record.offset, record.key, record.value,
                          record.timestamp)


def _partition_records(tp: Any, records: Any, aborted_transactions: Any, fetch_offset: int,
                       key_deserializer: Any, value_deserializer: Any, check_crcs: bool,
                       isolation_level: Any) -> Any:
    cls = LeanPartitionRecords if key_deserializer is LEAN_KEYS else _STOCK
    return cls(tp, records, aborted_transactions, fetch_offset, key_deserializer,
               value_deserializer, check_crcs, isolation_level)


def install() -> None:
    """Route fetched partitions through :func:`_partition_records` (idempotent)."""
    _fetcher.PartitionRecords = _partition_records  # type: ignore[assignment]


install()
