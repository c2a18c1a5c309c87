"""What every stage reads of a Kafka record, and a record refused with its reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol


class RecordLike(Protocol):
    """What driftline reads of a Kafka record (aiokafka's ``ConsumerRecord`` fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Record:
    """One Kafka record as the processor needs it (tests and replays build these)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # broker/producer timestamp, seconds


@dataclass(slots=True)
class Reject:
    """A record refused, why (a reason of ``contract.REASONS``) and a message."""

    record: RecordLike
    reason: str
    message: str


REJECT_REASON = attrgetter("reason")
_REASON_TOPIC = attrgetter("reason", "record.topic")


def count_rejects(counter: Any, rejects: list[Reject]) -> None:
    """Add rejects to a counter labelled (reason, topic): one increment per reason and
    topic, not a ``labels()`` lookup per reject."""
    for (reason, topic), n in Counter(map(_REASON_TOPIC, rejects)).items():
        counter.labels(reason, topic).inc(n)
