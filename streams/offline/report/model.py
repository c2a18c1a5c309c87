"""What a report shows, independent of how it is drawn: per model and signal, the values,
each reference (baseline band) over the stretch it was in force, the warm-ups, the
detections and the injected drift, scored against each other.

``x`` is one convention for the whole report: an interaction index (what ``replay``
records) or epoch seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from driftline.streams.metrics import signal_kind
from driftline.streams.offline.report.html import render, render_body
from driftline.streams.offline.report.png import render_png
from driftline.streams.offline.report.view import Point, Score, Segment, SignalTrace

__all__ = ["Point", "Report", "Score", "Segment", "SignalTrace", "from_constant_baselines"]


@dataclass
class Report:
    """A drift report. ``injected`` is None when the ground truth is unknown (a replay
    of real traffic), ``[]`` when it is known that nothing was injected."""

    signals: dict[str, dict[str, SignalTrace]]
    detections: list[dict[str, Any]]
    injected: list[dict[str, Any]] | None = None
    title: str = "driftline drift report"

    # -- reading -------------------------------------------------------------------------
    @property
    def timed(self) -> bool:
        """Is ``x`` epoch seconds (else an interaction index)?"""
        firsts = [t.points[0][0] for sigs in self.signals.values() for t in sigs.values()
                  if t.points]
        return bool(firsts) and min(firsts) > 1e8

    def models(self) -> list[str]:
        return sorted(self.signals)

    def detections_of(self, model_id: str, signal: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.detections if d.get("model_id") == model_id
                and (signal is None or d.get("signal") == signal)]

    def injected_of(self, model_id: str, signal: str | None = None) -> list[dict[str, Any]]:
        """Ground truth of a model (of a chart's signal: ground truth names the signal it
        changed, e.g. ``correct``, the monitor the one it watches, e.g. ``error_rate``:
        matched by name, else by kind)."""
        inj = [t for t in self.injected or [] if t.get("model_id") == model_id]
        if signal is None:
            return inj
        signals = self.signals.get(model_id, {})
        kind = self.kind(model_id, signal)
        return [t for t in inj if t.get("signal") == signal or t.get("signal") is None
                or (t.get("signal") not in signals and t.get("kind") == kind)]

    def kind(self, model_id: str, signal: str) -> str:
        return next((str(d["kind"]) for d in self.detections_of(model_id, signal)
                     if d.get("kind")), signal_kind(signal))

    def x_of(self, d: Mapping[str, Any]) -> float | None:
        """Where a detection goes on the x axis: ``d["x"]``, else (time axis only) its
        ``detected_at``."""
        if d.get("x") is not None:
            return float(d["x"])
        if not self.timed:
            return None
        at = d.get("detected_at")
        if isinstance(at, int | float):
            return float(at)
        if isinstance(at, str):
            return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        return None

    def x_max(self, model_id: str) -> float:
        return max((t.points[-1][0] for t in self.signals.get(model_id, {}).values()
                    if t.points), default=0.0)

    def span(self, t: Mapping[str, Any], x_max: float) -> tuple[float, float] | None:
        """An injected drift's span: ``start_x`` (else ``start``) to ``end_x`` (else
        ``end``, else the end of the series)."""
        start = t.get("start_x", t.get("start"))
        if start is None:
            return None
        end = t.get("end_x", t.get("end"))
        return float(start), float(end) if end is not None else x_max

    def scores(self, model_id: str) -> list[Score]:
        out = []
        for t in self.injected_of(model_id):
            span = self.span(t, self.x_max(model_id))
            if span is None:
                continue
            after = sorted(
                ((x, i, d) for i, d in enumerate(self.detections_of(model_id))
                 if (d.get("signal") == t.get("signal") or d.get("kind") == t.get("kind"))
                 and (x := self.x_of(d)) is not None and x >= span[0]),
                key=lambda e: (e[0], e[1]))
            x, _, d = after[0] if after else (None, 0, None)
            out.append(Score(t, span[0], d, x))
        return out

    def false_alarms(self, model_id: str) -> list[dict[str, Any]]:
        """Detections before any injected drift of the model (with ground truth known)."""
        if self.injected is None:
            return []
        starts = [s[0] for t in self.injected_of(model_id)
                  if (s := self.span(t, self.x_max(model_id)))]
        return [d for d in self.detections_of(model_id)
                if (x := self.x_of(d)) is not None and not any(x >= s for s in starts)]

    # -- writing -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Everything the report says, as JSON-able data (``--report summary.json``)."""
        models: dict[str, Any] = {}
        totals = {"models": len(self.signals), "detections": len(self.detections),
                  "injected": 0, "detected": 0, "missed": 0, "false_alarms": 0}
        for model_id in self.models():
            scores = self.scores(model_id)
            fas = self.false_alarms(model_id)
            totals["injected"] += len(scores)
            totals["detected"] += sum(s.detection is not None for s in scores)
            totals["missed"] += sum(s.detection is None for s in scores)
            totals["false_alarms"] += len(fas)
            models[model_id] = {
                "signals": {
                    signal: {
                        "kind": self.kind(model_id, signal),
                        "points": len(t.points),
                        "last": _num(t.points[-1][1]) if t.points else None,
                        "warmups": [[_num(a), _num(b)] for a, b in t.warmups],
                        "baselines": [{"from": _num(s.start), "to": _num(s.end),
                                       "center": _num(s.center), "low": _num(s.low),
                                       "high": _num(s.high)} for s in t.baselines],
                    } for signal, t in sorted(self.signals[model_id].items())},
                "detections": [_detection(d, self.x_of(d)) for d in self.detections_of(model_id)],
                "injected": [{"kind": s.injected.get("kind"), "signal": s.injected.get("signal"),
                              "magnitude": s.injected.get("magnitude"), "start": _num(s.start),
                              "detected": s.detection is not None,
                              "detected_x": _num(s.detected_x),
                              "delay": _num(s.delay),
                              "detector": s.detection.get("detector") if s.detection else None}
                             for s in scores],
                "false_alarms": len(fas) if self.injected is not None else None,
            }
        return {"title": self.title, "x_axis": "time" if self.timed else "interaction index",
                "ground_truth": self.injected is not None,
                "drift_found": bool(self.detections), "totals": totals, "models": models}

    def to_html(self) -> str:
        return render(self)

    def _repr_html_(self) -> str:
        """The report inline in a notebook (Jupyter calls this)."""
        return render_body(self)

    def to_png(self, path: str | Path) -> Path:
        return render_png(self, path)

    def write(self, path: str | Path) -> Path:
        """Write ``path``: PNG for ``.png``, the JSON summary for ``.json``, else HTML."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".png":
            return self.to_png(path)
        if suffix == ".json":
            path.write_bytes(orjson.dumps(self.summary(), option=orjson.OPT_INDENT_2))
        else:
            path.write_text(self.to_html(), encoding="utf-8")
        return path


def _num(v: float | None) -> float | None:
    """A JSON number (None for missing or non-finite)."""
    if v is None or not math.isfinite(v):
        return None
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)


def _detection(d: Mapping[str, Any], x: float | None) -> dict[str, Any]:
    keys = ("drift_id", "kind", "signal", "detector", "detected_at", "trigger_event_id",
            "baseline", "current", "severity", "model_version")
    return {"x": _num(x), **{k: d[k] for k in keys if k in d}}


def from_constant_baselines(
    series: Mapping[str, Mapping[str, Sequence[Point]]],
    baselines: Mapping[str, Mapping[str, Any]],
    detections: Sequence[Mapping[str, Any]],
    injected: Sequence[Mapping[str, Any]] | None = None,
    *, title: str = "driftline drift report",
) -> Report:
    """A report from series and one baseline per signal, taken to hold over the whole
    series: ``center``, ``(low, high)``, ``(center, low, high)`` or a list of
    :class:`Segment`."""
    signals: dict[str, dict[str, SignalTrace]] = {}
    for model_id, sigs in series.items():
        for signal, pts in sigs.items():
            clean = [(float(x), float(y)) for x, y in pts]
            base = baselines.get(model_id, {}).get(signal)
            trace = SignalTrace(points=clean)
            if isinstance(base, list):
                trace.baselines = list(base)
            elif base is not None and clean:
                c, lo, hi = _band(base)
                trace.baselines = [Segment(clean[0][0], clean[-1][0], c, lo, hi)]
            signals.setdefault(model_id, {})[signal] = trace
    return Report(signals, [dict(d) for d in detections],
                  None if injected is None else [dict(t) for t in injected], title)


def _band(base: Any) -> tuple[float, float, float]:
    if isinstance(base, int | float):
        return float(base), float(base), float(base)
    if len(base) == 2:
        low, high = float(base[0]), float(base[1])
        return (low + high) / 2, low, high
    return float(base[0]), float(base[1]), float(base[2])
