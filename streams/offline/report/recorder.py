"""What the monitors looked like while they ran, for a report: ``replay`` samples every
model's signals as it feeds them, and marks each detection at its interaction.

A segmented model's segments are sampled too, on the model's interaction index, each as
a chart group of its own named ``MODEL [key=value]`` (:func:`chart_name`); the report
shows those of segments that raised a detection (a segment's drift events land there,
with the model-level attribution on the model's own charts)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from driftline.detectors import ModelMonitor, SignalStats
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.segmented import SegmentedMonitor
from driftline.detectors.signal import EWMA_WEIGHT
from driftline.streams.offline.report.model import Report, Segment, SignalTrace

# The band: where the displayed value (the detectors' EWMA of the signal, ``current``)
# stays with 99.7% probability while the reference holds: the reference mean +- 3 standard
# deviations of an EWMA of independent draws from it, sd * sqrt(w / (2 - w)).
BAND_SDS = 3.0
_EWMA_SD = math.sqrt(EWMA_WEIGHT / (2.0 - EWMA_WEIGHT))

Band = tuple[float, float, float]


def chart_name(model_id: str, segment: Mapping[str, str] | None) -> str:
    """The report's name of a model's chart group, or of one of its segments'."""
    if not segment:
        return model_id
    return f"{model_id} [" + ", ".join(f"{k}={v}" for k, v in segment.items()) + "]"


def reference_band(signal: object, stats: SignalStats) -> Band | None:
    """(center, low, high) of the reference in force; None during a warm-up (while a
    signal relearns after an alarm, the reference that alarmed is still in force).

    Scalar signals (latency, output length): the mean and SD of the reference sample.
    Rates (refusals, negative feedback, errors) and the embedding's share of novel traffic:
    the reference rate p and sqrt(p (1 - p)).
    """
    if stats.phase == "warmup":
        return None
    if isinstance(signal, ScalarSignal) and signal.reference.size:
        ref = signal.reference
        mean, sd = float(ref.mean()), float(ref.std())
    else:
        mean = float(stats.baseline)
        if not 0.0 <= mean <= 1.0:
            return None
        sd = math.sqrt(mean * (1.0 - mean))
    half = BAND_SDS * sd * _EWMA_SD
    return mean, max(mean - half, 0.0), mean + half


class SeriesRecorder:
    """Collects what a report draws while monitors run.

    ``sample`` records each signal's current value, phase and reference band against the
    model's interaction index (call it after feeding a model a run of interactions);
    ``detection`` records a drift event at the index of its triggering interaction.
    """

    def __init__(self) -> None:
        # model -> signal -> [(x, current, band or None while warming up)]
        self.samples: dict[str, dict[str, list[tuple[float, float, Band | None]]]] = {}
        self.detections: list[dict[str, Any]] = []
        self.segment_charts: set[str] = set()

    def sample(self, model_id: str, index: int,
               monitor: ModelMonitor | SegmentedMonitor) -> None:
        self._sample(model_id, index, monitor.stats(), monitor.signals)
        if isinstance(monitor, SegmentedMonitor):
            for seg in monitor.all_segments():
                name = chart_name(model_id, {seg.key: seg.value})
                self.segment_charts.add(name)
                self._sample(name, index, seg.monitor.stats(), seg.monitor.signals)

    def _sample(self, chart: str, index: int, stats: Mapping[str, SignalStats],
                signals: Mapping[str, Any]) -> None:
        sigs = self.samples.setdefault(chart, {})
        for name, st in stats.items():
            band = reference_band(signals[name], st)
            sigs.setdefault(name, []).append((float(index), float(st.current), band))

    def detection(self, event: Mapping[str, Any], index: int) -> None:
        """A drift event at ``index``; a segment's on its segment's charts."""
        chart = chart_name(str(event.get("model_id")), event.get("segment"))
        self.detections.append({**event, "model_id": chart, "x": float(index)})

    def report(self, injected: Sequence[Mapping[str, Any]] | None = None, *,
               title: str = "driftline drift report") -> Report:
        signals = {
            model_id: {name: self._trace(model_id, name, samples)
                       for name, samples in sigs.items() if _has_values(samples)}
            for model_id, sigs in self.samples.items()
            if model_id not in self.segment_charts
            or any(d.get("model_id") == model_id for d in self.detections)}
        return Report(signals, list(self.detections),
                      None if injected is None else [dict(t) for t in injected], title)

    def write(self, path: str | Path, injected: Sequence[Mapping[str, Any]] | None = None,
              *, title: str = "driftline drift report") -> Path:
        return self.report(injected, title=title).write(path)

    def _trace(self, model_id: str, signal: str,
               samples: list[tuple[float, float, Band | None]]) -> SignalTrace:
        """Each reference over the stretch it was in force; warm-ups in between."""
        alarms = sorted(d["x"] for d in self.detections
                        if d.get("model_id") == model_id and d.get("signal") == signal)
        trace = SignalTrace(points=[(x, v) for x, v, _ in samples if math.isfinite(v)])
        prev_x = 0.0
        band: Band | None = None
        since = 0.0  # where the current band, or the current warm-up, began
        for x, _, b in samples:
            if b != band:
                # The change happened in (prev_x, x]: a re-baseline at its alarm.
                cut = max([a for a in alarms if prev_x < a <= x], default=x)
                if band is not None:
                    trace.baselines.append(Segment(since, cut, *band))
                elif since < cut:
                    trace.warmups.append((since, cut))
                band, since = b, cut
            prev_x = x
        if band is not None:
            trace.baselines.append(Segment(since, prev_x, *band))
        elif since < prev_x:
            trace.warmups.append((since, prev_x))
        return trace


def _has_values(samples: list[tuple[float, float, Band | None]]) -> bool:
    return any(math.isfinite(v) for _, v, _ in samples)
