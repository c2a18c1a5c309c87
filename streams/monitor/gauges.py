"""The per-model signal gauges, read from the monitors when ``/metrics`` is scraped.

Reading a model's detectors is not free: it is done once a scrape, for the models that
changed since the last one, rather than at every checkpoint for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.segments import forget_segment_gauges, set_segment_gauges


class ModelGauges:
    """Refreshes ``metrics.signals`` (registered once) from ``processor``'s monitors, and
    a segmented model's segment gauges (registered after ``signals``, so they are
    collected after this refresh in the same scrape)."""

    def __init__(self, processor: MonitorProcessor, metrics: Metrics) -> None:
        self.processor = processor
        self.metrics = metrics
        self.stale: set[str] = set()
        metrics.signals.refresh = self.refresh

    def mark(self, models: Iterable[str]) -> None:
        """These models changed (or left this worker): read them at the next scrape."""
        self.stale.update(models)

    def refresh(self) -> None:
        stale, self.stale = self.stale, set()
        models = self.processor.models
        for model_id in stale:
            st = models.get(model_id)
            if st is None:
                self.metrics.signals.forget(model_id)
                forget_segment_gauges(self.metrics, model_id)
                continue
            for signal, s in st.monitor.stats().items():
                self.metrics.observe_signal(model_id, signal, statistic=s.statistic,
                                            threshold=s.threshold, baseline=s.baseline,
                                            current=s.current, kind=s.kind)
            set_segment_gauges(self.metrics, model_id, st.monitor)
        phases: dict[str, int] = {"warmup": 0, "monitoring": 0}
        for st in models.values():
            phases[st.monitor.phase] = phases.get(st.monitor.phase, 0) + 1
        for phase, n in phases.items():
            self.metrics.monitored_models.labels(phase).set(n)
