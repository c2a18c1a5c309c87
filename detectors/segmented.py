"""A segmented model monitor: the model-level monitor and one per segment, budget shared.

:class:`SegmentedMonitor` watches one model as :class:`~driftline.detectors.ModelMonitor`
does (same methods, same model-level findings) and, per key of its
:class:`~driftline.detectors.segments.SegmentConfig`, a monitor of its own for each busy
value and one for the rest (``other``), each with its own reference and detectors. The
false-alarm budget is split as :mod:`driftline.detectors.segments` states.

Its findings say where and what: a segment's carry ``segment`` (``(("metadata.tenant",
"acme"),)``); a model-level one carries ``attribution``, the segments that moved its
statistic most with their share (:mod:`driftline.detectors.attribution`); an embedding
alarm at either level names the nearest reference centroid, how many interactions fell
outside every centroid and an exemplar ``event_id`` (``explanation``).

A segment's monitor is fed its interactions ``feed_rows`` at a time (each feed has a fixed
cost); :meth:`flush` feeds what waits. A segment's findings therefore come out up to that
much later in the stream than the model's, with the same trigger event and the same
values: the detections do not depend on how the stream is cut. Memory is bounded by
``keys x (max_values + 1)`` monitors, :meth:`SegmentConfig.table_size` counted values per key
and :data:`MAX_WAITING_ROWS` waiting interactions (:meth:`memory` counts them).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from driftline.detectors import attribution, catalogue, state
from driftline.detectors.embedding import EmbeddingSignal
from driftline.detectors.monitor import ModelMonitor, MonitorConfig
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.segments import OTHER, SegmentConfig, ValueTable
from driftline.detectors.types import Finding, InvalidValue, Observation, SignalStats

log = logging.getLogger("driftline.detectors")

MAX_WAITING_ROWS = 16_384  # interactions waiting for their segments' monitors, per model
MAX_WAITING_BYTES = 8 << 20  # of which vectors


@dataclasses.dataclass
class _Piece:
    """A segment's share of one batch, waiting to be fed."""

    ids: list[str]
    ts: np.ndarray
    fields: dict[str, np.ndarray]
    embeddings: np.ndarray | None
    embedding_rows: np.ndarray
    interactions: int


class _Segment:
    """One segment's monitor and the interactions waiting for it."""

    def __init__(self, key: str, value: str, monitor: ModelMonitor) -> None:
        self.key = key
        self.value = value
        self.monitor = monitor
        self.waiting: list[_Piece] = []
        self.rows = 0
        self.vector_bytes = 0

    @property
    def label(self) -> tuple[tuple[str, str], ...]:
        return ((self.key, self.value),)

    def add(self, piece: _Piece) -> None:
        self.waiting.append(piece)
        self.rows += len(piece.ids)
        if piece.embeddings is not None:
            self.vector_bytes += piece.embeddings.nbytes

    def feed(self) -> list[Finding]:
        """Feed what waits, as one batch; findings carry the segment."""
        if not self.waiting:
            return []
        ps, self.waiting, self.rows, self.vector_bytes = self.waiting, [], 0, 0
        base = np.cumsum([0] + [len(p.ids) for p in ps])
        ids = [i for p in ps for i in p.ids]
        names = {n for p in ps for n in p.fields}
        fields: dict[str, Any] = {n: np.concatenate([p.fields.get(n, np.full(len(p.ids), np.nan))
                                     for p in ps]) for n in names}
        with_vec = [(p, b) for p, b in zip(ps, base.tolist(), strict=False)
                    if p.embeddings is not None]
        emb = np.concatenate([p.embeddings for p, _ in with_vec]) if with_vec else None
        emb_rows = (np.concatenate([p.embedding_rows + b for p, b in with_vec])
                    if with_vec else np.zeros(0, dtype=np.int64))
        found = self.monitor.observe_columns(
            ids, np.concatenate([p.ts for p in ps]), embeddings=emb, embedding_rows=emb_rows,
            interactions=sum(p.interactions for p in ps), **fields)
        return [dataclasses.replace(f, segment=self.label) for f in found]


