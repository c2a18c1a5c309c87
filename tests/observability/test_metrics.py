"""Worker metrics: names by convention, a bounded ``model`` label, a valid exposition."""

from __future__ import annotations

import subprocess

import pytest
from driftline.streams.metrics import OTHER, Metrics, ModelLabels, signal_kind
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.conftest import touch_all

N_IDS = 100_000
CAP = 100
SIGNALS = (("embedding", "embedding"), ("latency", "behavior"), ("correct", "accuracy"))


def _series(body: bytes) -> tuple[int, set[str]]:
    count, models = 0, set()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            count += 1
            if "model" in sample.labels:
                models.add(sample.labels["model"])
    return count, models


def _feed(m: Metrics, n: int) -> None:
    for i in range(n):
        model_id = f"tenant-{i:06d}"
        label = m.model(model_id)
        m.interactions.labels(label).inc()
        for signal, kind in SIGNALS:
            m.observe_signal(model_id, signal, statistic=0.1, threshold=1.0, baseline=0.5,
                             current=0.6, kind=kind)
            if i % 10 == 0:
                m.drift_events.labels(label, kind, signal, "adwin").inc()


def test_first_n_models_keep_their_label_the_rest_share_other() -> None:
    cap = ModelLabels(3)
    assert [cap(x) for x in ("a", "b", "c", "d", "a", "e", "c")] == [
        "a", "b", "c", OTHER, "a", OTHER, "c"]
    assert len(cap) == 3
    # A producer cannot claim a slot named like the overflow bucket.
    assert ModelLabels(5)(OTHER) == OTHER and len(ModelLabels(5)) == 0


def test_signal_gauges_carry_the_drift_kind() -> None:
    m = Metrics(CollectorRegistry())
    m.observe_signal("m1", "latency", statistic=1.5, threshold=3.0, baseline=120.0,
                     current=180.0)
    m.observe_signal("m1", "embedding_distance", current=0.3)
    m.observe_signal("m1", "x", current=0.9, kind="accuracy")
    get = m.registry.get_sample_value
    assert get("driftline_detector_statistic",
               {"model": "m1", "kind": "behavior", "signal": "latency"}) == 1.5
    assert get("driftline_signal_baseline",
               {"model": "m1", "kind": "behavior", "signal": "latency"}) == 120.0
    assert get("driftline_signal_current",
               {"model": "m1", "kind": "embedding", "signal": "embedding_distance"}) == 0.3
    assert get("driftline_signal_current", {"model": "m1", "kind": "accuracy", "signal": "x"}) \
        == 0.9
    assert [signal_kind(s) for s in ("embedding", "output_tokens", "correct", "new")] == [
        "embedding", "behavior", "accuracy", "behavior"]


def test_gauges_of_models_beyond_the_cap_are_not_set() -> None:
    m = Metrics(CollectorRegistry(), max_models=1)
    m.observe_signal("a", "latency", statistic=1.0)
    m.observe_signal("b", "latency", statistic=2.0)
    get = m.registry.get_sample_value
    assert get("driftline_detector_statistic",
               {"model": "a", "kind": "behavior", "signal": "latency"}) == 1.0
    assert get("driftline_detector_statistic",
               {"model": OTHER, "kind": "behavior", "signal": "latency"}) is None
    assert get("driftline_model_labels") == 1.0
    assert get("driftline_model_labels_limit") == 1.0


def test_names_follow_prometheus_conventions() -> None:
    m = Metrics(CollectorRegistry())
    for family in m.registry.collect():
        assert family.name.startswith("driftline_"), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client appends it
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert family.documentation, family.name


@pytest.fixture(scope="module")
def flooded() -> tuple[Metrics, bytes]:
    m = Metrics(CollectorRegistry(), max_models=CAP)
    _feed(m, N_IDS)
    return m, generate_latest(m.registry)


def test_100k_model_ids_leave_metrics_bounded(flooded: tuple[Metrics, bytes]) -> None:
    m, body = flooded
    series, models = _series(body)
    # The cap's models plus ``other``; nothing else grows with the number of ids.
    assert len(models) == CAP + 1
    assert OTHER in models
    reference = Metrics(CollectorRegistry(), max_models=CAP)
    _feed(reference, 1_000)
    ref_series, _ = _series(generate_latest(reference.registry))
    assert series == ref_series  # 1,000 ids or 100,000: the same series
    assert series < 1_500
    assert len(body) < 128 * 1024
    assert m.registry.get_sample_value(
        "driftline_interactions_processed_total", {"model": OTHER}) == N_IDS - CAP
    print(f"\n{N_IDS:,} model ids -> {series:,} series, {len(body):,} bytes")


def _promtool_check(promtool: str, body: bytes) -> None:
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().strip() == "", proc.stdout.decode()


@pytest.mark.prometheus
def test_exposition_passes_promtool_check_metrics(
        promtool: str, flooded: tuple[Metrics, bytes]) -> None:
    _promtool_check(promtool, flooded[1])
    # Every metric with a sample, not just the ones the flood touches.
    m = Metrics(CollectorRegistry())
    touch_all(m)
    body = generate_latest(m.registry)
    assert all(f.samples for f in m.registry.collect())
    _promtool_check(promtool, body)


def test_signal_gauges_are_read_at_scrape_time_and_forgotten_with_their_model() -> None:
    """The gauges are a registered collector: each scrape first calls its ``refresh``
    hook (the monitor reads the models that changed), then yields what is set."""
    reg = CollectorRegistry()
    m = Metrics(reg)
    scrapes: list[int] = []

    def refresh() -> None:
        scrapes.append(len(scrapes))
        m.observe_signal("m1", "latency", statistic=2.5 + len(scrapes))

    m.signals.refresh = refresh
    labels = {"model": "m1", "kind": "behavior", "signal": "latency"}
    assert reg.get_sample_value("driftline_detector_statistic", labels) == 3.5
    assert reg.get_sample_value("driftline_detector_statistic", labels) == 4.5
    assert reg.get_sample_value("driftline_detector_threshold", labels) is None  # never set
    assert scrapes == [0, 1, 2]  # one refresh a scrape
    m.signals.refresh = None
    m.signals.forget("m1")
    assert reg.get_sample_value("driftline_detector_statistic", labels) is None
