"""Per-model monitor: learns a reference from a warm-up, then watches every signal.

The signals are the catalogue's (:mod:`driftline.detectors.catalogue`); each signal's
false-alarm budget is split among its detectors:

======================== ========= ====================================================
signal                   kind      detectors
======================== ========= ====================================================
latency                  behavior  CUSUM mean up/down, spread up/down (normal scores,
                                   prewhitened, by time of day)
output_length            behavior  same, on output_tokens
refusal_rate             behavior  Bernoulli CUSUM up/down
negative_feedback_rate   behavior  Bernoulli CUSUM up/down on feedback == -1
error_rate               accuracy  Bernoulli CUSUM up on correct == false
embedding                embedding novelty (Bernoulli on distance to k centroids),
                                   distance mean CUSUM
======================== ========= ====================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from driftline.detectors import catalogue, state
from driftline.detectors.catalogue import MonitorConfig
from driftline.detectors.embedding import EmbeddingSignal
from driftline.detectors.season import SeasonalProfile
from driftline.detectors.signal import Signal
from driftline.detectors.types import Finding, InvalidValue, Observation, SignalStats

# The target is an upper bound: aim 20% below it to absorb the Markov chain's
# discretisation and the quadrature over estimation error (costs < 1 event of
# delay at +1 SD, ~2 at +0.5 SD).
CALIBRATION_MARGIN = 0.8


class ModelMonitor:
    """All detectors of one model.

    >>> import random
    >>> rng = random.Random(1)
    >>> m = ModelMonitor("m1", MonitorConfig(warmup=2000))
    >>> obs = [Observation(f"e{i}", float(i), latency_ms=rng.lognormvariate(5 + 0.4 * (i >= 5000),
    ...                                                                 0.4)) for i in range(6000)]
    >>> [(f.signal, f.detector, f.event_id) for f in m.observe_many(obs)]
    [('latency', 'cusum_mean_up', 'e5026')]
    >>> m.phase
    'monitoring'
    """

    def __init__(self, model_id: str, config: MonitorConfig | None = None,
                 model_version: str | None = None) -> None:
        self.model_id = model_id
        self.config = config or MonitorConfig()
        self.model_version = model_version
        c = self.config
        # Seasonal profiles outlive references (and deploys): the cycle is the traffic's.
        self.seasons: dict[str, SeasonalProfile] = {}
        if c.season_period_s > 0:
            self.seasons = {s.name: SeasonalProfile(c.season_period_s, c.season_bins)
                            for s in catalogue.SIGNALS if s.seasonal}
        self._reset_reference()

    def _reset_reference(self) -> None:
        fa = self.config.target_false_alarm_rate * CALIBRATION_MARGIN
        self._events = 0
        self.specs = list(catalogue.SIGNALS)
        self._fits_seen: dict[str, int] = {}
        self.signals: dict[str, Signal] = {
            s.name: s.build(self.config, fa, self.seasons.get(s.name)) for s in self.specs}

    @property
    def phase(self) -> str:
        return "warmup" if self._events < self.config.warmup else "monitoring"

    def deploy(self, model_version: str | None) -> None:
        """Start a fresh reference for a newly deployed version.

        A notice of the version the monitor already watches (its interactions named it
        first) keeps the reference: Kafka orders no two topics, so the notice of the
        live version can arrive after thousands of its interactions, and a reset then
        would learn a new reference from wherever the stream is, a drift included."""
        if model_version is not None and model_version == self.model_version:
            return
        self.model_version = model_version
        self._reset_reference()

    def stats(self) -> dict[str, SignalStats]:
        """Per signal: the statistic closest to its threshold, baseline and current value."""
        return {name: sig.stats() for name, sig in self.signals.items()}

    # -- observing -----------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[Finding]:
        """Feed one interaction."""
        return self.observe_many([obs])

    def observe_many(self, batch: Sequence[Observation]) -> list[Finding]:
        """Feed interactions in stream order (the fast path: vectorised per signal)."""
        if not batch:
            return []
        cols: dict[str, Any] = {}
        for spec in self.specs:
            if not spec.columnar:
                continue
            vals = [getattr(o, spec.field, None) for o in batch]
            cols[spec.field] = _column(spec, vals)
        rows = [i for i, o in enumerate(batch) if o.embedding is not None]
        emb = None
        if rows:
            vecs = [np.asarray(batch[i].embedding, dtype=np.float32) for i in rows]
            if len({v.shape for v in vecs}) != 1 or vecs[0].ndim != 1:
                raise InvalidValue("embedding: vectors of one batch differ in shape")
            emb = np.stack(vecs)
        version = next((o.model_version for o in batch if o.model_version is not None), None)
        return self.observe_columns(
            [o.event_id for o in batch], np.array([o.ts for o in batch], dtype=np.float64),
            embeddings=emb, embedding_rows=np.array(rows, dtype=np.int64),
            model_version=version, **cols)

    def observe_label(self, event_id: str, ts: float, correct: bool | None = None,
                      feedback: int | None = None) -> list[Finding]:
        """Feed a delayed label or rating for an earlier interaction."""
        return self.observe_columns(
            [event_id], np.array([ts], dtype=np.float64),
            correct=_column(catalogue.by_name("error_rate"), [correct]),
            feedback=_column(catalogue.by_name("negative_feedback_rate"), [feedback]),
            interactions=0)

    def learn_history(self, ts: np.ndarray, **fields: np.ndarray | None) -> int:
        """Seed the seasonal profiles from interactions older than any observed (the
        store's rows or a topic's retained history, in time order), so that a fresh
        deploy knows its time-of-day (or -week) shape at once instead of after two
        periods. Nothing is monitored or alarmed; the references are not touched.

        ``fields`` are columns as for :meth:`observe_columns`. Returns the values taken
        in. Raises ``ValueError`` when ``ts`` is not ascending or starts before values
        already seen (history is the past)."""
        ts = np.asarray(ts, dtype=np.float64)
        if ts.shape[0] > 1 and np.any(np.diff(ts) < 0):
            raise ValueError("history: ts must be ascending")
        taken = 0
        for spec in self.specs:
            season = self.seasons.get(spec.name)
            col = fields.get(spec.field)
            if season is None or col is None:
                continue
            col = np.asarray(col, dtype=np.float64)
            if col.shape != ts.shape:
                raise InvalidValue(f"{spec.name}: column of shape {col.shape} for "
                                   f"{ts.shape[0]} timestamps")
            rows = np.flatnonzero(~np.isnan(col))
            if rows.size and ts[rows[0]] < season.clock:
                raise ValueError(f"history: {spec.name} has values up to ts={season.clock:g}; "
                                 "history must come before them")
            vals = col[rows]
            _check(spec, vals)
            season.learn(spec.values(vals), ts[rows])
            taken += int(rows.size)
        return taken

    def observe_columns(self, event_ids: Sequence[str], ts: np.ndarray, *,
                        embeddings: np.ndarray | None = None,
                        embedding_rows: np.ndarray | None = None,
                        model_version: str | None = None,
                        interactions: int | None = None,
                        **fields: np.ndarray | None) -> list[Finding]:
        """Feed a batch as columns: one row per event, NaN where a signal is absent.

        ``fields`` are the catalogue's fields (``latency_ms=``, ``output_tokens=``,
        ``refusal=``, ``feedback=``, ``correct=``...): booleans as 1.0/0.0, feedback
        -1/0/1. ``embeddings`` holds the vectors of rows ``embedding_rows`` (ascending).
        ``interactions`` counts rows that are interactions (labels are not). The whole
        batch is validated before any state changes.
        """
        n = len(event_ids)
        known = {s.field for s in self.specs}
        unknown = set(fields) - known
        if unknown:
            raise TypeError(f"unknown signal fields {sorted(unknown)}; the catalogue reads "
                            f"{sorted(known)}")
        ts = np.asarray(ts, dtype=np.float64)
        inputs: list[tuple[int, str, np.ndarray, np.ndarray]] = []
        for order, spec in enumerate(self.specs):
            if not spec.columnar:
                continue
            col = fields.get(spec.field)
            if col is None:
                continue
            col = np.asarray(col, dtype=np.float64)
            if col.shape != (n,):
                raise InvalidValue(f"{spec.name}: column of shape {col.shape} for {n} events")
            rows = np.flatnonzero(~np.isnan(col))
            vals = col[rows]
            _check(spec, vals)
            inputs.append((order, spec.name, rows, spec.values(vals)))
        if embeddings is not None and embeddings.shape[0]:
            sig = self.signals["embedding"]
            assert isinstance(sig, EmbeddingSignal)
            sig.check(embeddings)
            rows = (np.asarray(embedding_rows, dtype=np.int64) if embedding_rows is not None
                    else np.arange(n))
            if rows.shape[0] != embeddings.shape[0]:
                raise InvalidValue("embedding: embedding_rows and embeddings differ in length")
            inputs.append((len(self.specs), "embedding", rows, embeddings))
        if model_version is not None and self.model_version is None:
            self.model_version = model_version
        self._events += n if interactions is None else interactions
        found: list[tuple[int, int, Finding]] = []
        for order, name, rows, vals in inputs:
            sig = self.signals[name]
            if isinstance(sig, EmbeddingSignal):  # it names its exemplars
                sig.names = _Rows(event_ids, rows)
            try:
                alarms = sig.update(vals, ts[rows])
            finally:
                if isinstance(sig, EmbeddingSignal):
                    sig.names = None
            for alarm in alarms:
                row = int(rows[alarm.index])
                found.append((row, order, Finding(
                    kind=sig.kind, signal=name, detector=alarm.detector,
                    baseline=_finite(alarm.baseline), current=_finite(alarm.current),
                    severity=_finite(alarm.severity), event_id=event_ids[row],
                    ts=float(ts[row]), model_version=self.model_version, window=alarm.run,
                    explanation=_explained(alarm.explanation, rows, event_ids))))
        found.sort(key=lambda f: (f[0], f[1]))
        return [f for _, _, f in found]

    def warnings(self) -> list[str]:
        """What the references in force could not estimate well (see ``Signal.warnings``)."""
        return [w for sig in self.signals.values() for w in sig.warnings()]

    def new_warnings(self) -> list[tuple[str, str]]:
        """(signal, warning) of the references learned since the last call that could not
        estimate something well: what the worker logs and counts once per reference."""
        out: list[tuple[str, str]] = []
        for name, sig in self.signals.items():
            if self._fits_seen.get(name, 0) != sig.fits:
                self._fits_seen[name] = sig.fits
                out.extend((name, w) for w in sig.warnings())
        return out

    # -- state -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Versioned, pickle-free bytes (see :mod:`detectors.state`)."""
        return state.encode(self.snapshot_fields())

    def snapshot_fields(self) -> dict[str, state.Value]:
        """The fields :meth:`snapshot` encodes (a changelog may store big ones apart)."""
        fields: dict[str, state.Value] = {
            "model_id": self.model_id, "model_version": self.model_version,
            "events": self._events,
        }
        for f in dataclasses.fields(MonitorConfig):
            v = getattr(self.config, f.name)
            fields[f"cfg.{f.name}"] = int(v) if isinstance(v, bool) else v
        for name, sig in self.signals.items():
            fields.update(sig.dump(name))
        return fields

    @classmethod
    def restore(cls, data: bytes) -> ModelMonitor:
        """Rebuild a monitor from :meth:`snapshot` bytes; continues exactly where it was."""
        return cls.restore_fields(state.decode(bytes(data)))

    @classmethod
    def restore_fields(cls, fields: dict[str, state.Value]) -> ModelMonitor:
        """:meth:`restore` from the decoded fields (:meth:`snapshot_fields`)."""
        r = state.Reader(fields)
        kw: dict[str, object] = {}
        for f in dataclasses.fields(MonitorConfig):
            key = f"cfg.{f.name}"
            if not r.has(key):
                continue  # (a snapshot of an earlier build: this build's default)
            if f.type in ("int", int):
                kw[f.name] = r.integer(key)
            elif f.type in ("bool", bool):
                kw[f.name] = bool(r.integer(key))
            elif f.type in ("str", str):
                kw[f.name] = r.text(key)
            else:
                kw[f.name] = r.real(key)
        model_id = r.text("model_id")
        if model_id is None:
            raise ValueError("monitor snapshot lacks model_id")
        self = cls(model_id, MonitorConfig(**kw), r.text("model_version"))  # type: ignore[arg-type]
        self._events = r.integer("events")
        for name, sig in self.signals.items():
            sig.load(r.sub(name))
        return self


