"""Prometheus metrics of the worker (one ``driftline_`` prefix, base units, bounded labels).

Every label here has a bounded set of values:

* ``model`` — capped by :class:`ModelLabels` (the first ``max_models`` ids seen; the rest
  share ``other``);
* ``segment`` — ``<key>=<value>`` of a segmented model's segment: at most
  ``keys x (DRIFTLINE_SEGMENT_VALUES + 1)`` per model at a time by construction, and capped
  per model label by :class:`SegmentLabels` (the first ``max_segments`` seen; the rest
  share ``other``);
* ``kind`` — ``embedding | behavior | accuracy`` (``detectors.KINDS``);
* ``signal``, ``detector``, ``action``, ``outcome``, ``table``, ``buffer`` — closed sets
  chosen by driftline's own code, never copied from a payload;
* ``reason`` — ``driftline.streams.ingest.contract.REASONS``; ``topic`` and ``partition``
  — driftline's topics and their configured partitions.

The catalogue, with the alerts and dashboard panels built on it, is in ``docs/runbook.md``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from driftline.detectors import catalogue
from driftline.streams import __version__
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

OTHER = "other"

def signal_kind(signal: str) -> str:
    """The drift kind of a signal, by its name or its input field in the signal catalogue
    (``behavior`` for a name the catalogue does not know, unless its prefix says
    otherwise)."""
    spec = next((s for s in catalogue.SIGNALS if signal in (s.name, s.field)), None)
    if spec is not None:
        return spec.kind
    if signal.startswith("embedding"):
        return "embedding"
    if signal.startswith(("accuracy", "correct", "error", "label")):
        return "accuracy"
    return "behavior"


class ModelLabels:
    """Caps the ``model`` label: the **first** ``limit`` models seen keep their id, the rest
    share ``other``.

    ``model_id`` comes from untrusted input; an uncapped label would let any producer blow
    up Prometheus' series count. "First N" (sticky) rather than "N busiest" because a
    series must keep its identity: evicting a model's label when another gets busier would
    reset its counters and leave its gauges stale, and ranking every id ever seen needs
    memory proportional to the ids. Admission costs O(1) and ``limit`` strings of memory;
    a restart re-admits in arrival order. Size ``limit`` (``DRIFTLINE_MAX_MODEL_LABELS``)
    above the number of real models so that ``other`` only ever holds strays.

    >>> cap = ModelLabels(2)
    >>> [cap(m) for m in ("a", "b", "c", "a")]
    ['a', 'b', 'other', 'a']
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, model_id: str) -> str:
        if model_id in self._known:
            return model_id
        if len(self._known) < self.limit and model_id != OTHER:
            self._known.add(model_id)
            return model_id
        return OTHER

    def __len__(self) -> int:
        return len(self._known)


