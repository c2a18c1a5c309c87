"""The monitor agent's logic, free of Faust: raw records in, drift events and rejects out.

Each model's state carries the offset of the last record applied to it, per source
topic. After a crash the source is re-read from the last committed offset while the
state may already be ahead of it (state is flushed before offsets are committed);
records at or below the stored offset are skipped, so each record changes a model's
state exactly once and a replayed detection gets the same ``drift_id``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from detectors import Finding, ModelMonitor, MonitorConfig
from streams.events import drift_event
from streams.metrics import Metrics
from streams.schema import (
    InvalidEvent,
    parse_feedback,
    parse_interaction,
    parse_model_update,
)

STATE_VERSION = 1
_HEADER = struct.Struct("<BI")  # version, length of the JSON offsets header


@dataclass(slots=True)
class Record:
    """One Kafka record as the processor needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # broker/producer timestamp, seconds


@dataclass(slots=True)
class Reject:
    record: Record
    reason: str
    message: str


@dataclass(slots=True)
class BatchResult:
    drift_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    dirty: dict[str, int] = field(default_factory=dict)  # model_id -> partition
    interactions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deployed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _ModelState:
    monitor: ModelMonitor
    offsets: dict[str, int]
    partition: int
    dim: list[Any] | None = None  # [model_version, embedding dimension] once seen


def encode_state(st: _ModelState) -> bytes:
    """Versioned state record: header, offsets and embedding dimension as JSON, snapshot."""
    head = orjson.dumps({"o": st.offsets, "d": st.dim})
    return _HEADER.pack(STATE_VERSION, len(head)) + head + st.monitor.snapshot()


def decode_state(data: bytes, partition: int) -> _ModelState:
    if len(data) < _HEADER.size:
        raise ValueError("truncated monitor state record")
    version, n = _HEADER.unpack_from(data)
    if version != STATE_VERSION:
        raise ValueError(f"unsupported monitor state version {version}")
    head = orjson.loads(data[_HEADER.size:_HEADER.size + n])
    monitor = ModelMonitor.restore(data[_HEADER.size + n:])
    return _ModelState(monitor, head["o"], partition, head["d"])


class MonitorProcessor:
    """Routes records of the three input topics to per-model monitors."""

    def __init__(
        self,
        *,
        interactions_topic: str,
        feedback_topic: str,
        updates_topic: str,
        monitor_config: MonitorConfig,
        metrics: Metrics,
        load_state: Callable[[str], bytes | None] = lambda _m: None,
        max_payload_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = (interactions_topic, feedback_topic, updates_topic)
        self.config = monitor_config
        self.metrics = metrics
        self.load_state = load_state
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self.models: dict[str, _ModelState] = {}

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop cached monitors of partitions this worker no longer owns."""
        for model_id in [m for m, s in self.models.items() if s.partition in partitions]:
            del self.models[model_id]

    def state_of(self, model_id: str) -> bytes:
        return encode_state(self.models[model_id])

    def _model(self, model_id: str, partition: int) -> _ModelState:
        st = self.models.get(model_id)
        if st is None:
            raw = self.load_state(model_id)
            st = (decode_state(raw, partition) if raw is not None
                  else _ModelState(ModelMonitor(model_id, self.config), {}, partition))
            self.models[model_id] = st
        st.partition = partition
        return st

    def _fresh(self, st: _ModelState, rec: Record) -> bool:
        """True when ``rec`` was not applied to this model's state yet."""
        if rec.offset <= st.offsets.get(rec.topic, -1):
            return False
        st.offsets[rec.topic] = rec.offset
        return True

    @staticmethod
    def _check_dim(st: _ModelState, version: str | None, dim: int) -> None:
        if st.dim is None or st.dim[0] != version:
            st.dim = [version, dim]
        elif st.dim[1] != dim:
            raise InvalidEvent("embedding_dim_changed",
                               f"embedding dimension {dim}, model version {version!r} "
                               f"uses {st.dim[1]}")

    def process(self, records: list[Record]) -> BatchResult:
        out = BatchResult()
        interactions_t, feedback_t, updates_t = self.topics
        pending: dict[str, list[Any]] = {}
        findings: list[tuple[str, Finding]] = []

        def flush(model_id: str) -> None:
            batch = pending.pop(model_id, None)
            if batch:
                st = self.models[model_id]
                for f in st.monitor.observe_many(batch):
                    findings.append((model_id, f))
                self.metrics.interactions.labels(self.metrics.model(model_id)).inc(len(batch))

        for rec in records:
            try:
                if rec.key is None:
                    raise InvalidEvent("missing_field", "message has no key (model_id)")
                if rec.topic == interactions_t:
                    it = parse_interaction(rec.value, rec.key, self.max_payload_bytes)
                    st = self._model(it.model_id, rec.partition)
                    if not self._fresh(st, rec):
                        continue
                    if it.obs.embedding is not None:
                        self._check_dim(st, it.obs.model_version, it.obs.embedding.shape[0])
                    pending.setdefault(it.model_id, []).append(it.obs)
                    out.interactions.append((it.model_id, it.raw))
                    out.dirty[it.model_id] = rec.partition
                elif rec.topic == feedback_t:
                    fb = parse_feedback(rec.value, rec.key, self.max_payload_bytes)
                    st = self._model(fb.model_id, rec.partition)
                    if not self._fresh(st, rec):
                        continue
                    flush(fb.model_id)  # keep stream order within the model
                    for f in st.monitor.observe_label(fb.event_id, fb.ts, correct=fb.correct,
                                                      feedback=fb.feedback):
                        findings.append((fb.model_id, f))
                    out.dirty[fb.model_id] = rec.partition
                elif rec.topic == updates_t:
                    up = parse_model_update(rec.value, rec.key, self.max_payload_bytes)
                    st = self._model(up.model_id, rec.partition)
                    if not self._fresh(st, rec):
                        continue
                    flush(up.model_id)
                    st.monitor.deploy(up.model_version)
                    st.dim = None
                    out.deployed.append((up.model_id, up.model_version))
                    out.dirty[up.model_id] = rec.partition
                else:  # pragma: no cover - subscription is fixed
                    raise InvalidEvent("unknown_schema", f"unexpected topic {rec.topic}")
            except InvalidEvent as exc:
                out.rejects.append(Reject(rec, exc.reason, exc.message))
                self.metrics.invalid.labels(exc.reason, rec.topic).inc()
            except ValueError as exc:
                # A value the detectors refuse (e.g. an embedding dimension change).
                out.rejects.append(Reject(rec, "bad_value", str(exc)))
                self.metrics.invalid.labels("bad_value", rec.topic).inc()
        for model_id in list(pending):
            flush(model_id)
        now = self.clock()
        for model_id, f in findings:
            ev = drift_event(model_id, f)
            out.drift_events.append((model_id, ev))
            self.metrics.drift_events.labels(
                self.metrics.model(model_id), f.kind, f.signal, f.detector).inc()
            self.metrics.detection_lag.observe(max(0.0, now - f.ts))
        return out
