"""A real Prometheus scrapes driftline's ``/metrics`` while a seeded stream is fed, and
every dashboard query (panels, variables, annotations) and alert rule runs through its
HTTP API.

Two targets, each with its own Prometheus:

* ``worker`` — the real ``driftline worker`` process on the real broker and Postgres, fed
  by ``driftline simulate --to kafka`` (plus a few poison messages for the dead letters);
* ``in-process`` — the same ``MonitorProcessor`` and metrics without Kafka, served by
  ``prometheus_client`` (fast, and independent of the broker).

A panel query must return data whenever the target's own ``/metrics`` (read directly, not
through Prometheus) has a non-NaN sample of every metric it uses (and of its ``kind``);
structural tests (test_grafana.py) pin metric names and kinds, and
``test_core_panels_are_required`` keeps this from passing vacuously.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml
from driftline.detectors import MonitorConfig
from driftline.detectors.segments import SegmentPlan
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.gauges import ModelGauges
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.offline.simulate import demo_scenario
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures_kafka import produce

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "grafana" / "dashboards" / "driftline.json").read_text())
SCRAPE_S = 1
RATE_INTERVAL = f"{4 * SCRAPE_S}s"  # Grafana: max($__interval + scrape, 4 * scrape)
TOPIC = "driftline.interactions"
MODELS = ("chat-a", "chat-b", "search-c")
DRIFTING = "chat-b"
N_PER_MODEL = 2_400
DRIFT_AT = 1_200
PHASES = 12
DEADLINE_S = 60.0
TENANTS = ("acme", "globex", "initech")  # the in-process target segments by metadata.tenant


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``check`` until it returns a truthy value, or fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.1)  # polling interval, not a wait for an outcome
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


# --- the target: the worker's metrics, fed by a seeded stream --------------------------

def seeded_stream(seed: int = 7) -> list[tuple[str, bytes]]:
    """Interleaved interactions of three models; ``chat-b``'s latency triples at
    ``DRIFT_AT``; every 97th message breaks the event contract in a different way."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes]] = []
    broken = [b"{not json", b'{"event_id": "x", "model_id": "chat-a", "ts": 1, "latency_ms": NaN}',
              orjson.dumps({"model_id": "chat-a", "ts": 1.0}),
              orjson.dumps({"event_id": "y", "model_id": "bad id!", "ts": 1.0})]
    for i in range(N_PER_MODEL):
        for j, model in enumerate(MODELS):
            n = i * len(MODELS) + j
            if n % 97 == 96:
                out.append((model, broken[(n // 97) % len(broken)]))
                continue
            scale = 3.0 if model == DRIFTING and i >= DRIFT_AT else 1.0
            doc = {"event_id": f"{model}-{i}", "model_id": model, "ts": 0.0,
                   "latency_ms": float(rng.lognormal(np.log(200.0 * scale), 0.25)),
                   "output_tokens": int(rng.integers(50, 400)),
                   "metadata": {"tenant": TENANTS[i % len(TENANTS)]}}
            out.append((model, orjson.dumps(doc)))
    return out


@dataclass
class InProcessWorker:
    """The monitor agent's loop of ``streams/app.py`` without Kafka, serving /metrics."""

    metrics: Metrics = field(default_factory=lambda: Metrics(max_models=100))
    kinds: set[str] = field(default_factory=set)
    address: str = ""
    drifting: str = DRIFTING
    models: set[str] = field(default_factory=lambda: set(MODELS))
    dead_letters: int = sum(1 for n in range(N_PER_MODEL * len(MODELS)) if n % 97 == 96)
    segments: set[str] = field(default_factory=lambda: {
        f"metadata.tenant={t}" for t in (*TENANTS, "other")})

    def __post_init__(self) -> None:
        self.processor = MonitorProcessor(
            interactions_topic=TOPIC, feedback_topic="driftline.feedback",
            updates_topic="driftline.model-updates", monitor_config=MonitorConfig(warmup=300),
            metrics=self.metrics, segments=SegmentPlan.parse("metadata.tenant"))
        self.gauges = ModelGauges(self.processor, self.metrics)  # the segment gauges
        self.stream = seeded_stream()
        self.offsets = [0, 0, 0, 0]
        port = free_port()
        self.server, self.thread = start_http_server(port, "127.0.0.1",
                                                     registry=self.metrics.registry)
        self.address = f"127.0.0.1:{port}"

    def feed(self, prometheus: Prometheus) -> None:
        """Feed the stream in ``PHASES`` slices; wait until Prometheus scraped each one."""
        total = 'sum(driftline_interactions_processed_total{job="driftline"})'
        for k in range(PHASES):
            expected = self.feed_phase(k)

            def scraped_phase(expected: int = expected) -> bool:
                return prometheus.scalar(total) == expected

            wait_for(f"phase {k} scraped ({expected} interactions)", scraped_phase)

    def feed_phase(self, k: int) -> int:
        """Feed the k-th of ``PHASES`` slices, in batches; returns valid interactions so far."""
        size = len(self.stream) // PHASES
        chunk = self.stream[k * size:(k + 1) * size if k < PHASES - 1 else None]
        m = self.metrics
        for start in range(0, len(chunk), 250):
            t0 = time.perf_counter()
            now = time.time()
            records = []
            for model, value in chunk[start:start + 250]:
                part = MODELS.index(model) % 4
                self.offsets[part] += 1
                value = value.replace(b'"ts":0.0', f'"ts":{now}'.encode())
                records.append(Record(TOPIC, part, self.offsets[part], model.encode(), value,
                                      now))
            result = self.processor.process(records)
            if start + 250 >= len(chunk):  # the agent's checkpoint: segments fed too
                flushed = self.processor.flush()
                result.drift_events += flushed.drift_events
            for rej in result.rejects:
                m.dead_letters.labels(rej.reason, rej.record.topic).inc()
            for model_id, ev in result.drift_events:
                self.kinds.add(ev["kind"])
                # Stand-in until the monitor exports stats(): the detection's own numbers.
                m.observe_signal(model_id, ev["signal"], kind=ev["kind"],
                                 statistic=ev["severity"], baseline=ev["baseline"],
                                 current=ev["current"])
            self.gauges.mark(result.dirty)
            for model_id in result.dirty:
                monitor = self.processor.models[model_id].monitor
                stats = getattr(monitor, "stats", None)
                if stats is not None:
                    for signal, s in stats().items():
                        m.observe_signal(model_id, signal, statistic=s.statistic,
                                         threshold=s.threshold, baseline=s.baseline,
                                         current=s.current, kind=getattr(s, "kind", None))
                else:
                    m.detector_threshold.labels(m.model(model_id), "latency").set(1.0)
            done = time.time()
            rejected = {id(rej.record) for rej in result.rejects}
            for rec in records:
                if id(rec) not in rejected and rec.timestamp is not None:
                    m.event_age.observe(max(0.0, done - rec.timestamp))
            phases = [st.monitor.phase for st in self.processor.models.values()]
            for phase in ("warmup", "monitoring"):
                m.monitored_models.labels(phase).set(phases.count(phase))
            m.processing_seconds.observe(time.perf_counter() - t0)
        return int(sum(x.value for f in m.registry.collect() for x in f.samples
                       if x.name == "driftline_interactions_processed_total"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the real Prometheus ----------------------------------------------------------------

@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=10)
        body = r.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def scalar(self, expr: str) -> float | None:
        result = self.get("/api/v1/query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None


class WorkerTarget:
    """``driftline worker`` on the real broker and Postgres, fed by ``driftline simulate``."""

    EVENTS = 1_500  # per model; the demo scenario drifts each drifting model at EVENTS // 2
    # segmented by the simulator's metadata.route (other: before the first ranking)
    segments = frozenset(f"metadata.route={r}" for r in ("chat", "search", "other"))
    RATE = 400.0  # interactions/s: the feed spans many 1 s scrapes
    POISON = (b"{not json", b'{"event_id": "p", "model_id": "support-bot", "ts": NaN}',
              b"[1, 2]")


    def __init__(self, bootstrap: str, dsn: str, tmp: Path) -> None:
        self.drifting = "support-bot"  # latency x1.5 from EVENTS // 2 in the demo scenario
        self.models = {p.model_id for p in demo_scenario(self.EVENTS).models}
        self.dead_letters = len(self.POISON)
        self.prefix = f"obs{uuid.uuid4().hex[:8]}"
        port = free_port()
        self.env = {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
                    "DRIFTLINE_TOPIC_PREFIX": self.prefix,
                    "DRIFTLINE_APP_ID": f"{self.prefix}-app",
                    "DRIFTLINE_DATA_DIR": str(tmp / "data"), "DRIFTLINE_WEB_PORT": str(port),
                    "DRIFTLINE_WEB_HOST": "127.0.0.1", "DRIFTLINE_WARMUP": "300",
                    "DRIFTLINE_BATCH_WITHIN_S": "0.05", "DATABASE_URL": dsn,
                    "DRIFTLINE_SEGMENTS": "metadata.route"}
        self.tmp = tmp
        self.log = tmp / "worker.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "driftline.streams.cli", "worker"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.address = f"127.0.0.1:{port}"
        wait_for("the worker's /metrics", self._serving, deadline_s=120)

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited: {self.log.read_text()[-3000:]}")
        return httpx.get(f"http://{self.address}/metrics", timeout=2).status_code == 200

    def feed(self, prometheus: Prometheus) -> None:
        sim = subprocess.run(
            [sys.executable, "-m", "driftline.streams.cli", "simulate", "--to", "kafka",
             "--events", str(self.EVENTS), "--rate", str(self.RATE), "--seed", "7",
             "--truth", str(self.tmp / "truth.json")],
            env=self.env, capture_output=True, text=True, timeout=300, check=False)
        assert sim.returncode == 0, sim.stdout + sim.stderr
        produce(self.env["DRIFTLINE_KAFKA_BOOTSTRAP"],
                [(f"{self.prefix}.interactions", b"support-bot", v) for v in self.POISON])
        n_models = len(json.loads((self.tmp / "truth.json").read_text())) + 1  # + stable
        expected = self.EVENTS * n_models
        total = 'sum(driftline_interactions_processed_total{job="driftline"})'
        dead = 'sum(driftline_dead_letters_published_total{job="driftline"})'
        wait_for(f"{expected} interactions scraped",
                 lambda: prometheus.scalar(total) == expected, deadline_s=180)
        wait_for("the poison messages' dead letters scraped",
                 lambda: prometheus.scalar(dead) == len(self.POISON), deadline_s=60)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


Target = InProcessWorker | WorkerTarget


@pytest.fixture(scope="module", params=[
    "in-process",
    pytest.param("worker", marks=[pytest.mark.kafka, pytest.mark.postgres]),
])
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    t: Target
    if request.param == "worker":
        t = WorkerTarget(request.getfixturevalue("kafka_bootstrap"),
                         request.getfixturevalue("postgres_dsn"),
                         tmp_path_factory.mktemp("worker"))
    else:
        t = InProcessWorker()
    yield t
    t.close()


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, target: Target,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s",
                            scrape_timeout=f"{SCRAPE_S}s")
    config["rule_files"] = [str(ROOT / "prometheus" / "rules" / "*.yml")]
    config["scrape_configs"] = [{"job_name": "driftline",
                                 "static_configs": [{"targets": [target.address]}]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [prometheus_bin, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_for("Prometheus ready", lambda: proc.poll() is None and httpx.get(
            prom.url + "/-/ready", timeout=2).status_code == 200)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Fed:
    start: float
    end: float
    # metric -> (kind, signal, model) of its non-NaN samples ("" where a label is absent)
    available: dict[str, set[tuple[str, str, str]]]


@pytest.fixture(scope="module")
def fed(prometheus: Prometheus, target: Target) -> Fed:
    """Feed the target while Prometheus scrapes it; what its /metrics has at the end."""

    def target_up() -> bool:
        targets = prometheus.get("/api/v1/targets")["activeTargets"]
        return any(t["labels"]["job"] == "driftline" and t["health"] == "up" for t in targets)

    wait_for("the driftline target to be up", target_up)
    start = time.time()
    target.feed(prometheus)
    body = httpx.get(f"http://{target.address}/metrics", timeout=10).text
    read_at = time.time()
    # Every series of ``body`` existed when these scrapes started, and the range ends on
    # the last of them, so each rate window at its end holds two samples of each series.
    # (The body itself decides what is required: a series can appear late in the feed,
    # e.g. a retrain decision when its grouping window closes 5 s after the detection.)
    last = 'max(timestamp(up{job="driftline"}))'
    end = wait_for("three scrapes after reading /metrics",
                   lambda: (ts := prometheus.scalar(last) or 0.0) >= read_at + 3 and ts)
    available: dict[str, set[tuple[str, str, str]]] = {}
    for family in text_string_to_metric_families(body):
        counts = [x.value for x in family.samples if x.name.endswith("_count")]
        if family.type == "histogram" and not any(counts):
            continue  # registered, never observed: its quantiles are rightly empty
        for sample in family.samples:
            if not math.isnan(sample.value):
                labels = sample.labels
                available.setdefault(sample.name, set()).add(
                    (labels.get("kind", ""), labels.get("signal", ""), labels.get("model", "")))
    return Fed(start, end, available)


# --- queries of the dashboard --------------------------------------------------------------

def substitute(expr: str, instance: str, model: str, range_s: int) -> str:
    """Grafana's variable interpolation for our variables and the built-in intervals."""
    values = {"job": "driftline", "instance": instance, "model": model, "segment": ".+",
              "__rate_interval": RATE_INTERVAL, "__interval": f"{SCRAPE_S}s",
              "__range": f"{range_s}s"}
    return re.sub(r"\$\{?(\w+)\}?", lambda mt: values[mt.group(1)], expr)


def panel_targets() -> list[tuple[str, str, str | None]]:
    """(panel title, expr, drift kind or None) for every query of every panel."""
    out = []
    for panel in DASHBOARD["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            for t in sub.get("targets", []):
                kind = re.search(r'kind="(\w+)"', t["expr"])
                out.append((sub["title"], t["expr"], kind.group(1) if kind else None))
    return out


def metrics_of(expr: str) -> set[str]:
    return set(re.findall(r"\b(driftline_[a-z_]+)\{", expr))


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(v[1] not in ("NaN", "+Inf", "-Inf") for s in result for v in s["values"])


CORE_PANELS = {
    "Interactions / s", "Interactions processed by model", "Drift events in range",
    "Latency vs baseline", "Behavior detector statistic vs threshold",
    "Behavior drift events", "Invalid messages and dead letters by reason",
    "Batch processing latency", "Detection lag",
}


def required(expr: str, kind: str | None, available: dict[str, set[tuple[str, str, str]]],
             model: str = ".+") -> bool:
    """Data must exist when the target exposes every metric of ``expr`` (for its kind and
    signal and, when one model is selected, for that model)."""
    metrics = metrics_of(expr)
    signal = re.search(r'signal="(\w+)"', expr)
    return bool(metrics) and all(
        any((kind is None or k == kind) and (signal is None or sg == signal.group(1))
            and (model == ".+" or mm in ("", model))
            for k, sg, mm in available.get(m, set()))
        for m in metrics)


@pytest.mark.parametrize("one_model", [False, True], ids=["all-models", "one-model"])
@pytest.mark.parametrize(("title", "expr", "kind"), panel_targets(),
                         ids=[f"{t}#{i}" for i, (t, _e, _k) in enumerate(panel_targets())])
def test_panel_query(prometheus: Prometheus, target: Target, fed: Fed, title: str, expr: str,
                     kind: str | None, one_model: bool) -> None:
    model = target.drifting if one_model else ".+"
    query = substitute(expr, target.address, model, int(fed.end - fed.start) + 1)
    data = prometheus.get("/api/v1/query_range", query=query, start=fed.start, end=fed.end,
                          step=SCRAPE_S)
    assert data["resultType"] == "matrix"
    if required(expr, kind, fed.available, model):
        assert has_data(data["result"]), f"{title}: no data for {query}"


def test_core_panels_are_required(fed: Fed) -> None:
    must = {title for title, expr, kind in panel_targets()
            if required(expr, kind, fed.available)}
    assert CORE_PANELS <= must, CORE_PANELS - must
    print(f"\npanels that must have data: {sorted(must)}")


def test_the_feed_detected_the_injected_drift(target: Target, fed: Fed,
                                              prometheus: Prometheus) -> None:
    drifted = prometheus.get(
        "/api/v1/query", query='sum by (model, kind) (driftline_drift_events_total)')["result"]
    assert (target.drifting, "behavior") in {(s["metric"]["model"], s["metric"]["kind"])
                                              for s in drifted}
    assert prometheus.scalar("sum(driftline_dead_letters_published_total)") == \
        target.dead_letters


def test_variables_have_values(prometheus: Prometheus, target: Target, fed: Fed) -> None:
    expected = {"job": {"driftline"}, "instance": {target.address}, "model": target.models,
                "segment": target.segments}
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] != "query":
            continue
        mt = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
        assert mt, var["query"]
        match = substitute(mt.group(1), target.address, ".+", 60)
        values = prometheus.get(f"/api/v1/label/{mt.group(2)}/values",
                                **{"match[]": match, "start": fed.start, "end": fed.end})
        assert set(values) == expected[var["name"]], var["name"]


def test_drift_annotations(prometheus: Prometheus, target: Target, fed: Fed) -> None:
    (ann,) = [a for a in DASHBOARD["annotations"]["list"] if a["name"] == "Drift events"]
    query = substitute(ann["expr"], target.address, ".+", 60)
    data = prometheus.get("/api/v1/query_range", query=query, start=fed.start, end=fed.end,
                          step=SCRAPE_S)
    marked = {(s["metric"]["model"], s["metric"]["kind"]) for s in data["result"]
              if has_data([s])}
    events = prometheus.get("/api/v1/query", query="driftline_drift_events_total")["result"]
    assert marked == {(s["metric"]["model"], s["metric"]["kind"]) for s in events}
    assert (target.drifting, "behavior") in marked


def test_alert_rules_evaluate_without_errors(prometheus: Prometheus, target: Target,
                                             fed: Fed) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2")
                                      for r in rules) else []

    rules = wait_for("rules evaluated", evaluated)
    assert {r["name"] for r in rules} >= {"DriftlineDriftDetected", "DriftlineStoreUnavailable"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                     for r in rules if r["health"] != "ok"]
    alerts = prometheus.get("/api/v1/alerts")["alerts"]
    # The drift alert is pending or firing (for: 1m) for the drifting model right away.
    assert target.drifting in {a["labels"].get("model") for a in alerts
                               if a["labels"]["alertname"] == "DriftlineDriftDetected"}
    # A healthy worker raises none of the outage alerts, not even as pending.
    active = {a["labels"]["alertname"] for a in alerts}
    assert not active & {"DriftlineStoreUnavailable", "DriftlineWorkerDown",
                         "DriftlineRetrainFailing", "DriftlineNoInteractionsProcessed",
                         "DriftlineConsumerLagHigh"}, active


def test_segment_panels_show_the_segments(prometheus: Prometheus, target: Target,
                                          fed: Fed) -> None:
    """The segment panels have data for each segment label, bounded like ``model``."""
    data = prometheus.get(
        "/api/v1/query", query='sum by (model, segment) '
        '(driftline_segment_interactions_processed_total{job="driftline"})')["result"]
    by_model: dict[str, set[str]] = {}
    for s in data:
        by_model.setdefault(s["metric"]["model"], set()).add(s["metric"]["segment"])
    assert set(by_model) == target.models
    assert all(segs <= target.segments for segs in by_model.values()), by_model
    routed = prometheus.scalar('sum(driftline_segment_interactions_processed_total'
                               '{job="driftline"})')
    total = prometheus.scalar('sum(driftline_interactions_processed_total{job="driftline"})')
    assert routed == total  # one key: each interaction in exactly one segment
    events = prometheus.get("/api/v1/query", query='sum by (model, segment) '
                            '(driftline_segment_drift_events_total{job="driftline"})')["result"]
    assert target.drifting in {s["metric"]["model"] for s in events}