class SegmentLabels:
    """Caps the ``segment`` label per model label: the first ``limit`` segments seen keep
    their ``key=value``, later ones share ``other`` (a segment evicted and re-admitted, or
    values that churn, would otherwise mint series without end).

    >>> cap = SegmentLabels(2)
    >>> [cap("m", "tenant", v) for v in ("a", "b", "c", "a")]
    ['tenant=a', 'tenant=b', 'other', 'tenant=a']
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: dict[str, set[str]] = {}

    def __call__(self, model: str, key: str, value: str) -> str:
        label = f"{key}={value}"
        known = self._known.setdefault(model, set())
        if label in known:
            return label
        if len(known) < self.limit:
            known.add(label)
            return label
        return OTHER

    def __len__(self) -> int:
        return sum(map(len, self._known.values()))


class SignalGauges(Collector):  # type: ignore[misc]
    """The per-model signal gauges (``{model, kind, signal}``): the detector statistic and
    threshold, the signal's baseline and current value.

    Registered once; values are read at scrape time: :meth:`collect` first calls
    ``refresh`` (the monitor brings the models that changed since the last scrape up to
    date, reading their detectors there rather than at every checkpoint), then yields
    the families. Models beyond the label cap get no gauges (an ``other`` gauge would
    flap between unrelated models).
    """

    FAMILIES = (
        ("driftline_detector_statistic", "Current detector statistic per model and signal"),
        ("driftline_detector_threshold", "Alarm threshold of the detector statistic"),
        ("driftline_signal_baseline", "Reference value of the signal (native units)"),
        ("driftline_signal_current", "Recent value of the signal (native units)"),
    )

    def __init__(self, labels: ModelLabels) -> None:
        self.labels = labels
        self.refresh: Callable[[], None] | None = None
        # (model label, kind, signal) -> [statistic, threshold, baseline, current]
        self._values: dict[tuple[str, str, str], list[float | None]] = {}

    def set(self, model_id: str, signal: str, *, statistic: float | None = None,
            threshold: float | None = None, baseline: float | None = None,
            current: float | None = None, kind: str | None = None) -> None:
        model = self.labels(model_id)
        if model == OTHER:
            return
        row = self._values.setdefault((model, kind or signal_kind(signal), signal),
                                      [None, None, None, None])
        for i, v in enumerate((statistic, threshold, baseline, current)):
            if v is not None:
                row[i] = v

    def forget(self, model_id: str) -> None:
        """Drop a model's gauges (its monitor is no longer held here)."""
        self._values = {k: v for k, v in self._values.items() if k[0] != model_id}

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, doc, labels=["model", "kind", "signal"])
                for name, doc in self.FAMILIES]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.refresh is not None:
            self.refresh()
        families = self.describe()
        for labels, row in self._values.items():
            for family, value in zip(families, row, strict=True):
                if value is not None:
                    family.add_metric(list(labels), value)
        yield from families


