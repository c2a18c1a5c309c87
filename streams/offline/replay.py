"""Offline replay: the same monitors as the worker, over JSONL files, as fast as one core goes.

Interactions are read in stream order (several models interleaved); feedback
lines are merged into that stream by ``ts`` (a label goes before the first
interaction whose ``ts`` is later than its own). Lines are decoded by the worker's own
batch decoder (:mod:`driftline.streams.ingest.decoder`), so a file and a topic are held
to one contract; a rejected line is counted by reason and, with ``rejects_path``, written
out with its line number. Per model, a chunk of lines becomes one columnar batch for
:meth:`ModelMonitor.observe_columns`.

A model's first interaction with a ``model_version`` it has not seen before
starts a fresh reference (as a deploy would), so a file spanning a rollout
backtests both versions; a model's embedding dimension is fixed by its first
vector (other dimensions are invalid: ``embedding_dim_changed``).
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
from driftline.detectors import Finding, ModelMonitor, MonitorConfig
from driftline.detectors.segmented import SegmentedMonitor, new_monitor
from driftline.detectors.segments import SegmentPlan, values_of
from driftline.streams.drift.events import drift_event
from driftline.streams.ingest import contract as schema
from driftline.streams.ingest.contract import InteractionRecord
from driftline.streams.ingest.decoder import BatchDecoder
from driftline.streams.offline.report import SeriesRecorder

CHUNK_LINES = 20_000  # per chunk: enough rows per model to vectorise, few enough to stay in cache
CHUNK_BYTES_MAX = 32 << 20
_NONE = type(None)


@dataclass
class ReplayStats:
    """What a replay read and wrote."""

    lines: int = 0
    interactions: int = 0
    feedback: int = 0
    invalid: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    drift_events: int = 0
    models: int = 0
    seconds: float = 0.0

    @property
    def interactions_per_second(self) -> float:
        return self.interactions / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.invalid_reasons.items()))
        return (f"{self.lines} lines, {self.interactions} interactions, {self.feedback} feedback, "
                f"{self.invalid} invalid{f' ({reasons})' if reasons else ''}, "
                f"{self.models} models, {self.drift_events} drift events in "
                f"{self.seconds:.2f} s ({self.interactions_per_second:,.0f} interactions/s)")


# -- decoding -----------------------------------------------------------------------------
_COLUMNS = attrgetter("ts", "latency_ms", "output_tokens", "refusal", "feedback", "correct")
_BLANK = InteractionRecord(event_id="-", model_id="-", ts=0.0)


@dataclass
class _Chunk:
    """Valid interactions of one chunk, as columns (rejected rows masked out)."""

    ok: np.ndarray
    model: list[Any]
    event_id: list[Any]
    version: list[Any]
    ts: np.ndarray
    latency: np.ndarray
    tokens: np.ndarray
    refusal: np.ndarray
    feedback: np.ndarray
    correct: np.ndarray
    emb: list[np.ndarray | None]
    records: list[Any] = field(default_factory=list)  # decoded (None: rejected), for segments
    has_vectors: bool = False
    versions: set[Any] = field(default_factory=set)
    line_of: Callable[[int], int] = int  # row -> line number in the file
    rejects: _Rejects | None = None
    source: Path = Path()


def _chunk(records: list[InteractionRecord | None], ids: list[str | None],
           vectors: bool) -> _Chunk:
    """The columns of a decoded chunk (``vectors``: the decoder has seen any)."""
    n = len(records)
    ok = np.fromiter(map(_is_not_none, records), dtype=bool, count=n)
    rows: list[Any] = records if ok.all() else [_BLANK if r is None else r for r in records]
    cols = np.array(list(map(_COLUMNS, rows)), dtype=np.float64).reshape(n, 6).T
    emb: list[np.ndarray | None] = [None] * n
    has = False
    if vectors:
        for i, r in enumerate(records):
            if r is not None and r.embedding is not None:
                emb[i] = np.frombuffer(r.embedding, dtype="<f4")  # type: ignore[call-overload]
                has = True
    return _Chunk(ok, ids, list(map(_EVENT_ID, rows)), list(map(_VERSION, rows)),
                  cols[0].copy(), cols[1].copy(), cols[2].copy(), cols[3].copy(),
                  cols[4].copy(), cols[5].copy(), emb, rows, has)


_EVENT_ID = attrgetter("event_id")
_VERSION = attrgetter("model_version")


def _is_not_none(x: Any) -> bool:
    return x is not None


# -- the run ------------------------------------------------------------------------------
@dataclass
class _Labels:
    """All valid feedback lines, sorted by ts (stable), as columns."""

    ts: np.ndarray
    model: list[str]
    event_id: list[str]
    correct: np.ndarray
    feedback: np.ndarray
    next: int = 0


class _Rejects:
    """Rejected lines: counted by reason; with a path, written as JSON lines
    ``{"file", "line", "reason", "message"}``."""

    def __init__(self, path: Path | None) -> None:
        self.reasons: Counter[str] = Counter()
        self._out: BinaryIO | None = open(path, "wb") if path is not None else None

    def add(self, source: Path, line: int, reason: str, message: str) -> None:
        self.reasons[reason] += 1
        if self._out is not None:
            self._out.write(orjson.dumps({"file": str(source), "line": line,
                                          "reason": reason, "message": message}) + b"\n")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def _read_labels(path: Path | None, stats: ReplayStats, rejects: _Rejects) -> _Labels:
    rows: list[schema.Feedback] = []
    if path is not None:
        decoder = BatchDecoder()
        with open(path, "rb") as fh:
            numbered = [(n, line) for n, line in enumerate(fh, 1) if line.strip()]
        stats.lines += len(numbered)
        parsed, rejected = decoder.feedback([line.strip() for _, line in numbered], None)
        rows = [f for f in parsed if f is not None]
        for r in rejected:
            rejects.add(path, numbered[r.position][0], r.reason, r.message)
    rows.sort(key=lambda f: f.ts)
    return _Labels(
        ts=np.array([f.ts for f in rows], dtype=np.float64),
        model=[f.model_id for f in rows], event_id=[f.event_id for f in rows],
        correct=np.array([f.correct for f in rows], dtype=np.float64),
        feedback=np.array([f.feedback for f in rows], dtype=np.float64))


class _Models:
    """The monitors, created on first sight, with their versions and embedding dimension."""

    def __init__(self, config: MonitorConfig, recorder: SeriesRecorder | None = None,
                 segments: SegmentPlan | None = None) -> None:
        self.config = config
        self.segments = segments  # which models are segmented (as the worker's)
        self.monitors: dict[str, ModelMonitor | SegmentedMonitor] = {}
        self.versions: dict[str, set[str]] = {}
        self.dims: dict[str, int] = {}
        # For a report: what each model's signals looked like, per interaction index.
        self.recorder = recorder
        self.count: dict[str, int] = {}
        self.index_of: dict[str, dict[str, int]] = {}  # segmented: event id -> index

    def get(self, model_id: str) -> ModelMonitor | SegmentedMonitor:
        m = self.monitors.get(model_id)
        if m is None:
            plan = self.segments.for_model(model_id) if self.segments else None
            m = self.monitors[model_id] = new_monitor(model_id, self.config, plan)
            self.versions[model_id] = set()
        return m


def run(input_path: str | Path, output_path: str | Path, feedback_path: str | Path | None = None,
        config: MonitorConfig | None = None, progress: Callable[[int], None] | None = None,
        report_path: str | Path | Sequence[str | Path] | None = None,
        truth: list[dict[str, Any]] | None = None,
        rejects_path: str | Path | None = None,
        segments: SegmentPlan | None = None) -> ReplayStats:
    """Replay interactions (and feedback) through per-model monitors; write drift events.

    With ``report_path`` (one path or several) also write a report of every model's
    signals, baselines, warm-ups and detections, with ``truth`` (the simulator's injected
    drifts) marked: HTML, PNG or a JSON summary, by each path's suffix. With
    ``rejects_path``, write each rejected line there as a JSON object: file, line number
    (1-based), reason (``contract.REASONS``), message. ``segments`` segments models as the
    worker's ``DRIFTLINE_SEGMENTS`` does (``Settings.segment_plan()``).
    """
    reports = ([] if report_path is None else [report_path]
               if isinstance(report_path, str | Path) else list(report_path))
    recorder = SeriesRecorder() if reports else None
    # Chunks hold ~10^5 fresh dicts: the cyclic GC would rescan them for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        stats = _run(Path(input_path), Path(output_path),
                     Path(feedback_path) if feedback_path else None, config, progress,
                     recorder, Path(rejects_path) if rejects_path else None, segments)
    finally:
        if enabled:
            gc.enable()
    if recorder is not None:
        for path in reports:
            recorder.write(path, truth, title="driftline replay report")
    return stats


def _run(input_path: Path, output_path: Path, feedback_path: Path | None,
         config: MonitorConfig | None, progress: Callable[[int], None] | None,
         recorder: SeriesRecorder | None = None, rejects_path: Path | None = None,
         segments: SegmentPlan | None = None) -> ReplayStats:
    t0 = time.perf_counter()
    stats = ReplayStats()
    rejects = _Rejects(rejects_path)
    reasons = rejects.reasons
    models = _Models(config or MonitorConfig(), recorder, segments)
    try:
        labels = _read_labels(feedback_path, stats, rejects)
        decoder = BatchDecoder()
        state = {"pos": 0, "tsmax": -np.inf}
        lineno = 0  # physical lines read so far
        with open(output_path, "wb") as out, open(input_path, "rb") as fh:
            hint = 4 << 20
            while True:
                raw = fh.readlines(hint)
                if not raw:
                    break
                size = sum(map(len, raw))
                hint = min(max(size // len(raw) * CHUNK_LINES, 1 << 20), CHUNK_BYTES_MAX)
                if any(map(bytes.isspace, raw)):  # blank lines: skipped, but counted
                    numbers = [lineno + k for k, x in enumerate(raw, 1) if not x.isspace()]
                    lines = [x.rstrip() for x in raw if not x.isspace()]
                else:
                    numbers = None
                    lines = list(map(bytes.rstrip, raw))
                stats.lines += len(lines)
                records, ids, rejected = decoder.interactions(lines)
                for r in rejected:
                    line = numbers[r.position] if numbers else lineno + r.position + 1
                    rejects.add(input_path, line, r.reason, r.message)
                lineno += len(raw)
                c = _chunk(records, ids, decoder.vectors_seen)
                base = lineno - len(raw)
                c.line_of = (numbers.__getitem__ if numbers else
                             lambda i, base=base: base + i + 1)  # type: ignore[misc]
                c.rejects, c.source = rejects, input_path
                if c.version.count(None) != len(c.version):
                    c.versions = (set(c.version) if c.ok.all() else
                                  {c.version[i] for i in np.flatnonzero(c.ok).tolist()})
                _process(c, labels, models, stats, reasons, out, state)
                if progress is not None:
                    progress(stats.lines)
            _process(None, labels, models, stats, reasons, out, state)
    finally:
        rejects.close()
    stats.invalid = sum(reasons.values())
    stats.invalid_reasons = dict(reasons)
    stats.models = len(models.monitors)
    stats.seconds = time.perf_counter() - t0
    return stats


def _process(c: _Chunk | None, labels: _Labels, models: _Models, stats: ReplayStats,
             reasons: Counter[str], out: BinaryIO, state: dict[str, Any]) -> None:
    """Merge a chunk with its labels, run it per model, write its events in stream order."""
    if c is not None:
        rows = np.flatnonzero(c.ok)
        ts = c.ts[rows]
        cummax = np.maximum.accumulate(np.maximum(ts, state["tsmax"])) if rows.size else ts
        # Label k goes before the first row whose running-max ts exceeds its ts.
        lo = labels.next
        hi = lo + int(np.searchsorted(labels.ts[lo:], cummax[-1], "left")) if rows.size else lo
        ins = np.searchsorted(cummax, labels.ts[lo:hi], "right")
        if rows.size:
            state["tsmax"] = float(cummax[-1])
    else:
        rows = np.zeros(0, dtype=np.int64)
        lo, hi = labels.next, labels.ts.shape[0]
        ins = np.zeros(hi - lo, dtype=np.int64)
    labels.next = hi
    nl = hi - lo
    # Merged positions: row r after the labels inserted before it; labels before row ins[k].
    base = state["pos"]
    row_pos = base + np.arange(rows.size) + np.searchsorted(ins, np.arange(rows.size), "right")
    lab_pos = base + ins + np.arange(nl)
    state["pos"] = base + rows.size + nl
    code: dict[str, int] = {}
    names = (c.model if rows.size == len(c.model) else [c.model[r] for r in rows.tolist()]
             ) if c is not None else []
    lnames = labels.model[lo:hi]
    for m in (*dict.fromkeys(names), *dict.fromkeys(lnames)):
        code.setdefault(m, len(code))
    groups_r = _groups(np.fromiter(map(code.__getitem__, names), np.int64, len(names)), len(code))
    groups_l = _groups(np.fromiter(map(code.__getitem__, lnames), np.int64, nl), len(code))
    found: list[tuple[int, str, Finding]] = []
    for model_id, k in code.items():
        found += _run_model(c, rows, groups_r[k], labels, lo, groups_l[k], row_pos, lab_pos,
                            model_id, models, stats, reasons)
    if c is None:  # the end: what waits for segments' monitors
        end = int(state["pos"])
        for model_id, mon in models.monitors.items():
            if isinstance(mon, SegmentedMonitor):
                found += [(end, model_id, f) for f in mon.flush()]
    found.sort(key=lambda f: f[0])
    if found:
        out.write(b"".join(orjson.dumps(drift_event(mid, f)) + b"\n" for _, mid, f in found))
        stats.drift_events += len(found)


def _groups(codes: np.ndarray, k: int) -> list[np.ndarray]:
    """Indices of each code, in order."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k + 1))
    return [order[bounds[j]: bounds[j + 1]] for j in range(k)]