class _Rows(Sequence[str]):
    """The event ids of a signal's values (``rows`` of the batch), looked up on demand."""

    def __init__(self, event_ids: Sequence[str], rows: np.ndarray) -> None:
        self.ids, self.rows = event_ids, rows

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, i: Any) -> Any:
        return self.ids[int(self.rows[i])]


def _explained(explanation: dict[str, Any] | None, rows: np.ndarray,
               event_ids: Sequence[str]) -> dict[str, Any] | None:
    """A signal's explanation with its exemplar (an index into the signal's values) as the
    event id of that interaction."""
    if explanation is None or "exemplar_index" not in explanation:
        return explanation
    out = dict(explanation)
    out["exemplar_event_id"] = event_ids[int(rows[int(out.pop("exemplar_index"))])]
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _check(spec: catalogue.SignalSpec, vals: np.ndarray) -> None:
    if spec.check == catalogue.NONNEG:
        bad = ~((vals >= 0) & (vals < math.inf))
    elif spec.check == catalogue.BOOL:
        bad = (vals != 0) & (vals != 1)
    elif spec.check == catalogue.FEEDBACK:
        bad = (vals != -1) & (vals != 0) & (vals != 1)
    else:
        bad = ~np.isfinite(vals)
    if bad.any():
        raise InvalidValue(f"{spec.name}: value {vals[bad][0]!r} is not {spec.check}")


def _column(spec: catalogue.SignalSpec, vals: list[object]) -> np.ndarray:
    """A column of Python values (None: absent) as floats, type-checked."""
    if spec.check == catalogue.BOOL:
        if any(v is not None and not isinstance(v, bool | np.bool_) for v in vals):
            raise InvalidValue(f"{spec.field}: values must be true, false or None")
        return np.array([math.nan if v is None else float(v) for v in vals])  # type: ignore[arg-type]
    if spec.check == catalogue.FEEDBACK:
        out = np.full(len(vals), math.nan)
        for i, v in enumerate(vals):
            if v is None:
                continue
            if isinstance(v, bool) or v not in (-1, 0, 1):
                raise InvalidValue(f"{spec.field}: value {v!r} is not -1, 0 or 1")
            out[i] = float(v)  # type: ignore[arg-type]
        return out
    missing = np.array([v is None for v in vals])
    try:
        col = np.array([math.nan if v is None else v for v in vals], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidValue(f"{spec.field}: values must be numbers") from None
    if (np.isnan(col) & ~missing).any():
        raise InvalidValue(f"{spec.field}: NaN is not a valid value")
    return col
