"""Offline replay: the same monitors as the worker, over JSONL files, as fast as one core goes.

Interactions are read in stream order (several models interleaved); feedback
lines are merged into that stream by ``ts`` (a label goes before the first
interaction with a later ``ts``). Lines are validated with exactly the rules of
:mod:`streams.schema`: a fast path accepts the common, plainly valid shape and
everything else goes through ``parse_interaction`` / ``parse_feedback``, which
also name the reason of an invalid line. Per model, a chunk of lines becomes one
columnar batch for :meth:`ModelMonitor.observe_columns`.

A model's first interaction with a ``model_version`` it has not seen before
starts a fresh reference (as a deploy would), so a file spanning a rollout
backtests both versions.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from detectors import Finding, ModelMonitor, MonitorConfig
from streams import schema
from streams.events import drift_event

CHUNK = 16384


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


_INT_FIELDS = ("output_tokens", "input_tokens")


def _fast_ok(d: Any, valid_ids: dict[str, bool]) -> bool:
    """True only for documents ``parse_interaction`` certainly accepts (no b64, numeric ts)."""
    if type(d) is not dict:
        return False
    sv = d.get("schema_version")
    if sv is not None and not (type(sv) is int and sv == 1):
        return False
    mid = d.get("model_id")
    if type(mid) is not str:
        return False
    ok = valid_ids.get(mid)
    if ok is None:
        ok = valid_ids[mid] = bool(schema._MODEL_ID.match(mid))
    if not ok:
        return False
    eid = d.get("event_id")
    if type(eid) is not str or not 0 < len(eid) <= 256:
        return False
    ts: Any = d.get("ts")
    t = type(ts)
    if not ((t is float and math.isfinite(ts) and ts >= 0) or (t is int and ts >= 0)):
        return False
    mv = d.get("model_version")
    if mv is not None and (type(mv) is not str or not 0 < len(mv) <= 256):
        return False
    meta = d.get("metadata")
    if meta is not None and type(meta) is not dict:
        return False
    lat: Any = d.get("latency_ms")
    if lat is not None:
        t = type(lat)
        if not ((t is float and math.isfinite(lat) and lat >= 0) or (t is int and lat >= 0)):
            return False
    for name in _INT_FIELDS:
        v = d.get(name)
        if v is not None and not (type(v) is int and v >= 0):
            return False
    for name in ("refusal", "correct"):
        v = d.get(name)
        if v is not None and type(v) is not bool:
            return False
    fb = d.get("feedback")
    if fb is not None and not (type(fb) is int and -1 <= fb <= 1):
        return False
    if "embedding_b64" in d and d["embedding_b64"] is not None:
        return False
    emb = d.get("embedding")
    if emb is not None:
        if type(emb) is not list or not 8 <= len(emb) <= 4096 or type(emb[0]) is bool:
            return False
    return True


@dataclass
class _Row:
    """One event of the merged stream, decoded."""

    pos: int
    model_id: str
    doc: dict[str, Any] | None = None  # an interaction (fast path or parsed raw)
    emb: np.ndarray | None = None  # set when the slow path decoded it
    label: schema.Feedback | None = None


class _Models:
    """The monitors, created on first sight, and their deploy history."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.monitors: dict[str, ModelMonitor] = {}
        self.versions: dict[str, set[str]] = {}
        self.dims: dict[str, int] = {}

    def get(self, model_id: str) -> ModelMonitor:
        m = self.monitors.get(model_id)
        if m is None:
            m = self.monitors[model_id] = ModelMonitor(model_id, self.config)
            self.versions[model_id] = set()
        return m


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        yield from enumerate(fh)


def _feedback_rows(path: Path | None, stats: ReplayStats) -> list[tuple[float, int, Any]]:
    """All valid feedback lines, sorted by ts (stable)."""
    if path is None:
        return []
    out: list[tuple[float, int, Any]] = []
    for i, line in _read_lines(path):
        line = line.strip()
        if not line:
            continue
        stats.lines += 1
        try:
            fb = schema.parse_feedback(line)
        except schema.InvalidEvent as exc:
            stats.invalid += 1
            stats.invalid_reasons[exc.reason] = stats.invalid_reasons.get(exc.reason, 0) + 1
            continue
        out.append((fb.ts, i, fb))
    out.sort(key=lambda r: (r[0], r[1]))
    return out


def run(input_path: str | Path, output_path: str | Path, feedback_path: str | Path | None = None,
        config: MonitorConfig | None = None, progress: Callable[[int], None] | None = None
        ) -> ReplayStats:
    """Replay interactions (and feedback) through per-model monitors; write drift events."""
    t0 = time.perf_counter()
    stats = ReplayStats()
    reasons: Counter[str] = Counter()
    models = _Models(config or MonitorConfig())
    labels = _feedback_rows(Path(feedback_path) if feedback_path else None, stats)
    reasons.update(stats.invalid_reasons)
    li = 0
    valid_ids: dict[str, bool] = {}
    pos = 0
    with open(output_path, "wb") as out, open(input_path, "rb") as fh:
        while True:
            raw = fh.readlines(CHUNK * 256)
            if not raw:
                break
            rows: list[_Row] = []
            for line in raw:
                if not line.strip():
                    continue
                stats.lines += 1
                doc: Any = None
                if len(line) <= schema.MAX_PAYLOAD_BYTES:
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        doc = None
                row: _Row | None = None
                if doc is not None and _fast_ok(doc, valid_ids):
                    row = _Row(0, doc["model_id"], doc)
                else:
                    try:
                        it = schema.parse_interaction(line.rstrip(b"\r\n"))
                    except schema.InvalidEvent as exc:
                        reasons[exc.reason] += 1
                        continue
                    row = _Row(0, it.model_id, {"ts": it.obs.ts, **_obs_doc(it)}, it.obs.embedding)
                ts = row.doc["ts"] if row.doc else 0.0
                while li < len(labels) and labels[li][0] < ts:
                    fb = labels[li][2]
                    rows.append(_Row(pos, fb.model_id, label=fb))
                    pos += 1
                    li += 1
                row.pos = pos
                pos += 1
                rows.append(row)
            _process(rows, models, stats, reasons, out)
            if progress is not None:
                progress(stats.lines)
        tail = [_Row(0, fb.model_id, label=fb) for _, _, fb in labels[li:]]
        for r in tail:
            r.pos = pos
            pos += 1
        _process(tail, models, stats, reasons, out)
    stats.invalid = sum(reasons.values())
    stats.invalid_reasons = dict(reasons)
    stats.models = len(models.monitors)
    stats.seconds = time.perf_counter() - t0
    return stats


