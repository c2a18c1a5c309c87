"""Fixtures of the observability tests: the repo root and the real Prometheus tools."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from driftline.streams.metrics import Metrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (apt-get install -y prometheus); CI installs it")
    return path


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus not installed (apt-get install -y prometheus); CI installs it")
    return path


def touch_all(m: Metrics) -> None:
    """Give every metric of ``m`` at least one sample (one model, every label)."""
    label = m.model("m1")
    m.interactions.labels(label).inc()
    m.invalid.labels("bad_json", "driftline.interactions").inc()
    m.dead_letters.labels("bad_json", "driftline.interactions").inc()
    m.drift_events.labels(label, "behavior", "latency", "adwin").inc()
    m.observe_signal("m1", "latency", statistic=0.5, threshold=1.0, baseline=100.0,
                     current=120.0)
    m.monitored_models.labels("monitoring").set(1)
    m.processing_seconds.observe(0.003)
    m.event_age.observe(0.2)
    m.detection_lag.observe(1.5)
    m.consumer_lag.labels("driftline.interactions", "0").set(12)
    m.retrain_decisions.labels("retrain", "requested").inc()
    m.retrain_requests.labels("retrain").inc()
    m.retrain_jobs.labels("retrain", "failed").inc()
    m.retrain_job_seconds.labels("retrain").observe(2.0)
    m.store_writes.labels("interactions").inc(10)
    m.store_retries.labels("interactions").inc()
    m.store_errors.labels("interactions").inc()
    m.store_up.labels("postgres").set(1)
    m.buffer_fill.labels("interactions").set(0.25)
    m.reference_warnings.labels("latency").inc()
    seg = m.segment(label, "metadata.tenant", "acme")
    m.segment_interactions.labels(label, seg).inc()
    m.segment_drift_events.labels(label, seg, "behavior", "latency", "cusum_mean_up").inc()
    for gauge in (m.segment_statistic, m.segment_threshold, m.segment_baseline,
                  m.segment_current):
        gauge.labels(label, seg, "behavior", "latency").set(1.0)
    for gauge in (m.segment_monitors, m.segment_values, m.segment_bytes):
        gauge.labels(label).set(2)


def exposed_labels() -> dict[str, set[str]]:
    """Sample name -> label names, for every sample the worker's metrics expose."""
    m = Metrics(CollectorRegistry())
    touch_all(m)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(k for k in sample.labels if k != "le")
    return out
