"""The monitor agent's logic, free of Faust: raw records in, drift events and rejects out.

Each model's state carries the offset of the last record applied to it, per source
topic. After a crash the source is re-read from the last committed offset while the
state may already be ahead of it (state is flushed before offsets are committed);
records at or below the stored offset are skipped, so each record changes a model's
state exactly once and a replayed detection gets the same ``drift_id``.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from detectors import Finding, InvalidValue, ModelMonitor, MonitorConfig
from streams.events import drift_event
from streams.fastpath import ModelIds, accepts
from streams.metrics import Metrics
from streams.schema import (
    InvalidEvent,
    parse_feedback,
    parse_interaction,
    parse_model_update,
)

log = logging.getLogger("driftline.monitor")

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
        min_run: int = 0,
        max_delay_s: float = 0.25,
    ) -> None:
        self.topics = (interactions_topic, feedback_topic, updates_topic)
        self.config = monitor_config
        self.metrics = metrics
        self.load_state = load_state
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self.models: dict[str, _ModelState] = {}
        self._ids = ModelIds()
        # Interactions admitted but not yet fed to their monitor. The detectors have a
        # fixed cost per call, so runs of at least ``min_run`` are fed at once; no run
        # waits longer than ``max_delay_s``; ``flush()`` feeds everything (checkpoints).
        self.min_run = min_run
        self.max_delay_s = max_delay_s
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._since: dict[str, float] = {}

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop cached monitors of partitions this worker no longer owns."""
        for model_id in [m for m, s in self.models.items() if s.partition in partitions]:
            del self.models[model_id]
            self._pending.pop(model_id, None)
            self._since.pop(model_id, None)

    def state_of(self, model_id: str) -> bytes:
        """The model's state record; it covers every record admitted so far."""
        if self._pending.get(model_id):
            raise RuntimeError("state_of() with interactions pending: flush() first")
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
        """Validate, apply and detect over one batch; nothing here touches Kafka."""
        out = BatchResult()
        interactions_t, feedback_t, updates_t = self.topics
        # Per model, in stream order: ("i", rec, doc, emb) interactions, ("f", rec, Feedback)
        # labels, ("u", rec, ModelUpdate) deploys.
        work: dict[str, list[tuple[Any, ...]]] = {}
        loads = orjson.loads
        limit = self.max_payload_bytes
        ids = self._ids
        for rec in records:
            try:
                if rec.key is None:
                    raise InvalidEvent("missing_field", "message has no key (model_id)")
                if rec.topic == interactions_t:
                    value = rec.value
                    doc: Any = None
                    if value is not None and len(value) <= limit:
                        try:
                            doc = loads(value)
                        except orjson.JSONDecodeError:
                            doc = None
                    if doc is not None and accepts(doc, value, rec.key, ids):  # type: ignore[arg-type]
                        model_id, emb = doc["model_id"], doc.get("embedding")
                    else:
                        it = parse_interaction(value, rec.key, limit)
                        model_id, emb = it.model_id, it.obs.embedding
                        # The columns read ``doc``: give it the validated epoch ``ts``
                        # (RFC 3339 in the raw document) -- the one field that differs.
                        doc = {**it.raw, "ts": it.obs.ts}
                    st = self._model(model_id, rec.partition)
                    if not self._fresh(st, rec):
                        continue
                    if emb is not None:
                        self._check_dim(st, doc.get("model_version"), len(emb))
                    work.setdefault(model_id, []).append(("i", rec, doc, emb))
                elif rec.topic == feedback_t:
                    fb = parse_feedback(rec.value, rec.key, limit)
                    st = self._model(fb.model_id, rec.partition)
                    if self._fresh(st, rec):
                        work.setdefault(fb.model_id, []).append(("f", rec, fb))
                elif rec.topic == updates_t:
                    up = parse_model_update(rec.value, rec.key, limit)
                    st = self._model(up.model_id, rec.partition)
                    if self._fresh(st, rec):
                        # Reset now: the new version's vectors later in this batch are
                        # checked against its own dimension, not the old version's.
                        st.dim = None
                        work.setdefault(up.model_id, []).append(("u", rec, up))
                else:  # pragma: no cover - the subscription is fixed
                    raise InvalidEvent("unknown_schema", f"unexpected topic {rec.topic}")
            except InvalidEvent as exc:
                self._reject(out, rec, exc.reason, exc.message)
        findings: list[tuple[str, Finding]] = []
        tick = time.monotonic()
        for model_id, items in work.items():
            st = self.models[model_id]
            out.dirty[model_id] = st.partition
            run = self._pending.pop(model_id, [])
            for item in items:
                if item[0] == "i":
                    if not run:
                        self._since[model_id] = tick
                    run.append(item)
                    continue
                findings += self._observe(model_id, st, run, out)
                run = []
                if item[0] == "f":
                    fb = item[2]
                    findings += [(model_id, f) for f in st.monitor.observe_label(
                        fb.event_id, fb.ts, correct=fb.correct, feedback=fb.feedback)]
                else:
                    st.monitor.deploy(item[2].model_version)
                    out.deployed.append((model_id, item[2].model_version))
            if run:
                self._pending[model_id] = run
        for model_id in list(self._pending):
            run = self._pending[model_id]
            if len(run) >= self.min_run or tick - self._since[model_id] >= self.max_delay_s:
                del self._pending[model_id]
                findings += self._observe(model_id, self.models[model_id], run, out)
        return self._publish(findings, out)

    def flush(self) -> BatchResult:
        """Feed every pending interaction to its monitor (before a checkpoint)."""
        out = BatchResult()
        findings: list[tuple[str, Finding]] = []
        pending, self._pending = self._pending, {}
        for model_id, run in pending.items():
            findings += self._observe(model_id, self.models[model_id], run, out)
        return self._publish(findings, out)

    def _publish(self, findings: list[tuple[str, Finding]], out: BatchResult) -> BatchResult:
        now = self.clock()
        for model_id, f in findings:
            ev = drift_event(model_id, f)
            out.drift_events.append((model_id, ev))
            self.metrics.drift_events.labels(
                self.metrics.model(model_id), f.kind, f.signal, f.detector).inc()
            self.metrics.detection_lag.observe(max(0.0, now - f.ts))
        return out

    def _reject(self, out: BatchResult, rec: Record, reason: str, message: str) -> None:
        out.rejects.append(Reject(rec, reason, message))
        self.metrics.invalid.labels(reason, rec.topic).inc()

    def _observe(self, model_id: str, st: _ModelState, run: list[tuple[Any, ...]],
                 out: BatchResult) -> list[tuple[str, Finding]]:
        """Feed a run of interactions to the model's monitor as columns."""
        if not run:
            return []
        emb_rows = [k for k, item in enumerate(run) if item[3] is not None]
        embeddings = None
        if emb_rows:
            embeddings = _matrix([run[k][3] for k in emb_rows])
            if embeddings is None:  # something odd in a vector: validate one by one
                return self._observe_slowly(model_id, st, run, out)
        docs = [item[2] for item in run]
        try:
            found = st.monitor.observe_columns(
                [d["event_id"] for d in docs],
                np.array([d["ts"] for d in docs], dtype=np.float64),
                latency_ms=_column(docs, "latency_ms"),
                output_tokens=_column(docs, "output_tokens"),
                refusal=_column(docs, "refusal"), feedback=_column(docs, "feedback"),
                correct=_column(docs, "correct"), embeddings=embeddings,
                embedding_rows=np.array(emb_rows, dtype=np.int64),
                model_version=next((d.get("model_version") for d in docs
                                    if d.get("model_version") is not None), None))
        except InvalidValue:
            # The monitor validates a batch before it changes state: find the culprit(s).
            return self._observe_slowly(model_id, st, run, out)
        except Exception:
            # A fault of the detectors, not of the input: the run may be half applied,
            # so neither retry it nor blame the records. Keep the worker alive.
            log.exception("monitor of %s failed on a run of %d interactions; skipped",
                          model_id, len(run))
            return []
        self.metrics.interactions.labels(self.metrics.model(model_id)).inc(len(run))
        self.metrics.event_age.observe(max(0.0, self.clock() - float(docs[-1]["ts"])))
        return [(model_id, f) for f in found]

    def _observe_slowly(self, model_id: str, st: _ModelState, run: list[tuple[Any, ...]],
                        out: BatchResult) -> list[tuple[str, Finding]]:
        found: list[tuple[str, Finding]] = []
        ok = 0
        for item in run:
            rec = item[1]
            try:
                it = parse_interaction(rec.value, rec.key, self.max_payload_bytes)
                found += [(model_id, f) for f in st.monitor.observe(it.obs)]
                ok += 1
            except InvalidEvent as exc:
                self._reject(out, rec, exc.reason, exc.message)
            except InvalidValue as exc:
                self._reject(out, rec, "bad_value", str(exc))
        self.metrics.interactions.labels(self.metrics.model(model_id)).inc(ok)
        return found


def _column(docs: list[dict[str, Any]], name: str) -> np.ndarray:
    """One signal as float64, NaN where absent (bools become 1.0/0.0)."""
    return np.array([d.get(name) for d in docs], dtype=np.float64)


def _matrix(vectors: list[Any]) -> np.ndarray | None:
    """Stack embedding vectors as float32 rows, or None if any is not plain numbers."""
    try:
        arr = np.array(vectors)
    except ValueError:  # ragged
        return None
    if arr.ndim != 2 or arr.dtype.kind not in "fi":
        return None
    with np.errstate(over="ignore"):
        arr32 = arr.astype(np.float32)
    if not np.isfinite(arr32).all():
        return None
    return arr32
