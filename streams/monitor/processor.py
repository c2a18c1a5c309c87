"""The monitor's logic, free of Kafka: raw records in; drift events, rejects and the models
whose state changed out.

Routing: records of the three input topics go to the monitor of their model (the Kafka
key). Interactions are decoded a stretch at a time and grouped by model into runs
(:mod:`.runs`); labels and deploys are applied in stream order between a model's runs.

Each model's state carries the offset of the last record applied to it, per source topic
(:mod:`.state_codec`). After a crash the source is re-read from the last committed offset
while the state may already be ahead of it; records at or below the stored offset are
skipped, so each record changes a model's state once and a replayed detection gets the
same ``drift_id``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

import numpy as np
from driftline.detectors import Finding, InvalidValue, MonitorConfig, catalogue
from driftline.detectors.segmented import SegmentedMonitor, new_monitor
from driftline.detectors.segments import SegmentPlan, value_of
from driftline.streams.drift.events import drift_event
from driftline.streams.ingest.contract import (
    Feedback,
    InvalidEvent,
    ModelUpdate,
    parse_feedback,
    parse_interaction,
    parse_model_update,
)
from driftline.streams.ingest.decoder import BatchDecoder, FastInteraction
from driftline.streams.ingest.records import RecordLike, Reject, count_rejects
from driftline.streams.metrics import Metrics
from driftline.streams.monitor import segments as seg
from driftline.streams.monitor.admission import Admission
from driftline.streams.monitor.runs import EventIds, Grouper, Run, Slice
from driftline.streams.monitor.state_codec import (
    APART_BYTES,
    ModelState,
    checkpoint_records,
    decode_state,
    encode_state,
)

__all__ = ["BatchResult", "MonitorProcessor"]

log = logging.getLogger("driftline.monitor")

_TOPIC = attrgetter("topic")
_NOT_ADMITTED = ("model_not_admitted",
                 "a new model over the admission rate (DRIFTLINE_MODEL_ADMISSION_PER_S): "
                 "shed here, to be replayed once the flood is understood")


@dataclass(slots=True)
class BatchResult:
    """What a batch made: drift events to publish, rejects (dead letters), the models
    whose state changed (by partition) and the deploys applied, with their records."""

    drift_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    dirty: dict[str, int] = field(default_factory=dict)  # model_id -> partition
    deployed: list[tuple[str, str]] = field(default_factory=list)
    deploy_records: list[RecordLike] = field(default_factory=list)  # of ``deployed``


@dataclass(slots=True)
class Label:
    """A delayed label or rating, applied between a model's runs in stream order."""

    record: RecordLike
    feedback: Feedback


@dataclass(slots=True)
class Deploy:
    """A deploy notice: the model's monitor starts a fresh reference."""

    record: RecordLike
    update: ModelUpdate


