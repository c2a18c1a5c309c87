"""Offline replay: the same monitors as the worker, over JSONL files, as fast as one core goes.

Interactions are read in stream order (several models interleaved); feedback
lines are merged into that stream by ``ts`` (a label goes before the first
interaction whose ``ts`` is later than its own). Lines are validated with
exactly the rules of :mod:`driftline.streams.ingest.contract`: a vectorised fast path accepts rows
whose every field plainly passes, and every other row goes through
``parse_interaction`` / ``parse_feedback``, which accept it or name the reason.
Per model, a chunk of lines becomes one columnar batch for
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
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
from driftline.detectors import Finding, ModelMonitor, MonitorConfig
from driftline.streams.drift.events import drift_event
from driftline.streams.ingest import contract as schema
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


# -- fast validation ----------------------------------------------------------------------
def _types(col: list[Any]) -> set[type]:
    return set(map(type, col))


def _number_ok(col: list[Any], integer: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ok mask, values with NaN for None) of an optional non-negative number column."""
    kinds = _types(col) - {_NONE}
    allowed = {int} if integer else {int, float}
    n = len(col)
    if kinds <= allowed:
        arr = np.array(col, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            ok = np.isnan(arr) | ((arr >= 0) & (arr < np.inf))
        return ok, arr
    ok = np.array([v is None or (type(v) in allowed and v >= 0) for v in col], dtype=bool)
    arr = np.array([v if o else None for v, o in zip(col, ok, strict=True)], dtype=np.float64)
    return ok & (np.isnan(arr) | (arr < np.inf)), arr if n else np.zeros(0)


def _bool_ok(col: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    if _types(col) <= {_NONE, bool}:
        return np.ones(len(col), dtype=bool), np.array(col, dtype=np.float64)
    ok = np.array([v is None or type(v) is bool for v in col], dtype=bool)
    return ok, np.array([v if o else None for v, o in zip(col, ok, strict=True)],
                        dtype=np.float64)


def _str_ok(col: list[Any], optional: bool) -> np.ndarray:
    kinds = _types(col)
    if kinds == {str}:
        lens = np.fromiter(map(len, col), dtype=np.int64, count=len(col))
        return (lens > 0) & (lens <= 256)
    if optional and kinds == {_NONE}:
        return np.ones(len(col), dtype=bool)
    return np.array([(v is None and optional) or (type(v) is str and 0 < len(v) <= 256)
                     for v in col], dtype=bool)


@dataclass
class _Chunk:
    """Validated interactions of one chunk, as columns (rows failing validation dropped)."""

    docs: list[Any]
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
    emb: list[Any]
    versions: set[Any] = field(default_factory=set)


def _fast_chunk(docs: list[Any], valid_ids: dict[str, bool]) -> _Chunk:
    """Columns and a mask of rows ``parse_interaction`` certainly accepts as they are."""
    n = len(docs)
    if _types(docs) <= {dict}:
        ok = np.ones(n, dtype=bool)
        ds = docs
    else:
        ok = np.fromiter((type(d) is dict for d in docs), dtype=bool, count=n)
        ds = [d if type(d) is dict else {} for d in docs]
    present = set().union(*ds) if n else set()
    nones = [None] * n

    def get(name: str) -> list[Any]:
        # map over dict.get runs in C: no bytecode per row.
        return list(map(dict.get, ds, repeat(name, n))) if name in present else nones

    sv = get("schema_version")
    if _types(sv) != {_NONE}:
        ok &= np.array([v is None or (type(v) is int and v == 1) for v in sv], dtype=bool)
    model = get("model_id")
    if _types(model) <= {str}:
        for m in set(model) - valid_ids.keys():
            valid_ids[m] = bool(schema._MODEL_ID.match(m))
        ok &= np.fromiter(map(valid_ids.__getitem__, model), dtype=bool, count=n)
    else:
        ok &= np.array([type(m) is str and bool(schema._MODEL_ID.match(m)) for m in model],
                       dtype=bool)
    event_id = get("event_id")
    ok &= _str_ok(event_id, optional=False)
    version = get("model_version")
    ok &= _str_ok(version, optional=True)
    meta = get("metadata")
    if not _types(meta) <= {_NONE, dict}:
        ok &= np.array([v is None or type(v) is dict for v in meta], dtype=bool)
    ts_col = get("ts")
    ts_ok, ts = _number_ok(ts_col, integer=False)
    ok &= ts_ok & ~np.isnan(ts)
    lat_ok, lat = _number_ok(get("latency_ms"), integer=False)
    tok_ok, tokens = _number_ok(get("output_tokens"), integer=True)
    itok_ok, _ = _number_ok(get("input_tokens"), integer=True)
    ref_ok, refusal = _bool_ok(get("refusal"))
    cor_ok, correct = _bool_ok(get("correct"))
    ok &= lat_ok & tok_ok & itok_ok & ref_ok & cor_ok
    fb_col = get("feedback")
    if _types(fb_col) <= {_NONE, int}:
        fb = np.array(fb_col, dtype=np.float64)
        ok &= np.isnan(fb) | ((fb >= -1) & (fb <= 1))
    else:
        fb_ok = np.array([v is None or (type(v) is int and -1 <= v <= 1) for v in fb_col],
                         dtype=bool)
        ok &= fb_ok
        fb = np.array([v if o else None for v, o in zip(fb_col, fb_ok, strict=True)],
                      dtype=np.float64)
    if _types(get("embedding_b64")) != {_NONE}:
        ok &= np.array([v is None for v in get("embedding_b64")], dtype=bool)
    emb = get("embedding")
    kinds = _types(emb)
    if kinds != {_NONE}:
        ok &= np.array([e is None or (type(e) is list and 8 <= len(e) <= 4096
                                      and type(e[0]) is not bool) for e in emb], dtype=bool)
    return _Chunk(docs, ok, model, event_id, version, ts, lat, tokens, refusal, fb, correct, emb)


def _slow_row(c: _Chunk, i: int, line: bytes, reasons: Counter[str]) -> None:
    """Validate one row with the contract's own parser; patch the columns if it is valid."""
    try:
        it = schema.parse_interaction(line.rstrip(b"\r\n"))
    except schema.InvalidEvent as exc:
        reasons[exc.reason] += 1
        return
    o = it.obs
    c.ok[i] = True
    c.model[i], c.event_id[i], c.version[i] = it.model_id, o.event_id, o.model_version
    c.ts[i] = o.ts
    nan = np.nan
    c.latency[i] = nan if o.latency_ms is None else o.latency_ms
    c.tokens[i] = nan if o.output_tokens is None else o.output_tokens
    c.refusal[i] = nan if o.refusal is None else float(o.refusal)
    c.feedback[i] = nan if o.feedback is None else float(o.feedback)
    c.correct[i] = nan if o.correct is None else float(o.correct)
    c.emb[i] = o.embedding


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


def _read_labels(path: Path | None, stats: ReplayStats, reasons: Counter[str]) -> _Labels:
    rows: list[schema.Feedback] = []
    if path is not None:
        with open(path, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                stats.lines += 1
                try:
                    rows.append(schema.parse_feedback(line.rstrip(b"\r\n")))
                except schema.InvalidEvent as exc:
                    reasons[exc.reason] += 1
    rows.sort(key=lambda f: f.ts)
    return _Labels(
        ts=np.array([f.ts for f in rows], dtype=np.float64),
        model=[f.model_id for f in rows], event_id=[f.event_id for f in rows],
        correct=np.array([f.correct for f in rows], dtype=np.float64),
        feedback=np.array([f.feedback for f in rows], dtype=np.float64))


class _Models:
    """The monitors, created on first sight, with their versions and embedding dimension."""

    def __init__(self, config: MonitorConfig, recorder: SeriesRecorder | None = None) -> None:
        self.config = config
        self.monitors: dict[str, ModelMonitor] = {}
        self.versions: dict[str, set[str]] = {}
        self.dims: dict[str, int] = {}
        # For a report: what each model's signals looked like, per interaction index.
        self.recorder = recorder
        self.count: dict[str, int] = {}

    def get(self, model_id: str) -> ModelMonitor:
        m = self.monitors.get(model_id)
        if m is None:
            m = self.monitors[model_id] = ModelMonitor(model_id, self.config)
            self.versions[model_id] = set()
        return m


def run(input_path: str | Path, output_path: str | Path, feedback_path: str | Path | None = None,
        config: MonitorConfig | None = None, progress: Callable[[int], None] | None = None,
        report_path: str | Path | Sequence[str | Path] | None = None,
        truth: list[dict[str, Any]] | None = None) -> ReplayStats:
    """Replay interactions (and feedback) through per-model monitors; write drift events.

    With ``report_path`` (one path or several) also write a report of every model's
    signals, baselines, warm-ups and detections, with ``truth`` (the simulator's injected
    drifts) marked: HTML, PNG or a JSON summary, by each path's suffix.
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
                     recorder)
    finally:
        if enabled:
            gc.enable()
    if recorder is not None:
        for path in reports:
            recorder.write(path, truth, title="driftline replay report")
    return stats


def _run(input_path: Path, output_path: Path, feedback_path: Path | None,
         config: MonitorConfig | None, progress: Callable[[int], None] | None,
         recorder: SeriesRecorder | None = None) -> ReplayStats:
    t0 = time.perf_counter()
    stats = ReplayStats()
    reasons: Counter[str] = Counter()
    models = _Models(config or MonitorConfig(), recorder)
    labels = _read_labels(feedback_path, stats, reasons)
    valid_ids: dict[str, bool] = {}
    state = {"pos": 0, "tsmax": -np.inf}
    loads = orjson.loads
    limit = schema.MAX_PAYLOAD_BYTES
    with open(output_path, "wb") as out, open(input_path, "rb") as fh:
        hint = 4 << 20
        while True:
            raw = fh.readlines(hint)
            if not raw:
                break
            size = sum(map(len, raw))
            hint = min(max(size // len(raw) * CHUNK_LINES, 1 << 20), CHUNK_BYTES_MAX)
            lines = [x for x in raw if x.strip()] if any(map(bytes.isspace, raw)) else raw
            stats.lines += len(lines)
            docs: list[Any] = []
            try:
                if max(map(len, lines)) > limit:
                    raise ValueError
                docs = list(map(loads, lines))
            except ValueError:  # orjson.JSONDecodeError is a ValueError
                docs = []
                for line in lines:
                    try:
                        docs.append(loads(line) if len(line) <= limit else None)
                    except orjson.JSONDecodeError:
                        docs.append(None)
            c = _fast_chunk(docs, valid_ids)
            for i in np.flatnonzero(~c.ok).tolist():
                _slow_row(c, i, lines[i], reasons)
            if c.version.count(None) != len(c.version):
                c.versions = (set(c.version) if c.ok.all() else
                              {c.version[i] for i in np.flatnonzero(c.ok).tolist()})
            _process(c, labels, models, stats, reasons, out, state)
            if progress is not None:
                progress(stats.lines)
        _process(None, labels, models, stats, reasons, out, state)
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
    if c is not None and ri.size and c.emb.count(None) != len(c.emb):
        src = rows[ri]
        vecs = [c.emb[r] for r in src.tolist()]
        has = [v is not None for v in vecs]
        if any(has):
            dim = models.dims.get(model_id) or len(next(v for v in vecs if v is not None))
            models.dims[model_id] = dim
            bad = [k for k, v in enumerate(vecs) if v is not None and len(v) != dim]
            if bad:
                reasons["embedding_dim_changed"] += len(bad)
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
        try:
            f32 = np.float32
            # Row by row is faster than one nested conversion (no shape discovery).
            emb = np.stack([np.array(vecs[with_vec[k]], dtype=f32) for k in srt.tolist()])
        except (TypeError, ValueError):
            emb = None
        if emb is None or emb.ndim != 2 or not np.isfinite(emb).all():
            # Rare: a vector the fast path let through needs the contract's verdict.
            return _recheck(c, rows, ri, labels, lo, li, row_pos, lab_pos, model_id, models,
                            stats, reasons)
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
                mon.deploy(v)
        if b <= a:
            continue
        er = emb_rows[(emb_rows >= a) & (emb_rows < b)]
        e = emb[np.searchsorted(emb_rows, er)] if emb is not None and er.size else None
        n_int = int(ipos[a:b].sum())
        stats.interactions += n_int
        stats.feedback += (b - a) - n_int
        if models.recorder is None:
            fs = mon.observe_columns(
                ids[a:b], ts[a:b], latency_ms=lat[a:b], output_tokens=tok[a:b],
                refusal=ref[a:b], feedback=fb[a:b], correct=cor[a:b], embeddings=e,
                embedding_rows=er - a, interactions=n_int)
        else:
            fs = _record(models, mon, model_id, ids, ts, lat, tok, ref, fb, cor, e, er, ipos,
                         a, b)
        if fs:
            where = {ids[k]: int(allpos[k]) for k in range(a, b)}
            found += [(where[f.event_id], model_id, f) for f in fs]
    return found


REPORT_STEP = 50  # interactions between two samples of a model's signals in a report


def _record(models: _Models, mon: ModelMonitor, model_id: str, ids: list[str], ts: np.ndarray,
            lat: np.ndarray, tok: np.ndarray, ref: np.ndarray, fb: np.ndarray,
            cor: np.ndarray, e: np.ndarray | None, er: np.ndarray, ipos: np.ndarray, a: int,
            b: int) -> list[Finding]:
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
        fs = mon.observe_columns(
            ids[s0:s1], ts[s0:s1], latency_ms=lat[s0:s1], output_tokens=tok[s0:s1],
            refusal=ref[s0:s1], feedback=fb[s0:s1], correct=cor[s0:s1], embeddings=sub,
            embedding_rows=er[sel] - s0, interactions=n_int)
        cum = np.cumsum(ipos[s0:s1])
        at = {ids[k]: count + max(0, int(cum[k - s0]) - 1) for k in range(s0, s1)}
        for f in fs:
            rec.detection(drift_event(model_id, f), at[f.event_id])
        count += n_int
        rec.sample(model_id, count, mon)
        out += fs
    models.count[model_id] = count
    return out


def _recheck(c: _Chunk | None, rows: np.ndarray, ri: np.ndarray, labels: _Labels, lo: int,
             li: np.ndarray, row_pos: np.ndarray, lab_pos: np.ndarray, model_id: str,
             models: _Models, stats: ReplayStats, reasons: Counter[str]
             ) -> list[tuple[int, str, Finding]]:
    assert c is not None
    keep = []
    for k in ri.tolist():
        r = int(rows[k])
        v = c.emb[r]
        if v is not None and not isinstance(v, np.ndarray):
            try:
                c.emb[r] = schema._embedding({"embedding": v})
            except schema.InvalidEvent as exc:
                reasons[exc.reason] += 1
                continue
        keep.append(k)
    return _run_model(c, rows, np.array(keep, dtype=np.int64), labels, lo, li, row_pos,
                      lab_pos, model_id, models, stats, reasons)