_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """All worker metrics, registered on the given registry.

    Attribute -> metric (labels):

    ``info`` driftline_build_info (version, python_version);
    ``interactions`` driftline_interactions_processed_total (model);
    ``invalid`` driftline_invalid_messages_total (reason, topic);
    ``dead_letters`` driftline_dead_letters_published_total (reason, topic);
    ``drift_events`` driftline_drift_events_total (model, kind, signal, detector);
    ``signals`` (a collector, :class:`SignalGauges`) driftline_detector_statistic,
    driftline_detector_threshold, driftline_signal_baseline, driftline_signal_current
    (model, kind, signal);
    ``monitored_models`` driftline_monitored_models (phase); ``models_spilled``
    driftline_models_spilled; ``models_evicted`` driftline_models_evicted_total;
    ``models_refused`` driftline_models_refused_total;
    ``processing_seconds`` driftline_batch_processing_seconds (histogram);
    ``event_age`` driftline_event_age_seconds (histogram: interaction ts -> processed);
    ``detection_lag`` driftline_detection_lag_seconds (histogram: trigger ts -> published);
    ``consumer_lag`` driftline_consumer_lag_messages (topic, partition);
    ``retrain_decisions`` driftline_retrain_decisions_total (action, outcome);
    ``retrain_requests`` driftline_retrain_requests_total (action);
    ``retrain_jobs`` driftline_retrain_jobs_total (action, outcome);
    ``retrain_job_seconds`` driftline_retrain_job_duration_seconds (action; histogram);
    ``store_writes`` / ``store_retries`` / ``store_errors`` driftline_store_writes_total /
    driftline_store_retries_total / driftline_store_errors_total (table);
    ``store_up`` driftline_store_up (backend: postgres, rest, embedded);
    ``buffer_fill`` driftline_buffer_fill_ratio (buffer);
    ``model_labels`` driftline_model_labels / driftline_model_labels_limit;
    ``segment_interactions`` driftline_segment_interactions_processed_total (model, segment);
    ``segment_drift_events`` driftline_segment_drift_events_total (model, segment, kind,
    signal, detector); ``segment_statistic`` / ``segment_threshold`` / ``segment_baseline``
    / ``segment_current`` driftline_segment_detector_statistic / _threshold /
    driftline_segment_signal_baseline / _current (model, segment, kind, signal);
    ``segment_monitors`` driftline_segment_monitors, ``segment_values``
    driftline_segment_values_tracked, ``segment_bytes`` driftline_segment_state_bytes (model).
    """

    def __init__(self, registry: CollectorRegistry | None = None, max_models: int = 100,
                 max_segments: int = 64) -> None:
        # ``*_created`` samples would double every counter's and histogram's series, and
        # Prometheus 2.x stores them as plain gauges nobody queries. (A process-wide switch
        # of prometheus_client; the worker's registry is the process' only one.)
        disable_created_metrics()
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.model = ModelLabels(max_models)

        self.info = Info("driftline_build", "driftline build information", registry=r)
        self.info.info({"version": __version__, "python_version": platform.python_version()})

        # Input.
        self.interactions = Counter(
            "driftline_interactions_processed_total",
            "Valid interactions fed to the monitors", ["model"], registry=r)
        self.invalid = Counter(
            "driftline_invalid_messages_total",
            "Messages rejected as invalid, by reason and source topic",
            ["reason", "topic"], registry=r)
        self.dead_letters = Counter(
            "driftline_dead_letters_published_total",
            "Records published to the dead-letter topic, by reason and source topic",
            ["reason", "topic"], registry=r)

        # Detection.
        self.drift_events = Counter(
            "driftline_drift_events_total", "Drift events published",
            ["model", "kind", "signal", "detector"], registry=r)
        self.reference_warnings = Counter(
            "driftline_reference_warnings_total",
            "References learned from too little data for what they estimate (each is "
            "logged with what and why), by signal", ["signal"], registry=r)
        self.signals = SignalGauges(self.model)
        r.register(self.signals)
        self.monitored_models = Gauge(
            "driftline_monitored_models", "Model monitors held by this worker, by phase",
            ["phase"], registry=r)
        # Bounds under a flood of model ids (streams/monitor/admission.py, spill.py).
        self.models_spilled = Gauge(
            "driftline_models_spilled",
            "Models owned by this worker whose state waits on local disk (restored and not "
            "seen yet, or evicted while idle)", registry=r)
        self.models_evicted = Counter(
            "driftline_models_evicted_total",
            "Idle models evicted from memory to local disk (DRIFTLINE_MAX_MODELS)",
            registry=r)
        self.models_refused = Counter(
            "driftline_models_refused_total",
            "New models refused admission (DRIFTLINE_MODEL_ADMISSION_PER_S); their records "
            "are dead-lettered as model_not_admitted", registry=r)

        # Latency and lag.
        self.processing_seconds = Histogram(
            "driftline_batch_processing_seconds", "Time to process one batch of interactions",
            registry=r, buckets=_LATENCY_BUCKETS)
        self.event_age = Histogram(
            "driftline_event_age_seconds",
            "From an interaction's timestamp (produce time) to its processing by the monitor",
            registry=r, buckets=_LAG_BUCKETS)
        self.detection_lag = Histogram(
            "driftline_detection_lag_seconds",
            "From the triggering interaction's timestamp to the drift event's publication",
            registry=r, buckets=_LAG_BUCKETS)
        self.consumer_lag = Gauge(
            "driftline_consumer_lag_messages",
            "Records behind the log end offset, per assigned topic partition",
            ["topic", "partition"], registry=r)

        # Retraining.
        self.retrain_decisions = Counter(
            "driftline_retrain_decisions_total", "Retrain policy decisions",
            ["action", "outcome"], registry=r)
        self.retrain_requests = Counter(
            "driftline_retrain_requests_total", "Retrain requests published", ["action"],
            registry=r)
        self.retrain_jobs = Counter(
            "driftline_retrain_jobs_total",
            "Retrain jobs finished, by action (retrain, reindex, ...) and outcome "
            "(succeeded, failed, timeout)", ["action", "outcome"], registry=r)
        self.retrain_job_seconds = Histogram(
            "driftline_retrain_job_duration_seconds", "Duration of a retrain job's trigger",
            ["action"], registry=r, buckets=(0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0))

        # Store.
        self.store_writes = Counter(
            "driftline_store_writes_total", "Rows written to the store", ["table"], registry=r)
        self.store_retries = Counter(
            "driftline_store_retries_total", "Store write attempts retried", ["table"],
            registry=r)
        self.store_errors = Counter(
            "driftline_store_errors_total", "Failed store write attempts", ["table"], registry=r)
        # Labelled so that a worker without a store (or before its first operation)
        # exposes no sample, rather than a 0 that would read as "store down".
        self.store_up = Gauge(
            "driftline_store_up", "1 when the last store operation succeeded, else 0",
            ["backend"], registry=r)
        self.buffer_fill = Gauge(
            "driftline_buffer_fill_ratio", "Fill of an in-memory buffer, 0 to 1",
            ["buffer"], registry=r)

        # The cap itself, so that an operator sees when ``other`` starts absorbing models.
        self.model_labels = Gauge(
            "driftline_model_labels", "Distinct model ids holding their own model label",
            registry=r)
        self.model_labels.set_function(lambda: float(len(self.model)))
        self.model_labels_limit = Gauge(
            "driftline_model_labels_limit", "Cap on distinct model labels (then 'other')",
            registry=r)
        self.model_labels_limit.set(max_models)

        # Segments of segmented models (detectors/segmented.py).
        self.segment = SegmentLabels(max_segments)
        self.segment_interactions = Counter(
            "driftline_segment_interactions_processed_total",
            "Interactions routed to a segment's monitor", ["model", "segment"], registry=r)
        self.segment_drift_events = Counter(
            "driftline_segment_drift_events_total", "Drift events of a segment's monitor",
            ["model", "segment", "kind", "signal", "detector"], registry=r)
        seg = ["model", "segment", "kind", "signal"]
        self.segment_statistic = Gauge(
            "driftline_segment_detector_statistic",
            "Detector statistic of a segment's monitor, per signal", seg, registry=r)
        self.segment_threshold = Gauge(
            "driftline_segment_detector_threshold",
            "Alarm threshold of a segment's detector statistic", seg, registry=r)
        self.segment_baseline = Gauge(
            "driftline_segment_signal_baseline",
            "Reference value of a segment's signal (native units)", seg, registry=r)
        self.segment_current = Gauge(
            "driftline_segment_signal_current",
            "Recent value of a segment's signal (native units)", seg, registry=r)
        self.segment_monitors = Gauge(
            "driftline_segment_monitors", "Segment monitors held for a model (its keys' "
            "busiest values and their 'other')", ["model"], registry=r)
        self.segment_values = Gauge(
            "driftline_segment_values_tracked", "Segment values a model counts to rank them",
            ["model"], registry=r)
        self.segment_bytes = Gauge(
            "driftline_segment_state_bytes", "State held by a model's segment monitors",
            ["model"], registry=r)
        # The false-alarm budget, so that a recording rule can state it per model per day
        # at each model's observed rate (prometheus/rules/driftline.yml).
        self.false_alarm_budget = Gauge(
            "driftline_false_alarm_budget",
            "Configured false alarms per event, per signal (DRIFTLINE_FALSE_ALARM_RATE)",
            registry=r)
        self.budgeted_signals = Gauge(
            "driftline_budgeted_signals",
            "Signals each holding that budget (a model's budget is their sum)", registry=r)

    def set_budget(self, per_event: float, signals: int) -> None:
        self.false_alarm_budget.set(per_event)
        self.budgeted_signals.set(signals)

    def observe_signal(self, model_id: str, signal: str, *, statistic: float | None = None,
                       threshold: float | None = None, baseline: float | None = None,
                       current: float | None = None, kind: str | None = None) -> None:
        """Set one signal's gauges (see :class:`SignalGauges`)."""
        self.signals.set(model_id, signal, statistic=statistic, threshold=threshold,
                         baseline=baseline, current=current, kind=kind)