def _run_model(c: _Chunk | None, rows: np.ndarray, ri: np.ndarray, labels: _Labels, lo: int,
               li: np.ndarray, row_pos: np.ndarray, lab_pos: np.ndarray, model_id: str,
               models: _Models, stats: ReplayStats, reasons: Counter[str]
               ) -> list[tuple[int, str, Finding]]:
    mon = models.get(model_id)
    # Embedding dimension: fixed by the model's first vector.
    if c is not None and ri.size and c.has_vectors:
        src = rows[ri]
        vecs = [c.emb[r] for r in src.tolist()]
        has = [v is not None for v in vecs]
        if any(has):
            dim = models.dims.get(model_id) or len(next(v for v in vecs if v is not None))
            models.dims[model_id] = dim
            bad = [k for k, v in enumerate(vecs) if v is not None and len(v) != dim]
            if bad:
                assert c.rejects is not None
                for k in bad:
                    c.rejects.add(c.source, c.line_of(int(src[k])), "embedding_dim_changed",
                                  f"embedding dimension {len(vecs[k])}, the model uses {dim}")  # type: ignore[arg-type]
                keep = np.ones(ri.size, dtype=bool)
                keep[bad] = False
                ri = ri[keep]
                vecs = [v for v, k in zip(vecs, keep.tolist(), strict=True) if k]
    else:
        vecs = []
    n_r, n_l = ri.size, li.size
    pos = np.concatenate([row_pos[ri], lab_pos[li]])
    order = np.argsort(pos, kind="stable")
    src = rows[ri] if c is not None else np.zeros(0, dtype=np.int64)

    def merged(col: np.ndarray | None, lab: np.ndarray | None) -> np.ndarray:
        a = col[src] if col is not None else np.full(n_r, np.nan)
        b = lab[lo + li] if lab is not None else np.full(n_l, np.nan)
        return np.concatenate([a, b])[order]

    ids_all = (list(map(c.event_id.__getitem__, src.tolist())) if c is not None else []) + \
        list(map(labels.event_id.__getitem__, (lo + li).tolist()))
    ids = list(map(ids_all.__getitem__, order.tolist())) if n_l else ids_all
    ts = merged(c.ts if c else None, labels.ts)
    lat = merged(c.latency if c else None, None)
    tok = merged(c.tokens if c else None, None)
    ref = merged(c.refusal if c else None, None)
    fb = merged(c.feedback if c else None, labels.feedback)
    cor = merged(c.correct if c else None, labels.correct)
    emb = None
    emb_rows = np.zeros(0, dtype=np.int64)
    if any(v is not None for v in vecs):
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        with_vec = [k for k, v in enumerate(vecs) if v is not None]
        emb_rows = inv[np.array(with_vec, dtype=np.int64)]
        srt = np.argsort(emb_rows)
        emb_rows = emb_rows[srt]
        # Float32 and finite already (the decoder checked); one dimension (above).
        emb = np.stack([vecs[with_vec[k]] for k in srt.tolist()])  # type: ignore[misc]
    found: list[tuple[int, str, Finding]] = []
    seen = models.versions[model_id]
    cut = [0]
    new_versions: list[str | None] = [None]
    if c is not None and c.versions - seen - {None}:
        versions = [c.version[r] for r in src.tolist()]
        vs = [versions[k] if k < n_r else None for k in order.tolist()]
        for j, v in enumerate(vs):
            if v is not None and v not in seen:
                seen.add(v)
                cut.append(j)
                new_versions.append(v)
    cut.append(order.size)
    ipos = np.concatenate([np.ones(n_r, dtype=bool), np.zeros(n_l, dtype=bool)])[order]
    allpos = pos[order]
    for a, b, v in zip(cut[:-1], cut[1:], new_versions, strict=False):
        if v is not None:
            if mon.model_version is None:
                mon.model_version = v
            else:
                at = int(allpos[a])
                found += [(at, model_id, f) for f in mon.deploy(v) or []]
        if b <= a:
            continue
        er = emb_rows[(emb_rows >= a) & (emb_rows < b)]
        e = emb[np.searchsorted(emb_rows, er)] if emb is not None and er.size else None
        n_int = int(ipos[a:b].sum())
        stats.interactions += n_int
        stats.feedback += (b - a) - n_int
        extra: dict[str, Any] = {}
        if isinstance(mon, SegmentedMonitor) and c is not None:
            # Each row's segment values (labels' rows: none; they count at the model level).
            recs = [c.records[r] for r in src.tolist()]
            per_key = {k: values_of(recs, k) for k in mon.segments.keys}
            sl = order[a:b].tolist()
            extra["segments"] = {k: [vals[j] if j < n_r else None for j in sl]
                                 for k, vals in per_key.items()}
            extra["label_rows"] = ~ipos[a:b]
        if models.recorder is None:
            fs = mon.observe_columns(
                ids[a:b], ts[a:b], latency_ms=lat[a:b], output_tokens=tok[a:b],
                refusal=ref[a:b], feedback=fb[a:b], correct=cor[a:b], embeddings=e,
                embedding_rows=er - a, interactions=n_int, **extra)
        else:
            fs = _record(models, mon, model_id, ids, ts, lat, tok, ref, fb, cor, e, er, ipos,
                         a, b, extra)
        if fs:
            # A segment's finding may name an interaction of an earlier chunk (its monitor
            # is fed a few hundred rows at a time): it comes out where it was found.
            where = {ids[k]: int(allpos[k]) for k in range(a, b)}
            last = int(allpos[b - 1])
            found += [(where.get(f.event_id, last), model_id, f) for f in fs]
    return found


