"""Prometheus metrics of the worker (one ``driftline_`` prefix, base units, bounded labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streams import __version__

OTHER = "other"


class ModelLabels:
    """Caps the ``model`` label: the first ``limit`` models seen keep their id, the rest
    share ``other``. ``model_id`` comes from untrusted input; an uncapped label would let
    any producer blow up Prometheus' series count."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, model_id: str) -> str:
        if model_id in self._known:
            return model_id
        if len(self._known) < self.limit:
            self._known.add(model_id)
            return model_id
        return OTHER


class Metrics:
    """All worker metrics, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry | None = None, max_models: int = 100) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.model = ModelLabels(max_models)
        self.info = Info("driftline_build", "driftline build information", registry=r)
        self.info.info({"version": __version__})
        self.interactions = Counter(
            "driftline_interactions_processed_total",
            "Valid interactions fed to the monitors", ["model"], registry=r)
        self.invalid = Counter(
            "driftline_invalid_messages_total",
            "Messages rejected to the dead-letter topic, by reason and source topic",
            ["reason", "topic"], registry=r)
        self.drift_events = Counter(
            "driftline_drift_events_total", "Drift events published",
            ["model", "kind", "signal", "detector"], registry=r)
        self.detector_statistic = Gauge(
            "driftline_detector_statistic", "Current detector statistic per model and signal",
            ["model", "signal"], registry=r)
        self.detector_threshold = Gauge(
            "driftline_detector_threshold", "Alarm threshold of the detector statistic",
            ["model", "signal"], registry=r)
        self.signal_baseline = Gauge(
            "driftline_signal_baseline", "Reference value of the signal (native units)",
            ["model", "signal"], registry=r)
        self.signal_current = Gauge(
            "driftline_signal_current", "Recent value of the signal (native units)",
            ["model", "signal"], registry=r)
        self.processing_seconds = Histogram(
            "driftline_batch_processing_seconds", "Time to process one batch of interactions",
            registry=r, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5, 1.0, 2.5))
        self.detection_lag = Histogram(
            "driftline_detection_lag_seconds",
            "From the triggering interaction's timestamp to the drift event's publication",
            registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.retrain_decisions = Counter(
            "driftline_retrain_decisions_total", "Retrain policy decisions",
            ["action", "outcome"], registry=r)
        self.retrain_requests = Counter(
            "driftline_retrain_requests_total", "Retrain requests published", ["action"],
            registry=r)
        self.store_writes = Counter(
            "driftline_store_writes_total", "Rows written to the store", ["table"], registry=r)
        self.store_errors = Counter(
            "driftline_store_errors_total", "Failed store write attempts", ["table"], registry=r)
