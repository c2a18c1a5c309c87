"""The monitor agent's logic, free of Faust: raw records in, drift events and rejects out.

Each model's state carries the offset of the last record applied to it, per source
topic. After a crash the source is re-read from the last committed offset while the
state may already be ahead of it (state is flushed before offsets are committed);
records at or below the stored offset are skipped, so each record changes a model's
state exactly once and a replayed detection gets the same ``drift_id``.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby, repeat
from operator import attrgetter
from typing import Any, Protocol

import numpy as np
import orjson
from driftline.detectors import Finding, InvalidValue, ModelMonitor, MonitorConfig, state
from driftline.detectors.segmented import SegmentedMonitor, new_monitor, restore_monitor
from driftline.detectors.segments import SegmentPlan, value_of
from driftline.streams.drift.events import drift_event
from driftline.streams.ingest.contract import (
    InvalidEvent,
    parse_feedback,
    parse_interaction,
    parse_model_update,
)
from driftline.streams.ingest.decoder import BatchDecoder, FastInteraction
from driftline.streams.metrics import Metrics
from driftline.streams.monitor import segments as seg

log = logging.getLogger("driftline.monitor")

_TOPIC = attrgetter("topic")
# What the monitor reads of an interaction, as the rows of a run's (6, n) float64 matrix
# (NaN where absent; bools as 1.0/0.0): timestamp, then the five scalar signals' inputs.
_COLUMNS = ("ts", "latency_ms", "output_tokens", "refusal", "feedback", "correct")
_ROW = attrgetter(*_COLUMNS)
# Stands in for a rejected record when a batch's columns are built (never read after).
_BLANK = FastInteraction(event_id="-", model_id="-", ts=0.0)
_CODE_MEMO = 100_000  # model ids kept with their batch-grouping codes
STATE_VERSION = 2  # 2: big arrays may live in records of their own (``state_records``)
_HEADER = struct.Struct("<BI")  # version, length of the JSON offsets header
# A snapshot array at least this big is by default stored in a record of its own, rewritten
# only when it changes: a model's reference (a sample of latencies, the embedding
# centroids) is most of its state and stays the same from the end of its warm-up to the
# next deploy. (A model with 384-d embeddings: ~2.4 KB a checkpoint, not its whole ~75 KB.)
APART_BYTES = 1024


class RecordLike(Protocol):
    """What the processor reads of a Kafka record (aiokafka's ``ConsumerRecord`` fits)."""

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
    record: RecordLike
    reason: str
    message: str


REJECT_REASON = attrgetter("reason")
_REASON_TOPIC = attrgetter("reason", "record.topic")


def count_rejects(counter: Any, rejects: list[Reject]) -> None:
    """Add rejects to a counter labelled (reason, topic): one increment per reason and
    topic, not a ``labels()`` lookup per reject (and the pairs counted in C)."""
    for (reason, topic), n in Counter(map(_REASON_TOPIC, rejects)).items():
        counter.labels(reason, topic).inc(n)


@dataclass(slots=True)
class BatchResult:
    drift_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    dirty: dict[str, int] = field(default_factory=dict)  # model_id -> partition
    deployed: list[tuple[str, str]] = field(default_factory=list)
    deploy_records: list[RecordLike] = field(default_factory=list)  # of ``deployed``


@dataclass
class _ModelState:
    monitor: ModelMonitor | SegmentedMonitor
    offsets: dict[str, int]
    partition: int
    dim: list[Any] | None = None  # [model_version, embedding dimension] once seen
    # Snapshot fields stored apart: name -> (generation, digest of the stored bytes);
    # the last generation used; digests of the big fields kept inline last time.
    blobs: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    generation: int = 0
    last: dict[str, bytes] = field(default_factory=dict)


def blob_key(model_id: str, name: str, generation: int) -> bytes:
    """The key of a snapshot field stored apart (model ids cannot contain NUL)."""
    return f"{model_id}\0{name}\0{generation}".encode()


def _digest(v: np.ndarray) -> bytes:
    """Of an array's dtype, shape and data, read in place (no copy of a warm-up buffer
    that changes at every checkpoint anyway)."""
    h = hashlib.blake2b(f"{v.dtype.str}{v.shape}".encode(), digest_size=16)
    h.update(np.ascontiguousarray(v).data)
    return h.digest()


def _record(head: dict[str, Any], fields: dict[str, state.Value]) -> bytes:
    raw = orjson.dumps(head)
    return _HEADER.pack(STATE_VERSION, len(raw)) + raw + state.encode(fields)


def _head(st: _ModelState, refs: dict[str, int]) -> dict[str, Any]:
    """A state record's header: offsets, embedding dimension, fields stored apart."""
    return {"o": st.offsets, "d": st.dim, "b": refs}


def encode_state(st: _ModelState) -> bytes:
    """A self-contained state record: header (offsets, embedding dimension, generations
    of the fields stored apart) as JSON, then the whole snapshot."""
    refs = {name: gen for name, (gen, _) in st.blobs.items()}
    return _record(_head(st, refs), st.monitor.snapshot_fields())


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < _HEADER.size:
        raise ValueError("truncated monitor state record")
    version, n = _HEADER.unpack_from(data)
    if version not in (1, STATE_VERSION):
        raise ValueError(f"unsupported monitor state version {version}")
    return orjson.loads(data[_HEADER.size:_HEADER.size + n]), data[_HEADER.size + n:]


def inline_state(data: bytes, model_id: str, blobs: Mapping[bytes, bytes]) -> bytes:
    """A state record with the fields it stores apart put back in (from ``blobs``, the
    state topic's latest value per key): what :func:`decode_state` reads."""
    head, snap = _split(data)
    refs = head.get("b") or {}
    if not refs:
        return data
    fields = state.decode(snap)
    for name, gen in refs.items():
        if name in fields:
            continue
        extra = blobs.get(blob_key(model_id, name, gen))
        if extra is None:
            raise ValueError(f"the state of {model_id} needs {name!r} generation {gen}, "
                             "which the state topic does not hold")
        fields.update(state.decode(extra))
    return _record(head, fields)


def decode_state(data: bytes, partition: int, segments: SegmentPlan | None = None
                 ) -> _ModelState:
    """Rebuild a model's state from a self-contained record (see :func:`inline_state`),
    segmented as ``segments`` now says."""
    head, snap = _split(data)
    fields = state.decode(snap)
    # The record was a checkpoint: an array that comes out the same at the next one is
    # stored apart then, stored apart already or not.
    digests = {name: _digest(v) for name, v in fields.items() if isinstance(v, np.ndarray)}
    model_id = fields.get("model_id")
    plan = segments.for_model(model_id) if segments and isinstance(model_id, str) else None
    st = _ModelState(restore_monitor(fields, plan), head["o"], partition, head["d"])
    refs = head.get("b") or {}
    st.blobs = {name: (gen, digests[name]) for name, gen in refs.items()}
    st.generation = max(refs.values(), default=0)
    st.last = {name: d for name, d in digests.items() if name not in refs}
    return st


class LatestStates:
    """Reads the state topic's records in log order, keeping only the latest per key (a
    topic not compacted yet holds every checkpoint); :meth:`result` puts each model's
    latest state together."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[int, bytes]] = {}
        self.blobs: dict[bytes, bytes] = {}

    def add(self, key: bytes | None, value: bytes | None, partition: int) -> None:
        if key is None:
            return
        if b"\0" in key:  # a field stored apart
            if value is None:
                self.blobs.pop(key, None)
            else:
                self.blobs[key] = value
            return
        model_id = key.decode()
        if value is None:  # a tombstone: the model's state was deleted
            self.states.pop(model_id, None)
        else:
            self.states[model_id] = (partition, value)

    def result(self) -> dict[str, tuple[int, bytes]]:
        """Each model's latest state, self-contained, and its partition. A state that
        needs a field the topic no longer holds is logged and left out: the model starts
        afresh rather than the worker failing on every start."""
        out: dict[str, tuple[int, bytes]] = {}
        for model_id, (partition, value) in self.states.items():
            try:
                out[model_id] = (partition, inline_state(value, model_id, self.blobs))
            except ValueError as exc:
                log.error("cannot restore the state of %s, starting it afresh: %s",
                          model_id, exc)
        return out


def latest_states(records: Iterable[tuple[bytes | None, bytes | None, int]]
                  ) -> dict[str, tuple[int, bytes]]:
    """Each model's latest state (see :class:`LatestStates`) from the state topic's
    records ``(key, value, partition)`` in log order."""
    latest = LatestStates()
    for key, value, partition in records:
        latest.add(key, value, partition)
    return latest.result()


class _Run:
    """A model's interactions waiting for its monitor, as slices of the decoded batches
    they came in: (records, decoded interactions, positions of this model's, its
    columns). The columns are cut once per batch, while it is in the CPU's cache, in a
    few C calls; transposing each run's interactions when it was fed cost ~1.2 µs a
    record (processor replay, 500,000 scalar interactions, the fastest of eight alternating
    runs each: 4.0 -> 2.9 µs a record)."""

    __slots__ = ("n", "parts")

    def __init__(self) -> None:
        self.parts: list[tuple[list[RecordLike], list[Any], np.ndarray, np.ndarray]] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, seg: list[RecordLike], its: list[Any], idx: np.ndarray,
            cols: np.ndarray) -> None:
        self.parts.append((seg, its, idx, cols))
        self.n += idx.shape[0]

    def records(self) -> list[RecordLike]:
        return [seg[i] for seg, _, idx, _ in self.parts for i in idx.tolist()]

    def interactions(self) -> list[FastInteraction]:
        return [its[i] for _, its, idx, _ in self.parts for i in idx.tolist()]

    def columns(self) -> np.ndarray:
        if len(self.parts) == 1:
            return self.parts[0][3]
        return np.concatenate([p[3] for p in self.parts], axis=1)


class _EventIds(Sequence[str]):
    """The event ids of a run, looked up only for the rows that raised an alarm."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def __len__(self) -> int:
        return self.run.n

    def __getitem__(self, row: Any) -> Any:
        if not isinstance(row, int) or not 0 <= row < self.run.n:
            raise IndexError(row)
        for _, its, idx, _ in self.run.parts:
            if row < idx.shape[0]:
                return its[int(idx[row])].event_id
            row -= idx.shape[0]
        raise IndexError(row)  # pragma: no cover - the bounds were checked


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
        apart_bytes: int = APART_BYTES,
        segments: SegmentPlan | None = None,
    ) -> None:
        self.topics = (interactions_topic, feedback_topic, updates_topic)
        self.config = monitor_config
        self.metrics = metrics
        self.load_state = load_state
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self.models: dict[str, _ModelState] = {}
        self._fast = BatchDecoder(max_payload_bytes)
        self._unordered = False  # rejects of this batch not in stream order
        # Interactions admitted but not yet fed to their monitor. The detectors have a
        # fixed cost per call: while the consumer is behind, runs wait until they reach
        # ``min_run`` or for ``max_delay_s``; once it has caught up (``drain``), and at
        # checkpoints (``flush()``), every run is fed.
        self.min_run = min_run
        self.max_delay_s = max_delay_s
        self._pending: dict[str, _Run] = {}
        self._codes: dict[str | None, int] = {None: -1}  # model id -> code (grouping)
        self._since: dict[str, float] = {}
        self.processed = 0  # interactions fed to their monitor
        self.apart_bytes = apart_bytes
        self.segments = segments  # which models are segmented (streams/monitor/segments.py)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop cached monitors of partitions this worker no longer owns."""
        for model_id in [m for m, s in self.models.items() if s.partition in partitions]:
            del self.models[model_id]
            self._pending.pop(model_id, None)
            self._since.pop(model_id, None)

    def state_of(self, model_id: str) -> bytes:
        """The model's state as one self-contained record; it covers every record
        admitted so far."""
        if self._pending.get(model_id):
            raise RuntimeError("state_of() with interactions pending: flush() first")
        return encode_state(self.models[model_id])

    def state_records(self, model_id: str) -> list[tuple[bytes, bytes | None]]:
        """The (key, value) records that bring the state topic up to the model's state,
        in the order they must be written to its partition: fields newly stored apart,
        the state record (keyed by the model id), then tombstones of the fields it no
        longer refers to. Written in that order, the latest state record in the topic
        always finds the fields it refers to, wherever a crash cuts the checkpoint.

        A big field goes apart once it came out the same at two checkpoints in a row (a
        reference, from the end of a warm-up to the next deploy); while it changes (a
        warm-up buffer filling) it stays in the state record."""
        if self._pending.get(model_id):
            raise RuntimeError("state_records() with interactions pending: flush() first")
        st = self.models[model_id]
        fields = st.monitor.snapshot_fields()
        new: list[tuple[bytes, bytes | None]] = []
        gone: list[tuple[bytes, bytes | None]] = []
        refs: dict[str, int] = {}
        changing: dict[str, bytes] = {}
        for name, v in fields.items():
            if not isinstance(v, np.ndarray) or v.nbytes < self.apart_bytes:
                continue
            digest = _digest(v)
            had = st.blobs.get(name)
            if had is not None and had[1] == digest:
                refs[name] = had[0]
            elif had is None and st.last.get(name) == digest:  # as at the last checkpoint
                st.generation += 1
                new.append((blob_key(model_id, name, st.generation), state.encode({name: v})))
                st.blobs[name] = (st.generation, digest)
                refs[name] = st.generation
            else:  # new or changed: in the state record
                changing[name] = digest
        # Fields stored apart that changed, shrank or went: in the state record (or
        # nowhere) from now on.
        for name in [n for n in st.blobs if n not in refs]:
            gone.append((blob_key(model_id, name, st.blobs.pop(name)[0]), None))
        st.last = changing
        inline = {n: v for n, v in fields.items() if n not in refs}
        return [*new, (model_id.encode(), _record(_head(st, refs), inline)), *gone]

    def _model(self, model_id: str, partition: int) -> _ModelState:
        st = self.models.get(model_id)
        if st is None:
            raw = self.load_state(model_id)
            plan = self.segments.for_model(model_id) if self.segments else None
            st = (decode_state(raw, partition, self.segments) if raw is not None
                  else _ModelState(new_monitor(model_id, self.config, plan), {}, partition))
            self.models[model_id] = st
        st.partition = partition
        return st

    def _fresh(self, st: _ModelState, rec: RecordLike) -> bool:
        """True when ``rec`` was not applied to this model's state yet."""
        if rec.offset <= st.offsets.get(rec.topic, -1):
            return False
        st.offsets[rec.topic] = rec.offset
        return True

    @staticmethod
    def _check_dim(st: _ModelState, version: str | None, dim: int) -> None:
        """A model's embedding dimension is that of its first vector until a model update
        resets it: a new version's vectors of another size, before its deploy notice,
        are ``embedding_dim_changed`` (the monitor still holds the old dimension)."""
        if st.dim is None:
            st.dim = [version, dim]
        elif st.dim[1] != dim:
            raise InvalidEvent("embedding_dim_changed",
                               f"embedding dimension {dim} (model version {version!r}); "
                               f"this model's is {st.dim[1]} since version {st.dim[0]!r}: "
                               "a new dimension needs a model update")

    def process(self, records: list[RecordLike], drain: bool = False) -> BatchResult:
        """Validate, apply and detect over one batch; nothing here touches Kafka.

        ``drain``: feed every pending run now (the consumer has caught up, so there is
        time for short runs and no reason to keep anyone waiting).
        """
        out = BatchResult()
        interactions_t = self.topics[0]
        # Per model, in stream order: ("i", records, FastInteractions, positions, columns)
        # slices of interaction batches, ("f", rec, Feedback) labels, ("u", rec,
        # ModelUpdate) deploys.
        work: dict[str, list[tuple[Any, ...]]] = {}
        for topic, group in groupby(records, _TOPIC):
            if topic == interactions_t:  # a stretch of interactions, decoded together
                self._interactions(list(group), work, out)
            else:
                for rec in group:
                    self._other(rec, topic, work, out)
        if self._unordered and len(out.rejects) > 1:  # back to stream order
            at = {id(r): i for i, r in enumerate(records)}
            out.rejects.sort(key=lambda rej: at[id(rej.record)])
        self._unordered = False
        findings: list[tuple[str, Finding]] = []
        tick = time.monotonic()
        pending = self._pending
        for model_id, items in work.items():
            st = self.models[model_id]
            out.dirty[model_id] = st.partition
            run = pending.pop(model_id, None)
            for item in items:
                if item[0] == "i":
                    if run is None:
                        run = _Run()
                        self._since[model_id] = tick
                    run.add(*item[1:])
                    continue
                if run is not None:
                    findings += self._observe(model_id, st, run, out)
                    run = None
                if item[0] == "f":
                    fb = item[2]
                    findings += [(model_id, f) for f in st.monitor.observe_label(
                        fb.event_id, fb.ts, correct=fb.correct, feedback=fb.feedback)]
                else:
                    findings += [(model_id, f) for f in
                                 st.monitor.deploy(item[2].model_version) or []]
                    out.deployed.append((model_id, item[2].model_version))
                    out.deploy_records.append(item[1])
            if run is not None:
                pending[model_id] = run
        for model_id in list(pending):
            run = pending[model_id]
            if (drain or run.n >= self.min_run
                    or tick - self._since[model_id] >= self.max_delay_s):
                del pending[model_id]
                findings += self._observe(model_id, self.models[model_id], run, out)
        if drain:  # caught up: segments' waiting interactions too
            findings += self._flush_segments(out.dirty)
        return self._publish(findings, out)

    def _other(self, rec: RecordLike, topic: str, work: dict[str, list[tuple[Any, ...]]],
               out: BatchResult) -> None:
        """A label or a deploy notice."""
        _, feedback_t, updates_t = self.topics
        limit = self.max_payload_bytes
        try:
            if rec.key is None:
                raise InvalidEvent("missing_field", "message has no key (model_id)")
            if topic == feedback_t:
                fb = parse_feedback(rec.value, rec.key, limit)
                st = self._model(fb.model_id, rec.partition)
                if self._fresh(st, rec):
                    work.setdefault(fb.model_id, []).append(("f", rec, fb))
            elif topic == updates_t:
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

    def _interactions(self, seg: list[RecordLike], work: dict[str, list[tuple[Any, ...]]],
                      out: BatchResult) -> None:
        """Decode a stretch of interactions and append each model's slice of it (its
        records' positions and columns) to its work, models in order of appearance."""
        its, ids, rejects = self._fast.interactions([r.value for r in seg],
                                                    [r.key for r in seg])
        for rej in rejects:
            self._reject(out, seg[rej.position], rej.reason, rej.message)
        n = len(seg)
        # Group by model in C: a code per model id, a stable sort, the cuts.
        codes = self._codes
        if len(codes) > _CODE_MEMO:
            codes.clear()
            codes[None] = -1
        code = np.fromiter(map(codes.get, ids, repeat(-2)), dtype=np.int64, count=n)
        for i in np.flatnonzero(code == -2).tolist():  # model ids new to the memo
            code[i] = codes.setdefault(ids[i], len(codes))
        order = np.argsort(code, kind="stable")
        code = code[order]
        starts = np.flatnonzero(code[1:] != code[:-1]) + 1
        bounds = list(zip([0, *starts.tolist()], [*starts.tolist(), n], strict=True))
        if len(bounds) > 1:  # models in order of their first record (stable: order[start])
            bounds.sort(key=lambda se: int(order[se[0]]))
        rows: list[Any] = its
        if rejects:
            rows = list(its)
            for rej in rejects:
                rows[rej.position] = _BLANK
        cols = np.array(list(map(_ROW, rows)), dtype=np.float64)[order].T.copy()
        topic = seg[0].topic
        vectors = self._fast.vectors_seen
        for start, end in bounds:
            if code[start] == -1:  # rejected records
                continue
            idx = order[start:end]
            part = cols[:, start:end]
            first = seg[idx[0]]
            model_id = ids[idx[0]]
            assert model_id is not None
            st = self._model(model_id, first.partition)
            done = st.offsets.get(topic, -1)
            if first.offset <= done:  # applied before a crash: the state already has them
                keep = [k for k, i in enumerate(idx.tolist()) if seg[i].offset > done]
                if not keep:
                    continue
                idx, part = idx[keep], part[:, keep]
            st.offsets[topic] = seg[idx[-1]].offset
            if vectors:
                idx, part = self._check_dims(st, seg, its, idx, part, out)
            work.setdefault(model_id, []).append(("i", seg, its, idx, part))

    def _check_dims(self, st: _ModelState, seg: list[RecordLike], its: list[Any],
                    idx: np.ndarray, part: np.ndarray, out: BatchResult
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Drop (dead-letter) vectors whose size differs within a model version."""
        keep = []
        for k, i in enumerate(idx.tolist()):
            it = its[i]
            try:
                if it.embedding is not None:
                    self._check_dim(st, it.model_version, len(it.embedding) // 4)
            except InvalidEvent as exc:
                self._reject(out, seg[i], exc.reason, exc.message)
                self._unordered = True  # found after the records that follow it
                continue
            keep.append(k)
        if len(keep) == idx.shape[0]:
            return idx, part
        return idx[keep], part[:, keep]

    def flush(self) -> BatchResult:
        """Feed every pending interaction to its monitor (before a checkpoint)."""
        out = BatchResult()
        findings: list[tuple[str, Finding]] = []
        pending, self._pending = self._pending, {}
        for model_id, run in pending.items():
            findings += self._observe(model_id, self.models[model_id], run, out)
        findings += self._flush_segments(self.models)
        return self._publish(findings, out)

    def _flush_segments(self, model_ids: Iterable[str]) -> list[tuple[str, Finding]]:
        """Feed segmented models' waiting segment interactions."""
        out: list[tuple[str, Finding]] = []
        for model_id in model_ids:
            st = self.models.get(model_id)
            if st is not None and isinstance(st.monitor, SegmentedMonitor):
                out += [(model_id, f) for f in st.monitor.flush()]
        return out

    def _publish(self, findings: list[tuple[str, Finding]], out: BatchResult) -> BatchResult:
        count_rejects(self.metrics.invalid, out.rejects)
        now = self.clock()
        for model_id, f in findings:
            ev = drift_event(model_id, f)
            out.drift_events.append((model_id, ev))
            if f.segment:
                seg.count_finding(self.metrics, model_id, f)
            else:
                self.metrics.drift_events.labels(
                    self.metrics.model(model_id), f.kind, f.signal, f.detector).inc()
            self.metrics.detection_lag.observe(max(0.0, now - f.ts))
        return out

    @staticmethod
    def _reject(out: BatchResult, rec: RecordLike, reason: str, message: str) -> None:
        out.rejects.append(Reject(rec, reason, message))  # (counted in ``_publish``)

    def _observe(self, model_id: str, st: _ModelState, run: _Run,
                 out: BatchResult) -> list[tuple[str, Finding]]:
        """Feed a run of interactions to the model's monitor as columns."""
        n = run.n
        if not n:
            return []
        cols = run.columns()
        absent = np.isnan(cols).all(axis=1).tolist()
        signal = [None if absent[k] else cols[k] for k in range(len(_COLUMNS))]
        embeddings = None
        emb_rows: list[int] = []
        its: list[FastInteraction] | None = None
        if self._fast.vectors_seen:
            its = run.interactions()
            emb_rows = [k for k, it in enumerate(its) if it.embedding is not None]
            if emb_rows:
                embeddings = _matrix([its[k].embedding for k in emb_rows])  # type: ignore[misc]
                if embeddings is None:  # vectors of two sizes (two versions): one by one
                    return self._observe_slowly(model_id, st, run, out)
        version = None
        if st.monitor.model_version is None:  # (the monitor keeps the first one it sees)
            its = run.interactions() if its is None else its
            version = next((it.model_version for it in its if it.model_version is not None),
                           None)
        ids: Sequence[str] = _EventIds(run)
        extra: dict[str, Any] = {}
        if isinstance(st.monitor, SegmentedMonitor):  # each row's segment values too
            its = run.interactions() if its is None else its
            ids = [it.event_id for it in its]
            extra["segments"] = seg.segment_columns(st.monitor, its)
        try:
            found = st.monitor.observe_columns(
                ids, cols[0], latency_ms=signal[1], output_tokens=signal[2],
                refusal=signal[3], feedback=signal[4], correct=signal[5],
                embeddings=embeddings, embedding_rows=np.array(emb_rows, dtype=np.int64),
                model_version=version, **extra)
        except InvalidValue:
            # The monitor validates a batch before it changes state: find the culprit(s).
            return self._observe_slowly(model_id, st, run, out)
        except Exception:
            # A fault of the detectors, not of the input: the run may be half applied,
            # so neither retry it nor blame the records. Keep the worker alive.
            log.exception("monitor of %s failed on a run of %d interactions; skipped",
                          model_id, n)
            return []
        self.metrics.interactions.labels(self.metrics.model(model_id)).inc(n)
        seg.count_routed(self.metrics, model_id, st.monitor)
        for signal_name, warning in st.monitor.new_warnings():
            log.warning("model %s: %s", model_id, warning)
            self.metrics.reference_warnings.labels(signal_name).inc()
        self.processed += n
        self.metrics.event_age.observe(max(0.0, self.clock() - float(cols[0, -1])))
        return [(model_id, f) for f in found]

    def _observe_slowly(self, model_id: str, st: _ModelState, run: _Run,
                        out: BatchResult) -> list[tuple[str, Finding]]:
        found: list[tuple[str, Finding]] = []
        ok = 0
        for rec in run.records():
            try:
                it = parse_interaction(rec.value, rec.key, self.max_payload_bytes)
                if isinstance(st.monitor, SegmentedMonitor):
                    meta = it.raw.get("metadata")
                    values = {k: value_of(it.obs.model_version, meta, k)
                              for k in st.monitor.segments.keys}
                    found += [(model_id, f) for f in st.monitor.observe(it.obs, values)]
                else:
                    found += [(model_id, f) for f in st.monitor.observe(it.obs)]
                ok += 1
            except InvalidEvent as exc:
                self._reject(out, rec, exc.reason, exc.message)
            except InvalidValue as exc:
                self._reject(out, rec, "bad_value", str(exc))
        self.metrics.interactions.labels(self.metrics.model(model_id)).inc(ok)
        seg.count_routed(self.metrics, model_id, st.monitor)
        self.processed += ok
        return found


def _matrix(rows: list[bytes]) -> np.ndarray | None:
    """Stack packed float32 vectors as rows, or None if their sizes differ."""
    size = len(rows[0])
    if any(len(r) != size for r in rows):
        return None
    return np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), size // 4)
