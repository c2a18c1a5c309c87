"""The monitor's segment hook: each interaction's segment values into a segmented model's
monitor (``detectors.segmented``), its segments' numbers into the metrics.

The processor and replay call these; the segmentation itself (which values get a
monitor, the shared false-alarm budget, attribution) is the detectors'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from driftline.detectors import Finding, ModelMonitor, MonitorConfig
from driftline.detectors.segmented import SegmentedMonitor
from driftline.detectors.segments import SegmentPlan, values_of
from driftline.streams.metrics import OTHER, Metrics


def segment_configs(plan: SegmentPlan | None, config: MonitorConfig) -> list[MonitorConfig]:
    """The monitor configurations segmented models use (their shares of the budget), to
    calibrate their thresholds before the first warm-up ends."""
    if not plan:
        return []
    alpha, w = config.target_false_alarm_rate, plan.model_share
    counts = {len(plan.default)} | {len(keys) for _, keys in plan.per_model}
    rates = {alpha * w} | {alpha * (1.0 - w) / n for n in counts if n}
    return [dataclasses.replace(config, target_false_alarm_rate=r) for r in sorted(rates)]


def segment_columns(monitor: ModelMonitor | SegmentedMonitor, records: Sequence[Any]
                    ) -> dict[str, list[str | None]] | None:
    """Each record's value of every key the model is segmented by (None: unsegmented)."""
    if not isinstance(monitor, SegmentedMonitor):
        return None
    return {key: values_of(records, key) for key in monitor.segments.keys}


def segment_label(metrics: Metrics, model_id: str, segment: Iterable[tuple[str, str]]
                  ) -> str | None:
    """The capped ``segment`` label of a segment (None beyond the model label cap)."""
    model = metrics.model(model_id)
    if model == OTHER:
        return None
    key, value = next(iter(segment))
    return metrics.segment(model, key, value)


def count_routed(metrics: Metrics, model_id: str,
                 monitor: ModelMonitor | SegmentedMonitor) -> None:
    """Add the interactions routed to each segment since the last call to its counter."""
    if not isinstance(monitor, SegmentedMonitor):
        return
    model = metrics.model(model_id)
    for (key, value), n in monitor.take_routed().items():
        if model != OTHER:
            metrics.segment_interactions.labels(model, metrics.segment(model, key, value)
                                                ).inc(n)


def count_finding(metrics: Metrics, model_id: str, f: Finding) -> None:
    """A segment's drift event in its counter."""
    if not f.segment:
        return
    label = segment_label(metrics, model_id, f.segment)
    if label is not None:
        metrics.segment_drift_events.labels(metrics.model(model_id), label, f.kind,
                                            f.signal, f.detector).inc()


def set_segment_gauges(metrics: Metrics, model_id: str,
                       monitor: ModelMonitor | SegmentedMonitor) -> None:
    """Set a segmented model's segment gauges; :class:`.gauges.ModelGauges` calls this at
    scrape time for the models that changed, as it sets the model's own."""
    if not isinstance(monitor, SegmentedMonitor):
        return
    model = metrics.model(model_id)
    if model == OTHER:
        return
    mem = monitor.memory()
    metrics.segment_monitors.labels(model).set(mem["monitors"])
    metrics.segment_values.labels(model).set(mem["values_tracked"])
    metrics.segment_bytes.labels(model).set(mem["bytes"])
    for key, value, stats in monitor.segment_stats():
        label = metrics.segment(model, key, value)
        if label == OTHER:
            continue  # (beyond the cap: its gauges would flap between segments)
        for signal, st in stats.items():
            labels = (model, label, st.kind, signal)
            metrics.segment_statistic.labels(*labels).set(st.statistic)
            metrics.segment_threshold.labels(*labels).set(st.threshold)
            metrics.segment_baseline.labels(*labels).set(st.baseline)
            metrics.segment_current.labels(*labels).set(st.current)


def forget_segment_gauges(metrics: Metrics, model_id: str) -> None:
    """Drop a model's segment gauges (its monitor is no longer held here): revoked or
    forgotten, its last values would otherwise be exported as if still current."""
    model = metrics.model(model_id)
    if model == OTHER:
        return
    for gauge in (metrics.segment_statistic, metrics.segment_threshold,
                  metrics.segment_baseline, metrics.segment_current,
                  metrics.segment_monitors, metrics.segment_values, metrics.segment_bytes):
        gauge.remove_by_labels({"model": model})