def _obs_doc(it: schema.Interaction) -> dict[str, Any]:
    o = it.obs
    return {"event_id": o.event_id, "model_id": it.model_id, "model_version": o.model_version,
            "latency_ms": o.latency_ms, "output_tokens": o.output_tokens,
            "refusal": o.refusal, "feedback": o.feedback, "correct": o.correct}


def _process(rows: list[_Row], models: _Models, stats: ReplayStats, reasons: Counter[str],
             out: BinaryIO) -> None:
    """Run one chunk of the merged stream through the monitors, write its events."""
    by_model: dict[str, list[_Row]] = {}
    for r in rows:
        by_model.setdefault(r.model_id, []).append(r)
    found: list[tuple[int, str, Finding]] = []
    for model_id, mrows in by_model.items():
        models.get(model_id)
        start = 0
        seen = models.versions[model_id]
        for k, r in enumerate(mrows):
            mv = r.doc.get("model_version") if r.doc is not None else None
            if mv is not None and mv not in seen:
                seen.add(mv)
                if k > start:
                    found += _run_model(models, model_id, mrows[start:k], stats, reasons)
                start = k
                mon = models.get(model_id)
                if mon.model_version is not None:
                    mon.deploy(mv)
                else:
                    mon.model_version = mv
        found += _run_model(models, model_id, mrows[start:], stats, reasons)
    found.sort(key=lambda f: f[0])
    if found:
        out.write(b"".join(orjson.dumps(drift_event(mid, f)) + b"\n" for _, mid, f in found))
        stats.drift_events += len(found)


def _run_model(models: _Models, model_id: str, rows: list[_Row], stats: ReplayStats,
               reasons: Counter[str]) -> list[tuple[int, str, Finding]]:
    if not rows:
        return []
    mon = models.get(model_id)
    dim = models.dims.get(model_id, 0)
    keep: list[_Row] = []
    emb_rows: list[int] = []
    embs: list[Any] = []
    for r in rows:
        d = r.doc
        if d is not None:
            e = r.emb if r.emb is not None else d.get("embedding")
            if e is not None:
                n = len(e)
                if dim == 0:
                    dim = models.dims[model_id] = n
                if n != dim:
                    reasons["embedding_dim_changed"] += 1
                    continue
                emb_rows.append(len(keep))
                embs.append(e)
        keep.append(r)
    emb = None
    if embs:
        try:
            emb = np.array(embs, dtype=np.float32)
        except (TypeError, ValueError):
            emb = None
        if emb is None or emb.ndim != 2 or not np.isfinite(emb).all():
            # Rare: re-check each vector with the contract's own rules.
            return _run_model_slow(models, model_id, keep, stats, reasons)
    n = len(keep)
    interactions = sum(1 for r in keep if r.doc is not None)
    stats.interactions += interactions
    stats.feedback += n - interactions

    def col(name: str) -> np.ndarray:
        vals = [(r.doc.get(name) if r.doc is not None else
                 getattr(r.label, name, None) if name in ("correct", "feedback") else None)
                for r in keep]
        return np.array(vals, dtype=np.float64)

    ids = [(r.doc["event_id"] if r.doc is not None else r.label.event_id)  # type: ignore[union-attr]
           for r in keep]
    ts = np.array([(r.doc["ts"] if r.doc is not None else r.label.ts)  # type: ignore[union-attr]
                   for r in keep], dtype=np.float64)
    findings = mon.observe_columns(
        ids, ts, latency_ms=col("latency_ms"), output_tokens=col("output_tokens"),
        refusal=col("refusal"), feedback=col("feedback"), correct=col("correct"),
        embeddings=emb, embedding_rows=np.array(emb_rows, dtype=np.int64),
        interactions=interactions)
    if not findings:
        return []
    where = {i: r.pos for i, r in zip(ids, keep, strict=True)}
    return [(where[f.event_id], model_id, f) for f in findings]


def _run_model_slow(models: _Models, model_id: str, rows: list[_Row], stats: ReplayStats,
                    reasons: Counter[str]) -> list[tuple[int, str, Finding]]:
    """Re-validate embeddings one by one (only when a chunk's fast conversion failed)."""
    keep: list[_Row] = []
    for r in rows:
        if r.doc is not None and r.emb is None and r.doc.get("embedding") is not None:
            try:
                r.emb = schema._embedding({"embedding": r.doc["embedding"]})
            except schema.InvalidEvent as exc:
                reasons[exc.reason] += 1
                continue
        keep.append(r)
    for r in keep:
        if r.emb is not None and r.doc is not None:
            r.doc = {k: v for k, v in r.doc.items() if k != "embedding"}
    return _run_model(models, model_id, keep, stats, reasons) if keep else []