REPORT_STEP = 50  # interactions between two samples of a model's signals in a report
REPORT_FEED = 10 * REPORT_STEP  # a segmented model's segments fed that often for a report
SEGMENT_INDEX_KEPT = 1 << 17  # event ids of a segmented model's report, for its segments'


def _record(models: _Models, mon: ModelMonitor | SegmentedMonitor, model_id: str,
            ids: list[str], ts: np.ndarray, lat: np.ndarray, tok: np.ndarray, ref: np.ndarray,
            fb: np.ndarray, cor: np.ndarray, e: np.ndarray | None, er: np.ndarray,
            ipos: np.ndarray, a: int, b: int, extra: dict[str, Any]) -> list[Finding]:
    """Feed [a, b) in steps, sampling the signals between steps (the detections do not
    depend on how a run is cut)."""
    rec = models.recorder
    assert rec is not None
    out: list[Finding] = []
    count = models.count.get(model_id, 0)
    for s0 in range(a, b, REPORT_STEP):
        s1 = min(b, s0 + REPORT_STEP)
        sel = (er >= s0) & (er < s1)
        sub = e[np.flatnonzero(sel)] if e is not None and sel.any() else None
        n_int = int(ipos[s0:s1].sum())
        part: dict[str, Any] = {}
        if extra:
            part["segments"] = {k: v[s0 - a:s1 - a] for k, v in extra["segments"].items()}
            part["label_rows"] = extra["label_rows"][s0 - a:s1 - a]
        fs = mon.observe_columns(
            ids[s0:s1], ts[s0:s1], latency_ms=lat[s0:s1], output_tokens=tok[s0:s1],
            refusal=ref[s0:s1], feedback=fb[s0:s1], correct=cor[s0:s1], embeddings=sub,
            embedding_rows=er[sel] - s0, interactions=n_int, **part)
        if isinstance(mon, SegmentedMonitor) and (count + n_int) // REPORT_FEED > (
                count // REPORT_FEED):  # segments drawn as they go (same findings)
            fs += mon.flush()
        cum = np.cumsum(ipos[s0:s1])
        at = {ids[k]: count + max(0, int(cum[k - s0]) - 1) for k in range(s0, s1)}
        if extra:  # a segment's finding may name an interaction of an earlier step
            seen = models.index_of.setdefault(model_id, {})
            seen.update(at)
            while len(seen) > SEGMENT_INDEX_KEPT:
                del seen[next(iter(seen))]
            at = seen
        for f in fs:
            rec.detection(drift_event(model_id, f), at.get(f.event_id, count + n_int - 1))
        count += n_int
        rec.sample(model_id, count, mon)
        out += fs
    models.count[model_id] = count
    return out
