"""Publish interactions, feedback and deploys to driftline; subscribe to its drift events.

    async with Publisher("host:9092", compression_type="zstd") as pub:
        await pub.interaction({"event_id": "...", "model_id": "chat", "ts": time.time()})

    async with Subscriber("host:9092", group_id="my-service") as sub:
        async for event in sub:
            print(event.model_id, event.kind, event.signal, event.severity)

A :class:`Publisher` checks every record against the event contract before it is sent
(raising :class:`InvalidEvent` with the contract's ``reason``), keys it by ``model_id``
(one model's stream stays in one partition, in order) and lets aiokafka batch and
compress. A :class:`Subscriber` is a consumer-group member reading drift events
``read_committed``, as typed, frozen :class:`DriftEvent` objects; a record that is not a
valid drift event is skipped and logged, never raised into your loop. Extra keyword
arguments of both go to aiokafka (``security_protocol``, ``sasl_mechanism``,
``ssl_context``, ...).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from driftline.streams.ingest.contract import (
    DriftEvent,
    InvalidEvent,
    parse_drift_event,
    parse_feedback,
    parse_interaction,
    parse_model_update,
)

__all__ = ["DriftEvent", "InvalidEvent", "Publisher", "Subscriber"]

log = logging.getLogger("driftline.client")


class Publisher:
    """An async producer of driftline's input topics (``<topic_prefix>.interactions``,
    ``.feedback``, ``.model-updates``)."""

    def __init__(self, bootstrap_servers: str, *, topic_prefix: str = "driftline",
                 compression_type: str | None = "zstd", linger_ms: int = 20,
                 max_payload_bytes: int = 64 * 1024, **kafka: Any) -> None:
        self.topic_prefix = topic_prefix
        self.max_payload_bytes = max_payload_bytes
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, compression_type=compression_type,
            linger_ms=linger_ms, acks="all", enable_idempotence=True, **kafka)

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> Publisher:
        """A publisher connected as driftline's own ``Settings`` say (their bootstrap
        servers, TLS and SASL, topic prefix)."""
        from driftline.streams.kafka_clients import connection_kwargs

        kw = connection_kwargs(settings)
        return cls(kw.pop("bootstrap_servers"), topic_prefix=settings.topic_prefix,
                   **kw, **options)

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        """Send what is waiting, then close."""
        await self._producer.stop()

    async def flush(self) -> None:
        await self._producer.flush()

    async def interaction(self, record: Mapping[str, Any]) -> None:
        """Validate and queue one interaction (sent in the next batch)."""
        await self._send("interactions", record, parse_interaction)

    async def feedback(self, record: Mapping[str, Any]) -> None:
        """Validate and queue a label or rating for an earlier interaction."""
        await self._send("feedback", record, parse_feedback)

    async def deployed(self, model_id: str, model_version: str, ts: float) -> None:
        """Announce that ``model_version`` of ``model_id`` is live (a fresh baseline)."""
        await self._send("model-updates", {"model_id": model_id, "model_version": model_version,
                                           "ts": ts, "kind": "deployed"}, parse_model_update)

    async def _send(self, topic: str, record: Mapping[str, Any], parse: Any) -> None:
        bad = _non_finite(record)
        if bad is not None:  # orjson would write it as null, silently
            raise InvalidEvent("non_finite", f"{bad} is not finite")
        try:
            value = orjson.dumps(record)
        except TypeError as exc:  # a type JSON has no form for
            raise InvalidEvent("bad_type", f"not JSON-serialisable: {exc}") from None
        parse(value, None, self.max_payload_bytes)  # raises InvalidEvent with the reason
        key = str(record["model_id"]).encode()
        await self._producer.send(f"{self.topic_prefix}.{topic}", value, key=key)


def _non_finite(value: Any, path: str = "record") -> str | None:
    """The path of a NaN or an infinity in ``value``, if there is one."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, float | Mapping | list | tuple):
                found = _non_finite(v, f"{k}" if path == "record" else f"{path}.{k}")
                if found:
                    return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


class Subscriber:
    """An async iterator of drift events from a consumer group (offsets committed as
    events are handed out; ``auto_offset_reset`` decides where a new group starts)."""

    def __init__(self, bootstrap_servers: str, *, group_id: str,
                 topic_prefix: str = "driftline", auto_offset_reset: str = "earliest",
                 **kafka: Any) -> None:
        self._consumer = AIOKafkaConsumer(
            f"{topic_prefix}.drift-events", bootstrap_servers=bootstrap_servers,
            group_id=group_id, isolation_level="read_committed",
            auto_offset_reset=auto_offset_reset, **kafka)
        self.skipped = 0  # records that were not valid drift events

    @classmethod
    def from_settings(cls, settings: Any, *, group_id: str, **options: Any) -> Subscriber:
        """A subscriber connected as driftline's own ``Settings`` say."""
        from driftline.streams.kafka_clients import connection_kwargs

        kw = connection_kwargs(settings)
        return cls(kw.pop("bootstrap_servers"), group_id=group_id,
                   topic_prefix=settings.topic_prefix, **kw, **options)

    async def __aenter__(self) -> Subscriber:
        await self._consumer.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._consumer.stop()

    def __aiter__(self) -> AsyncIterator[DriftEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[DriftEvent]:
        async for msg in self._consumer:
            try:
                yield parse_drift_event(msg.value, msg.key)
            except InvalidEvent as exc:
                self.skipped += 1
                log.warning("skipping %s[%d]@%d: not a drift event (%s: %s)", msg.topic,
                            msg.partition, msg.offset, exc.reason, exc.message)