WorkItem = Slice | Label | Deploy  # per model, in stream order, for one batch


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
        max_models: int = 0,
        admission: Admission | None = None,
    ) -> None:
        self.topics = (interactions_topic, feedback_topic, updates_topic)
        self.config = monitor_config
        self.metrics = metrics
        self.load_state = load_state
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self.models: dict[str, ModelState] = {}
        self._decoder = BatchDecoder(max_payload_bytes)
        self._grouper = Grouper()
        # What the monitor reads of an interaction, as the rows of a run's float64 matrix
        # (NaN where absent; bools as 1.0/0.0): the timestamp, then the catalogue's
        # columnar fields.
        self.fields = tuple(catalogue.columns())
        self._row = attrgetter("ts", *self.fields)
        self._unordered = False  # rejects of this batch not in stream order
        # Interactions admitted but not yet fed to their monitor. The detectors have a
        # fixed cost per call: while the consumer is behind, runs wait until they reach
        # ``min_run`` or for ``max_delay_s``; once it has caught up (``drain``), and at
        # checkpoints (``flush()``), every run is fed.
        self.min_run = min_run
        self.max_delay_s = max_delay_s
        self._pending: dict[str, Run] = {}
        self.processed = 0  # interactions fed to their monitor
        self.apart_bytes = apart_bytes
        self.segments = segments  # which models are segmented (streams/monitor/segments.py)
        # Bounds under a flood of model ids: at most ``max_models`` held (0: no cap; idle
        # ones are evicted at checkpoints, see ``evict_idle``) and new ones admitted at
        # ``admission``'s rate (None: all).
        self.max_models = max_models
        self.admission = admission
        self._batch = 0  # batches processed: when each model was last seen
        self._refused = 0  # models refused admission, as counted in the metrics

    # -- the models held ------------------------------------------------------------------

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop cached monitors of partitions this worker no longer owns."""
        for model_id in [m for m, s in self.models.items() if s.partition in partitions]:
            del self.models[model_id]
            self._pending.pop(model_id, None)

    def state_records(self, model_id: str) -> list[tuple[bytes, bytes | None]]:
        """The records that bring the state topic up to the model's state, in the order
        they must be written to its partition (:func:`.state_codec.checkpoint_records`);
        they cover every record admitted so far."""
        if self._pending.get(model_id):
            raise RuntimeError("state_records() with interactions pending: flush() first")
        return checkpoint_records(self.models[model_id], model_id, self.apart_bytes)

    def evict_idle(self) -> list[tuple[str, int, bytes]]:
        """Past ``max_models``: the models seen least recently, down to 90% of the cap,
        removed from memory and returned as ``(model_id, partition, self-contained state
        record)`` for the caller to keep (``load_state`` hands them back on return).

        Call at a checkpoint, after :meth:`state_records` of every changed model: an
        evicted model's state is then the one being checkpointed, so the state topic
        holds it whatever happens to the caller's copy."""
        if not self.max_models or len(self.models) <= self.max_models:
            return []
        if self._pending:
            raise RuntimeError("evict_idle() with interactions pending: flush() first")
        excess = len(self.models) - int(self.max_models * 0.9)
        oldest = sorted(self.models.items(), key=lambda kv: kv[1].touched)[:excess]
        out = []
        for model_id, st in oldest:
            out.append((model_id, st.partition, encode_state(st)))
            del self.models[model_id]
        self.metrics.models_evicted.inc(len(out))
        return out

    def _model(self, model_id: str, partition: int) -> ModelState | None:
        """The model's state: held, restored, or new -- or None: a new model refused
        admission."""
        st = self._known(model_id, partition)
        return st if st is not None else self._new(model_id, partition)

    def _known(self, model_id: str, partition: int) -> ModelState | None:
        """The model's state if held or restored (from the state topic or an eviction),
        else None."""
        st = self.models.get(model_id)
        if st is None:
            raw = self.load_state(model_id)
            if raw is None:
                return None
            st = self.models[model_id] = decode_state(raw, partition, self.segments)
        st.partition = partition
        st.touched = self._batch
        return st

    def _new(self, model_id: str, partition: int) -> ModelState | None:
        """A fresh state for a model never seen, or None when admission refuses it
        (refusals are counted in ``_publish``)."""
        if self.admission is not None and not self.admission.admit():
            return None
        plan = self.segments.for_model(model_id) if self.segments else None
        st = self.models[model_id] = ModelState(new_monitor(model_id, self.config, plan), {},
                                                partition, touched=self._batch)
        return st

    @staticmethod
    def _fresh(st: ModelState, rec: RecordLike) -> bool:
        """True when ``rec`` was not applied to this model's state yet."""
        if rec.offset <= st.offsets.get(rec.topic, -1):
            return False
        st.offsets[rec.topic] = rec.offset
        return True

    # -- a batch --------------------------------------------------------------------------

    def process(self, records: list[RecordLike], drain: bool = False) -> BatchResult:
        """Validate, apply and detect over one batch; nothing here touches Kafka.

        ``drain``: feed every pending run now (the consumer has caught up, so there is
        time for short runs and no reason to keep anyone waiting).
        """
        out = BatchResult()
        interactions_t = self.topics[0]
        tick = time.monotonic()
        self._batch += 1
        work: dict[str, list[WorkItem]] = {}
        for topic, group in groupby(records, _TOPIC):
            if topic == interactions_t:  # a stretch of interactions, decoded together
                self._route_interactions(list(group), work, out)
            else:
                for rec in group:
                    self._route_other(rec, topic, work, out)
        if self._unordered and len(out.rejects) > 1:  # back to stream order
            at = {id(r): i for i, r in enumerate(records)}
            out.rejects.sort(key=lambda rej: at[id(rej.record)])
        self._unordered = False
        findings: list[tuple[str, Finding]] = []
        for model_id, items in work.items():
            findings += self._apply(model_id, items, out, tick)
        for model_id in list(self._pending):
            run = self._pending[model_id]
            if drain or run.n >= self.min_run or tick - run.since >= self.max_delay_s:
                del self._pending[model_id]
                findings += self._observe(model_id, self.models[model_id], run, out)
        if drain:  # caught up: segments' waiting interactions too
            findings += self._flush_segments(out.dirty)
        return self._publish(findings, out)

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

    def _apply(self, model_id: str, items: list[WorkItem], out: BatchResult, tick: float
               ) -> list[tuple[str, Finding]]:
        """One model's work of a batch, in stream order: interactions join its run; a
        label or a deploy first feeds the run so far."""
        st = self.models[model_id]
        out.dirty[model_id] = st.partition
        findings: list[tuple[str, Finding]] = []
        run = self._pending.pop(model_id, None)
        for item in items:
            if isinstance(item, Slice):
                if run is None:
                    run = Run(tick)
                run.add(item)
                continue
            if run is not None:
                findings += self._observe(model_id, st, run, out)
                run = None
            if isinstance(item, Label):
                fb = item.feedback
                findings += [(model_id, f) for f in st.monitor.observe_label(
                    fb.event_id, fb.ts, correct=fb.correct, feedback=fb.feedback)]
            else:
                findings += [(model_id, f) for f in
                             st.monitor.deploy(item.update.model_version) or []]
                out.deployed.append((model_id, item.update.model_version))
                out.deploy_records.append(item.record)
        if run is not None:
            self._pending[model_id] = run
        return findings

    # -- routing --------------------------------------------------------------------------

    def _route_other(self, rec: RecordLike, topic: str, work: dict[str, list[WorkItem]],
                     out: BatchResult) -> None:
        """A label or a deploy notice, to its model's work."""
        _, feedback_t, updates_t = self.topics
        limit = self.max_payload_bytes
        try:
            if rec.key is None:
                raise InvalidEvent("missing_field", "message has no key (model_id)")
            if topic == feedback_t:
                fb = parse_feedback(rec.value, rec.key, limit)
                st = self._model(fb.model_id, rec.partition)
                if st is None:
                    self._reject(out, rec, *_NOT_ADMITTED)
                elif self._fresh(st, rec):
                    work.setdefault(fb.model_id, []).append(Label(rec, fb))
            elif topic == updates_t:
                up = parse_model_update(rec.value, rec.key, limit)
                st = self._model(up.model_id, rec.partition)
                if st is None:
                    self._reject(out, rec, *_NOT_ADMITTED)
                elif self._fresh(st, rec):
                    # Reset now: the new version's vectors later in this batch are
                    # checked against its own dimension, not the old version's.
                    st.dim = None
                    work.setdefault(up.model_id, []).append(Deploy(rec, up))
            else:  # pragma: no cover - the subscription is fixed
                raise InvalidEvent("unknown_schema", f"unexpected topic {rec.topic}")
        except InvalidEvent as exc:
            self._reject(out, rec, exc.reason, exc.message)

    def _route_interactions(self, seg: list[RecordLike], work: dict[str, list[WorkItem]],
                            out: BatchResult) -> None:
        """Decode a stretch of interactions and append each model's slice of it (its
        records' positions and columns) to its work, models in order of appearance."""
        its, ids, rejects = self._decoder.interactions([r.value for r in seg],
                                                       [r.key for r in seg])
        for rej in rejects:
            self._reject(out, seg[rej.position], rej.reason, rej.message)
        order, bounds = self._grouper.group(ids)
        # One row per interaction, sorted by model (rejected ones left out), transposed.
        cols = np.array(list(map(self._row, map(its.__getitem__, order.tolist()))),
                        dtype=np.float64).reshape(-1, 1 + len(self.fields)).T.copy()
        topic = seg[0].topic
        positions = order.tolist()

        def take(st: ModelState, model_id: str, start: int, end: int) -> None:
            idx = order[start:end]
            part = cols[:, start:end]
            done = st.offsets.get(topic, -1)
            if seg[positions[start]].offset <= done:  # applied before a crash: the state
                keep = [k for k, i in enumerate(idx.tolist()) if seg[i].offset > done]
                if not keep:  # already has them
                    return
                idx, part = idx[keep], part[:, keep]
            st.offsets[topic] = seg[idx[-1]].offset
            if self._decoder.vectors_seen:
                idx, part = self._check_dims(st, seg, its, idx, part, out)
            work.setdefault(model_id, []).append(Slice(seg, its, idx, part))

        unknown: list[tuple[int, int]] = []  # models never seen: (start, end)
        for start, end in bounds:
            model_id = ids[positions[start]]
            assert model_id is not None
            st = self._known(model_id, seg[positions[start]].partition)
            if st is None:
                unknown.append((start, end))
            else:
                take(st, model_id, start, end)
        if not unknown:
            return
        # New models take admission tokens busiest first: one with many records in the
        # stretch (a real model coming online) before ids seen once (a flood's).
        unknown.sort(key=lambda b: b[0] - b[1])
        shed: list[int] = []  # positions of records of models refused admission
        for start, end in unknown:
            model_id = ids[positions[start]]
            assert model_id is not None
            st = self._new(model_id, seg[positions[start]].partition)
            if st is None:  # over the admission rate: all its records shed
                shed += positions[start:end]
            else:
                take(st, model_id, start, end)
        if shed:
            out.rejects += [Reject(seg[i], *_NOT_ADMITTED) for i in shed]
            self._unordered = True

    def _check_dims(self, st: ModelState, seg: list[RecordLike], its: list[Any],
                    idx: np.ndarray, part: np.ndarray, out: BatchResult
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Drop (dead-letter) vectors whose size differs within a model version."""
        keep = []
        for k, i in enumerate(idx.tolist()):
            it = its[i]
            if it.embedding is not None:
                # A model's dimension is that of its first vector until a model update
                # resets it: a new version's vectors of another size, before its deploy
                # notice, are refused (the monitor still holds the old dimension).
                dim, version = len(it.embedding) // 4, it.model_version
                if st.dim is None:
                    st.dim = [version, dim]
                elif st.dim[1] != dim:
                    self._reject(out, seg[i], "embedding_dim_changed",
                                 f"embedding dimension {dim} (model version {version!r}); "
                                 f"this model's is {st.dim[1]} since version "
                                 f"{st.dim[0]!r}: a new dimension needs a model update")
                    self._unordered = True  # found after the records that follow it
                    continue
            keep.append(k)
        if len(keep) == idx.shape[0]:
            return idx, part
        return idx[keep], part[:, keep]

    @staticmethod
    def _reject(out: BatchResult, rec: RecordLike, reason: str, message: str) -> None:
        out.rejects.append(Reject(rec, reason, message))  # (counted in ``_publish``)

    # -- detection ------------------------------------------------------------------------

    def _publish(self, findings: list[tuple[str, Finding]], out: BatchResult) -> BatchResult:
        count_rejects(self.metrics.invalid, out.rejects)
        if self.admission is not None and self.admission.refused != self._refused:
            self.metrics.models_refused.inc(self.admission.refused - self._refused)
            self._refused = self.admission.refused
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

    def _observe(self, model_id: str, st: ModelState, run: Run,
                 out: BatchResult) -> list[tuple[str, Finding]]:
        """Feed a run of interactions to the model's monitor as columns."""
        n = run.n
        if not n:
            return []
        cols = run.columns()
        absent = np.isnan(cols).all(axis=1).tolist()
        signals = {name: cols[k + 1] for k, name in enumerate(self.fields)
                   if not absent[k + 1]}
        embeddings = None
        emb_rows: list[int] = []
        its: list[FastInteraction] | None = None
        if self._decoder.vectors_seen:
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
        ids: Sequence[str] = EventIds(run)
        extra: dict[str, Any] = {}
        if isinstance(st.monitor, SegmentedMonitor):  # each row's segment values too
            its = run.interactions() if its is None else its
            ids = [it.event_id for it in its]
            extra["segments"] = seg.segment_columns(st.monitor, its)
        try:
            found = st.monitor.observe_columns(
                ids, cols[0], embeddings=embeddings,
                embedding_rows=np.array(emb_rows, dtype=np.int64), model_version=version,
                **extra, **signals)
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

    def _observe_slowly(self, model_id: str, st: ModelState, run: Run,
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
        for signal_name, warning in st.monitor.new_warnings():
            log.warning("model %s: %s", model_id, warning)
            self.metrics.reference_warnings.labels(signal_name).inc()
        self.processed += ok
        return found


def _matrix(rows: list[bytes]) -> np.ndarray | None:
    """Stack packed float32 vectors as rows, or None if their sizes differ."""
    size = len(rows[0])
    if any(len(r) != size for r in rows):
        return None
    return np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), size // 4)
