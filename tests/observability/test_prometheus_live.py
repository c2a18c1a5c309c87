"""A real Prometheus scrapes a driftline ``/metrics`` fed by a seeded stream, and every
dashboard query (panels, variables, annotations) runs through its HTTP API.

The target serves the worker's registry. Until ``driftline worker`` + ``driftline simulate
--to kafka`` can run here, the target is in-process: the real ``MonitorProcessor`` (event
validation, ``detectors.ModelMonitor``) consumes a seeded interaction stream exactly as the
worker's monitor agent does (``streams/app.py``), and ``prometheus_client`` serves the
registry. TODO(lead): replace ``InProcessWorker`` with the worker subprocess fed by the
simulator through the Kafka fixture; keep ``produces`` / ``kinds`` honest for that feed.

The stream is fed in phases; after each phase the test waits (with a deadline) until
Prometheus has scraped its final count, so rates and histograms span several scrapes.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml
from prometheus_client import start_http_server

from detectors import MonitorConfig
from streams.metrics import Metrics
from streams.processor import MonitorProcessor, Record

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
                   "output_tokens": int(rng.integers(50, 400))}
            out.append((model, orjson.dumps(doc)))
    return out


@dataclass
class InProcessWorker:
    """The monitor agent's loop of ``streams/app.py`` without Kafka, serving /metrics."""

    metrics: Metrics = field(default_factory=lambda: Metrics(max_models=100))
    produces: frozenset[str] = frozenset({
        "driftline_build_info", "driftline_interactions_processed_total",
        "driftline_invalid_messages_total", "driftline_dead_letters_published_total",
        "driftline_drift_events_total", "driftline_signal_current", "driftline_signal_baseline",
        "driftline_detector_statistic", "driftline_detector_threshold",
        "driftline_monitored_models", "driftline_batch_processing_seconds_bucket",
        "driftline_event_age_seconds_bucket", "driftline_detection_lag_seconds_bucket",
    })
    kinds: set[str] = field(default_factory=set)
    valid: int = 0
    address: str = ""

    def __post_init__(self) -> None:
        self.processor = MonitorProcessor(
            interactions_topic=TOPIC, feedback_topic="driftline.feedback",
            updates_topic="driftline.model-updates", monitor_config=MonitorConfig(warmup=300),
            metrics=self.metrics)
        self.stream = seeded_stream()
        self.offsets = [0, 0, 0, 0]
        port = free_port()
        self.server, self.thread = start_http_server(port, "127.0.0.1",
                                                     registry=self.metrics.registry)
        self.address = f"127.0.0.1:{port}"

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
            for rej in result.rejects:
                m.dead_letters.labels(rej.reason, rej.record.topic).inc()
            for model_id, ev in result.drift_events:
                self.kinds.add(ev["kind"])
                # Stand-in until the monitor exports stats(): the detection's own numbers.
                m.observe_signal(model_id, ev["signal"], kind=ev["kind"],
                                 statistic=ev["severity"], baseline=ev["baseline"],
                                 current=ev["current"])
            for model_id in result.dirty:
                monitor = self.processor.models[model_id].monitor
                stats = getattr(monitor, "stats", None)
                if stats is not None:
                    for signal, s in stats().items():
                        m.observe_signal(model_id, signal, statistic=s.statistic,
                                         threshold=s.threshold, baseline=s.baseline,
                                         current=s.current)
                else:
                    m.detector_threshold.labels(m.model(model_id), "latency").set(1.0)
            done = time.time()
            for _model, raw in result.interactions:
                m.event_age.observe(max(0.0, done - float(raw["ts"])))
            self.valid += len(result.interactions)
            phases = [st.monitor.phase for st in self.processor.models.values()]
            for phase in ("warmup", "monitoring"):
                m.monitored_models.labels(phase).set(phases.count(phase))
            m.processing_seconds.observe(time.perf_counter() - t0)
        return self.valid

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


@pytest.fixture(scope="module")
def worker() -> Iterator[InProcessWorker]:
    w = InProcessWorker()
    yield w
    w.close()


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, worker: InProcessWorker,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s",
                            scrape_timeout=f"{SCRAPE_S}s")
    config["rule_files"] = [str(ROOT / "prometheus" / "rules" / "*.yml")]
    config["scrape_configs"] = [{"job_name": "driftline",
                                 "static_configs": [{"targets": [worker.address]}]}]
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