class _Key:
    """A segment key: its value table, its monitored values and ``other``."""

    def __init__(self, key: str, owner: SegmentedMonitor) -> None:
        self.key = key
        self.owner = owner
        cfg = owner.segments
        self.table = ValueTable(cfg.table_size())
        self.slots: list[_Segment] = []
        self.other = _Segment(key, OTHER, owner.new_monitor())
        self.route: dict[str, int] = {}
        self.admitted = 0
        self.evicted = 0

    def segments(self) -> list[_Segment]:
        return [*self.slots, self.other]

    def take(self, batch: _Batch, values: Sequence[str | None],
             out: list[tuple[int, Finding]]) -> np.ndarray:
        """Route a batch (ranking at every ``rank_every`` interactions), queue each
        segment's rows; returns each row's segment value (for attribution)."""
        n = len(values)
        labels = np.empty(n, dtype=object)
        a = 0
        while a < n:
            period = self._period()
            b = min(n, a + period - self.table.period_n)
            chunk = values[a:b]
            self.table.add(chunk, b - a)
            other = len(self.slots)
            route: dict[Any, int] = self.route
            codes = np.fromiter(map(route.get, chunk, [other] * (b - a)),
                                dtype=np.int64, count=b - a)
            segs = self.segments()
            labels[a:b] = np.array([s.value for s in segs], dtype=object)[codes]
            order = np.argsort(codes, kind="stable")
            cuts = np.flatnonzero(np.diff(codes[order])) + 1
            routed = self.owner.routed
            for grp in np.split(order, cuts):
                if grp.shape[0]:
                    seg = segs[int(codes[grp[0]])]
                    seg.add(batch.piece(a + grp))
                    routed[(self.key, seg.value)] = (routed.get((self.key, seg.value), 0)
                                                     + grp.shape[0])
            if self.table.period_n >= period:
                self._rank(out)
            a = b
        return labels

    def _period(self) -> int:
        """Interactions until the next ranking: the first comes after a tenth of
        ``rank_every`` (busy values get their monitors early in a model's life)."""
        every = self.owner.segments.rank_every
        return max(10, every // 10) if self.table.total == 0.0 else every

    def _rank(self, out: list[tuple[int, Finding]]) -> None:
        cfg = self.owner.segments
        monitored = [s.value for s in self.slots]
        self.table.close_period(monitored)
        evict, admit = self.table.rank(monitored, cfg.max_values, cfg.min_share)
        if not evict and not admit:
            return
        gone = set(evict)
        for s in self.slots:
            if s.value in gone:
                out += [(-1, f) for f in s.feed()]
        self.slots = [s for s in self.slots if s.value not in gone]
        self.slots += [_Segment(self.key, v, self.owner.new_monitor()) for v in admit]
        self.route = {s.value: i for i, s in enumerate(self.slots)}
        self.admitted += len(admit)
        self.evicted += len(evict)
        # Other's population changed: it learns a new reference.
        out += [(-1, f) for f in self.other.feed()]
        self.other = _Segment(self.key, OTHER, self.owner.new_monitor())


@dataclasses.dataclass
class _Batch:
    """A batch's columns, for cutting into segments' pieces."""

    ids: list[str]
    ts: np.ndarray
    fields: dict[str, np.ndarray]
    embeddings: np.ndarray | None
    emb_pos: np.ndarray  # row -> index into embeddings, -1 without a vector

    def piece(self, rows: np.ndarray) -> _Piece:
        ids = list(map(self.ids.__getitem__, rows.tolist()))
        emb = None
        emb_rows = np.zeros(0, dtype=np.int64)
        if self.embeddings is not None:
            pos = self.emb_pos[rows]
            has = pos >= 0
            if has.any():
                emb_rows = np.flatnonzero(has)
                emb = self.embeddings[pos[has]]
        return _Piece(ids, self.ts[rows], {k: v[rows] for k, v in self.fields.items()},
                      emb, emb_rows, rows.shape[0])


class SegmentedMonitor:
    """The model-level monitor and its segments' (see the module).

    >>> import random
    >>> rng = random.Random(3)
    >>> m = SegmentedMonitor("m1", MonitorConfig(warmup=1000),
    ...                      SegmentConfig(("metadata.tenant",), max_values=4))
    >>> tenants = [f"t{i % 5}" for i in range(30_000)]
    >>> lat = [rng.lognormvariate(5 + 0.5 * (t == "t1" and i >= 15_000), 0.4)
    ...        for i, t in enumerate(tenants)]
    >>> found = m.observe_columns([f"e{i}" for i in range(30_000)], np.arange(30_000.0),
    ...                           latency_ms=np.array(lat),
    ...                           segments={"metadata.tenant": tenants}) + m.flush()
    >>> [(f.segment, f.detector) for f in found if f.segment][:1]
    [((('metadata.tenant', 't1'),), 'cusum_mean_up')]
    """

    def __init__(self, model_id: str, config: MonitorConfig, segments: SegmentConfig,
                 model_version: str | None = None, *, model: ModelMonitor | None = None
                 ) -> None:
        self.model_id = model_id
        self.budget = config  # the model's: its false-alarm rate is the whole budget
        self.segments = segments
        model_rate, self._segment_rate = segments.rates(config.target_false_alarm_rate)
        self.model = model or ModelMonitor(
            model_id, dataclasses.replace(config, target_false_alarm_rate=model_rate),
            model_version)
        # Interactions routed to each segment since the caller last took the counts.
        self.routed: dict[tuple[str, str], int] = {}
        self.keys = [_Key(k, self) for k in segments.keys]
        self.recent = {s.name: attribution.Recent(segments.keys) for s in catalogue.SIGNALS}

    def new_monitor(self) -> ModelMonitor:
        """A fresh monitor for a segment (its share of the budget; the model's version)."""
        cfg = dataclasses.replace(self.budget, target_false_alarm_rate=self._segment_rate)
        return ModelMonitor(self.model_id, cfg, self.model.model_version)

    # -- what ModelMonitor offers ------------------------------------------------------------
    @property
    def config(self) -> MonitorConfig:
        return self.model.config

    @property
    def model_version(self) -> str | None:
        return self.model.model_version

    @model_version.setter
    def model_version(self, version: str | None) -> None:
        self.model.model_version = version
        for s in self.all_segments():
            s.monitor.model_version = version

    @property
    def phase(self) -> str:
        return self.model.phase

    @property
    def signals(self) -> dict[str, Any]:
        return self.model.signals

    def stats(self) -> dict[str, SignalStats]:
        return self.model.stats()

    def warnings(self) -> list[str]:
        return self.model.warnings()

    def new_warnings(self) -> list[tuple[str, str]]:
        """The model level's (a segment's reference learns from a tenth of the traffic or
        less; its warnings would repeat the model's for every segment)."""
        return self.model.new_warnings()

    def deploy(self, model_version: str | None) -> list[Finding]:
        """A new version: every reference starts afresh (the segments stay admitted).
        Returns what the segments' waiting interactions raised before it."""
        found = self.flush()
        if model_version is not None and model_version == self.model.model_version:
            return found  # the live version's notice, late (see ModelMonitor.deploy)
        self.model.deploy(model_version)
        for k in self.keys:
            for s in k.segments():
                s.monitor.deploy(model_version)
        return found

    def all_segments(self) -> list[_Segment]:
        return [s for k in self.keys for s in k.segments()]

    # -- observing -----------------------------------------------------------------------
    def observe(self, obs: Observation,
                segments: Mapping[str, str | None] | None = None) -> list[Finding]:
        """Feed one interaction with its segment values (key -> value)."""
        fields: dict[str, Any] = {}
        for spec in catalogue.SIGNALS:
            if not spec.columnar:
                continue
            v = getattr(obs, spec.field, None)
            if v is not None:
                if isinstance(v, str) or (spec.check == catalogue.BOOL
                                          and not isinstance(v, bool | np.bool_)):
                    raise InvalidValue(f"{spec.field}: {v!r} is not {spec.check}")
                fields[spec.field] = np.array([float(v)])
        emb = None if obs.embedding is None else np.asarray(obs.embedding,
                                                            dtype=np.float32)[None, :]
        segs = {k: [(segments or {}).get(k)] for k in self.segments.keys}
        return self.observe_columns([obs.event_id], np.array([obs.ts]), embeddings=emb,
                                    embedding_rows=np.zeros(1 if emb is not None else 0,
                                                            dtype=np.int64),
                                    model_version=obs.model_version, segments=segs,
                                    **fields)

    def observe_label(self, event_id: str, ts: float, correct: bool | None = None,
                      feedback: int | None = None) -> list[Finding]:
        """A delayed label counts at the model level: the label does not say its
        interaction's segment."""
        return self.model.observe_label(event_id, ts, correct, feedback)

    def observe_columns(self, event_ids: Sequence[str], ts: np.ndarray, *,
                        segments: Mapping[str, Sequence[str | None]] | None = None,
                        embeddings: np.ndarray | None = None,
                        embedding_rows: np.ndarray | None = None,
                        model_version: str | None = None, interactions: int | None = None,
                        label_rows: np.ndarray | None = None,
                        **fields: np.ndarray | None) -> list[Finding]:
        """:meth:`ModelMonitor.observe_columns`, plus each row's value of every segment key
        (``segments``: key -> values, None where absent; a missing key: all absent).
        ``label_rows`` (a mask) marks delayed labels merged into the batch: they count at
        the model level only."""
        n = len(event_ids)
        ids = event_ids if isinstance(event_ids, list) else list(event_ids)
        ts = np.asarray(ts, dtype=np.float64)
        cols = {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()
                if v is not None}
        rows = (np.asarray(embedding_rows, dtype=np.int64) if embedding_rows is not None
                else np.arange(n if embeddings is not None else 0))
        if embeddings is not None and not embeddings.shape[0]:
            embeddings = None
        # The model level validates the whole batch before any state changes.
        found = self.model.observe_columns(ids, ts, embeddings=embeddings,
                                           embedding_rows=rows, model_version=model_version,
                                           interactions=interactions, **cols)
        recent_at = self._remember_inputs(cols, embeddings, rows, n)
        if model_version is not None:
            for s in self.all_segments():
                if s.monitor.model_version is None:
                    s.monitor.model_version = self.model.model_version
        out: list[tuple[int, Finding]] = []
        labels: list[np.ndarray] = []
        sel = (np.arange(n) if label_rows is None
               else np.flatnonzero(~np.asarray(label_rows, dtype=bool)))
        if interactions != 0 and sel.shape[0]:
            emb_pos = np.full(n, -1, dtype=np.int64)
            if embeddings is not None:
                emb_pos[rows] = np.arange(rows.shape[0])
            whole = sel.shape[0] == n
            batch = _Batch(ids if whole else list(map(ids.__getitem__, sel.tolist())),
                           ts[sel], {k: v[sel] for k, v in cols.items()}, embeddings,
                           emb_pos[sel])
            seg_values = segments or {}
            for k in self.keys:
                vals = seg_values.get(k.key)
                if vals is None:
                    vals = [None] * n
                elif len(vals) != n:
                    raise InvalidValue(f"segment {k.key}: {len(vals)} values for {n} events")
                lab = np.full(n, None, dtype=object)
                lab[sel] = k.take(batch, vals if whole else [vals[i] for i in sel.tolist()],
                                  out)
                labels.append(lab)
            model = [self._attributed(f, recent_at, ids, labels) for f in found]
            self._add_recent(recent_at, labels, n)
            out += [(-1, f) for f in self._feed_due()]
        else:
            model = found
        return model + [f for _, f in out]

    def flush(self) -> list[Finding]:
        """Feed every segment's waiting interactions; their findings."""
        return [f for s in self.all_segments() for f in s.feed()]

    def take_routed(self) -> dict[tuple[str, str], int]:
        """Interactions routed to each (key, value) since the last call (for counters)."""
        out, self.routed = self.routed, {}
        return out

    def waiting(self) -> int:
        return sum(s.rows for s in self.all_segments())

    def _feed_due(self) -> list[Finding]:
        segs = self.all_segments()
        if (sum(s.rows for s in segs) > MAX_WAITING_ROWS
                or sum(s.vector_bytes for s in segs) > MAX_WAITING_BYTES):
            return self.flush()
        return [f for s in segs if s.rows >= self.segments.feed_rows for f in s.feed()]

    # -- attribution ---------------------------------------------------------------------
    def _remember_inputs(self, cols: dict[str, np.ndarray], embeddings: np.ndarray | None,
                         emb_rows: np.ndarray, n: int
                         ) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """Per signal present: (its rows, the values attribution reads, its count before)."""
        out: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        for spec in catalogue.SIGNALS:
            if spec.columnar:
                col = cols.get(spec.field)
                if col is None or col.shape != (n,):
                    continue
                r = np.flatnonzero(~np.isnan(col))
                if r.size:
                    out[spec.name] = (r, spec.values(col[r]), self.recent[spec.name].n)
            elif embeddings is not None:
                sig = self.model.signals.get(spec.name)
                if isinstance(sig, EmbeddingSignal) and embeddings.ndim == 2:
                    out[spec.name] = (emb_rows, attribution.novelty(sig, embeddings),
                                      self.recent[spec.name].n)
        return out

    def _add_recent(self, at: dict[str, tuple[np.ndarray, np.ndarray, int]],
                    labels: list[np.ndarray], n: int) -> None:
        for name, (r, vals, _) in at.items():
            self.recent[name].add(vals, [lab[r] for lab in labels])

    def _attributed(self, f: Finding, at: dict[str, tuple[np.ndarray, np.ndarray, int]],
                    ids: list[str], labels: list[np.ndarray]) -> Finding:
        got = at.get(f.signal)
        if got is None or not labels:
            return f
        rows, vals, before = got
        pos = next((k for k, r in enumerate(rows.tolist()) if ids[r] == f.event_id), None)
        if pos is None:
            return f
        # The excursion: its values of this batch up to the alarm, the rest from before.
        window = max(f.window, 1)
        here = min(window, pos + 1)
        old_x, old_labs = self.recent[f.signal].last(window - here, before)
        now_labs = np.array([lab[rows[pos + 1 - here:pos + 1]] for lab in labels],
                            dtype=object).reshape(len(labels), here)
        x = np.concatenate([old_x, vals[pos + 1 - here:pos + 1]])
        labs = np.concatenate([old_labs, now_labs], axis=1)
        c = self.budget
        inc = attribution.increments(self.model.signals[f.signal], f.detector, x,
                                     c.mean_shift, c.spread_ratio, c.rate_ratio,
                                     c.embedding_rate_increase, c.rate_floor)
        if inc is None:
            return f
        scalar = isinstance(self.model.signals[f.signal], ScalarSignal)
        return dataclasses.replace(f, attribution=tuple(attribution.attribute(
            inc, x, labs, self.segments.keys, scalar)))

    # -- memory ----------------------------------------------------------------------------
    def memory(self) -> dict[str, int]:
        """What the segments hold: monitors, counted values, waiting interactions, and the
        bytes of their state (the segments' monitors' snapshots and the waiting columns;
        the model level's not included)."""
        segs = self.all_segments()
        size = 0
        for s in segs:
            for v in s.monitor.snapshot_fields().values():
                size += v.nbytes if isinstance(v, np.ndarray) else len(str(v))
            size += s.vector_bytes + 40 * s.rows
        return {"monitors": len(segs),
                "values_tracked": sum(k.table.entries() for k in self.keys),
                "waiting": self.waiting(), "bytes": size,
                "admitted": sum(k.admitted for k in self.keys),
                "evicted": sum(k.evicted for k in self.keys)}

    def segment_stats(self) -> list[tuple[str, str, dict[str, SignalStats]]]:
        """(key, value, stats per signal) of every segment's monitor."""
        return [(s.key, s.value, s.monitor.stats()) for s in self.all_segments()]

    # -- state -----------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        return state.encode(self.snapshot_fields())

    def snapshot_fields(self) -> dict[str, state.Value]:
        """The model level's fields as they are, then ``seg.*`` (nothing may wait)."""
        if self.waiting():
            raise RuntimeError("snapshot with segment interactions waiting: flush() first")
        fields = self.model.snapshot_fields()
        s = self.segments
        fields["seg.config"] = orjson.dumps(dataclasses.asdict(s)).decode()
        for i, k in enumerate(self.keys):
            p = f"seg.{i}."
            t = k.table
            fields[p + "key"] = k.key
            fields[p + "slots"] = orjson.dumps([x.value for x in k.slots]).decode()
            fields[p + "decayed.values"] = orjson.dumps(list(t.decayed)).decode()
            fields[p + "decayed.counts"] = np.array(list(t.decayed.values()), dtype=np.float64)
            fields[p + "total"] = float(t.total)
            fields[p + "period.values"] = orjson.dumps(list(t.period)).decode()
            fields[p + "period.counts"] = np.array(list(t.period.values()), dtype=np.int64)
            fields[p + "period_n"] = t.period_n
            fields[p + "overflow"] = t.overflow
            fields[p + "admitted"] = k.admitted
            fields[p + "evicted"] = k.evicted
            for j, seg in enumerate(k.segments()):
                tag = "o" if seg is k.other else str(j)
                for name, v in seg.monitor.snapshot_fields().items():
                    fields[f"{p}{tag}.{name}"] = v
        for name, recent in self.recent.items():
            fields.update(recent.fields(f"seg.recent.{name}."))
        return fields

    @classmethod
    def restore_fields(cls, fields: dict[str, state.Value],
                       segments: SegmentConfig | None) -> ModelMonitor | SegmentedMonitor:
        """A monitor from snapshot fields, segmented as ``segments`` says now.

        The model level continues if its share of the budget is the one this
        configuration gives it (else it learns a new reference: its thresholds were set
        for another rate); a key's segments continue when the key is configured still and
        the segment rate is the same; other keys start afresh. Unsegmented now: the model
        level alone."""
        model = ModelMonitor.restore_fields(_sub(fields, ""))
        if segments is None:
            return model
        r = state.Reader(fields)
        alpha = _alpha(fields, model.config)
        own = cls(model.model_id, dataclasses.replace(
            model.config, target_false_alarm_rate=alpha), segments, model.model_version)
        if math.isclose(model.config.target_false_alarm_rate,
                        own.model.config.target_false_alarm_rate, rel_tol=1e-9):
            own.model = model
        else:
            log.warning("%s: the model-level reference is learned afresh (its false-alarm "
                        "share changed with the segment configuration)", model.model_id)
        if not r.has("seg.config"):
            return own
        old = orjson.loads(str(r.text("seg.config")))
        if tuple(old["keys"]) == own.segments.keys:  # (labels are per key, in order)
            for name, recent in own.recent.items():
                recent.load(r, f"seg.recent.{name}.")
        old_rate = alpha * (1.0 - float(old["model_share"])) / len(old["keys"])
        if not math.isclose(old_rate, own._segment_rate, rel_tol=1e-9):
            log.warning("%s: segment references are learned afresh (the segment "
                        "configuration changed)", model.model_id)
            return own
        for i, key in enumerate(old["keys"]):
            mine = next((k for k in own.keys if k.key == key), None)
            if mine is not None:
                _load_key(mine, r, f"seg.{i}.", fields)
        return own


def _alpha(fields: Mapping[str, state.Value], config: MonitorConfig) -> float:
    """The model's whole budget: its model level's rate over its share."""
    raw = fields.get("seg.config")
    if isinstance(raw, str):
        return float(config.target_false_alarm_rate / float(orjson.loads(raw)["model_share"]))
    return config.target_false_alarm_rate  # an unsegmented snapshot: all of it


def _sub(fields: Mapping[str, state.Value], prefix: str) -> dict[str, state.Value]:
    if not prefix:
        return {k: v for k, v in fields.items() if not k.startswith("seg.")}
    n = len(prefix)
    return {k[n:]: v for k, v in fields.items() if k.startswith(prefix)}


def _load_key(k: _Key, r: state.Reader, p: str, fields: Mapping[str, state.Value]) -> None:
    t = k.table
    t.decayed = dict(zip(orjson.loads(str(r.text(p + "decayed.values"))),
                         r.array(p + "decayed.counts").tolist(), strict=True))
    t.total = r.real(p + "total")
    t.period = dict(zip(orjson.loads(str(r.text(p + "period.values"))),
                        [int(c) for c in r.array(p + "period.counts").tolist()], strict=True))
    t.period_n = r.integer(p + "period_n")
    t.overflow = r.integer(p + "overflow")
    k.admitted = r.integer(p + "admitted")
    k.evicted = r.integer(p + "evicted")
    values = orjson.loads(str(r.text(p + "slots")))
    k.slots = [_Segment(k.key, v, ModelMonitor.restore_fields(_sub(fields, f"{p}{j}.")))
               for j, v in enumerate(values)]
    k.other = _Segment(k.key, OTHER, ModelMonitor.restore_fields(_sub(fields, f"{p}o.")))
    k.route = {s.value: j for j, s in enumerate(k.slots)}


def new_monitor(model_id: str, config: MonitorConfig, segments: SegmentConfig | None
                ) -> ModelMonitor | SegmentedMonitor:
    """The monitor of a model: segmented when ``segments`` says so."""
    if segments is None:
        return ModelMonitor(model_id, config)
    return SegmentedMonitor(model_id, config, segments)


def restore_monitor(fields: dict[str, state.Value], segments: SegmentConfig | None
                    ) -> ModelMonitor | SegmentedMonitor:
    """A monitor from snapshot fields (segmented or not), configured as now."""
    if segments is None and "seg.config" not in fields:
        return ModelMonitor.restore_fields(fields)
    return SegmentedMonitor.restore_fields(fields, segments)