@pytest.fixture(scope="module")
def fed(prometheus: Prometheus, worker: InProcessWorker) -> tuple[float, float]:
    """Feed the stream phase by phase; returns the (start, end) of the feed, unix time."""

    def target_up() -> bool:
        targets = prometheus.get("/api/v1/targets")["activeTargets"]
        return any(t["labels"]["job"] == "driftline" and t["health"] == "up" for t in targets)

    wait_for("the driftline target to be up", target_up)
    start = time.time()
    total = 'sum(driftline_interactions_processed_total{job="driftline"})'
    for k in range(PHASES):
        expected = worker.feed_phase(k)

        def scraped_phase(expected: int = expected) -> bool:
            return prometheus.scalar(total) == expected

        wait_for(f"phase {k} scraped ({expected} interactions)", scraped_phase)
    # Two more scrapes of the final state, so that every rate window ends in data.
    scraped = prometheus.scalar("max(timestamp(up{job=\"driftline\"}))") or 0.0
    wait_for("two more scrapes", lambda: (prometheus.scalar(
        "max(timestamp(up{job=\"driftline\"}))") or 0.0) >= scraped + 2 * SCRAPE_S)
    return start, time.time()


# --- queries of the dashboard --------------------------------------------------------------

def substitute(expr: str, instance: str, model: str, range_s: int) -> str:
    """Grafana's variable interpolation for our variables and the built-in intervals."""
    values = {"job": "driftline", "instance": instance, "model": model,
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


@pytest.mark.parametrize("model", [".+", DRIFTING], ids=["all-models", "one-model"])
@pytest.mark.parametrize(("title", "expr", "kind"), panel_targets(),
                         ids=[f"{t}#{i}" for i, (t, _e, _k) in enumerate(panel_targets())])
def test_panel_query(prometheus: Prometheus, worker: InProcessWorker, fed: tuple[float, float],
                     title: str, expr: str, kind: str | None, model: str) -> None:
    start, end = fed
    query = substitute(expr, worker.address, model, int(end - start) + 1)
    data = prometheus.get("/api/v1/query_range", query=query, start=start, end=end,
                          step=SCRAPE_S)
    assert data["resultType"] == "matrix"
    must = bool(metrics_of(expr) & worker.produces) and (kind is None or kind in worker.kinds)
    if must:
        assert has_data(data["result"]), f"{title}: no data for {query}"


def test_the_feed_detected_the_injected_drift(worker: InProcessWorker,
                                              fed: tuple[float, float],
                                              prometheus: Prometheus) -> None:
    assert "behavior" in worker.kinds
    drifted = prometheus.get("/api/v1/query", query='sum by (model) (driftline_drift_events_total)')
    assert {s["metric"]["model"] for s in drifted["result"]} == {DRIFTING}
    assert prometheus.scalar("sum(driftline_dead_letters_published_total)") == \
        sum(1 for i in range(N_PER_MODEL * len(MODELS)) if i % 97 == 96)


def test_variables_have_values(prometheus: Prometheus, worker: InProcessWorker,
                               fed: tuple[float, float]) -> None:
    start, end = fed
    expected = {"job": {"driftline"}, "instance": {worker.address}, "model": set(MODELS)}
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] != "query":
            continue
        mt = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
        assert mt, var["query"]
        match = substitute(mt.group(1), worker.address, ".+", 60)
        values = prometheus.get(f"/api/v1/label/{mt.group(2)}/values",
                                **{"match[]": match, "start": start, "end": end})
        assert set(values) == expected[var["name"]], var["name"]


def test_drift_annotations(prometheus: Prometheus, worker: InProcessWorker,
                           fed: tuple[float, float]) -> None:
    start, end = fed
    (ann,) = [a for a in DASHBOARD["annotations"]["list"] if a["name"] == "Drift events"]
    query = substitute(ann["expr"], worker.address, ".+", 60)
    data = prometheus.get("/api/v1/query_range", query=query, start=start, end=end,
                          step=SCRAPE_S)
    marked = {(s["metric"]["model"], s["metric"]["kind"]) for s in data["result"]
              if has_data([s])}
    assert marked == {(DRIFTING, "behavior")}


def test_alert_rules_evaluate_without_errors(prometheus: Prometheus,
                                             fed: tuple[float, float]) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                      not r["lastEvaluation"].startswith("0001")
                                      for r in rules) else []

    rules = wait_for("rules evaluated", evaluated)
    assert {r["name"] for r in rules} >= {"DriftlineDriftDetected", "DriftlineStoreUnavailable"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                     for r in rules if r["health"] != "ok"]
    firing = {a["labels"]["alertname"]: a for a in prometheus.get("/api/v1/alerts")["alerts"]}
    # The drift alert is pending or firing (for: 1m) for the drifting model, right away.
    assert firing["DriftlineDriftDetected"]["labels"]["model"] == DRIFTING
