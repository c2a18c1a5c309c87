"""``driftline demo``: the whole loop on one machine with nothing to configure.

Starts a private Kafka broker and an embedded Postgres under ``$DRIFTLINE_HOME/demo``
(wiped first, so every run starts fresh), runs ``driftline worker`` as a subprocess,
publishes a seeded simulation with one injected drift per kind, follows the drift
events and retrain requests live, deploys a new version of every model that drifted,
prints a summary and shuts everything down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from driftline.streams import config, kafka_clients
from driftline.streams.config import Settings
from driftline.streams.offline.simulate import Progress, Scenario, demo_scenario, event_id, to_kafka
from driftline.streams.tooling.local_kafka import LocalKafka, free_port, free_ports

OUT = sys.stdout
CLEAR = "\r\033[K" if OUT.isatty() else ""


def say(msg: str) -> None:
    OUT.write(msg + "\n")
    OUT.flush()


@dataclass
class Observed:
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    retrain_requests: list[dict[str, Any]] = field(default_factory=list)


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


async def _follow(settings: Settings, obs: Observed, index: dict[str, tuple[str, int]],
                  truth: list[dict[str, Any]], stop: asyncio.Event) -> None:
    """Print drift events and retrain requests as they arrive."""
    topics = [settings.topic("drift-events"), settings.topic("retrain-requests")]
    consumer = kafka_clients.consumer(settings, *topics, auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None)
    await consumer.start()
    starts = {(t["model_id"], t["kind"]): t["start"] for t in truth}
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batch.items():
                for m in msgs:
                    doc = orjson.loads(m.value)
                    if tp.topic == topics[0]:
                        obs.drift_events.append(doc)
                        model, i = index.get(doc["trigger_event_id"], (doc["model_id"], -1))
                        start = starts.get((model, doc["kind"]))
                        where = (f"delay {i - start} events" if start is not None and i >= start
                                 else "FALSE ALARM")
                        OUT.write(f"{CLEAR}  drift  {model:<14} {doc['kind']:<9} "
                                  f"{doc['signal']:<13} at interaction #{i} ({where}), "
                                  f"{doc['detector']}, severity {doc['severity']:.1f}\n")
                    else:
                        obs.retrain_requests.append(doc)
                        job = str(doc.get("job_id", doc.get("action_id", "?")))[:12]
                        OUT.write(f"{CLEAR}  action {doc.get('model_id', '?'):<14} "
                                  f"{doc.get('action', '?'):<9} requested (job {job})\n")
                    OUT.flush()
    finally:
        await consumer.stop()


async def _deploy(settings: Settings, models: list[str]) -> None:
    producer = kafka_clients.producer(settings)
    await producer.start()
    try:
        for m in models:
            await producer.send_and_wait(settings.topic("model-updates"), orjson.dumps(
                {"model_id": m, "model_version": "v2", "ts": time.time(), "kind": "deployed"}),
                key=m.encode())
    finally:
        await producer.stop()


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def main(events_per_model: int = 4000, seed: int = 7, keep: bool = False) -> int:
    for name in ("pgserver", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    home = config.home() / "demo"
    port, controller_port = free_ports(2)
    kafka = LocalKafka(home=home / "kafka", port=port, controller_port=controller_port)
    kafka.stop()  # a broker left over from an interrupted demo
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    scenario = demo_scenario(events_per_model, seed)
    warmup = min(1000, events_per_model // 4)
    t_start = time.monotonic()
    say(f"driftline demo: {len(scenario.models)} models x {events_per_model:,} interactions, "
        f"{len(scenario.drifts)} injected drifts (seed {seed}); working dir {home}")

    worker: subprocess.Popen[bytes] | None = None
    pg: Any = None
    try:
        kafka.start(progress=lambda m: say(f"  {m}"))
        say(f"  Kafka ready at {kafka.bootstrap}")
        from driftline.streams.store.embedded import EmbeddedPostgres

        pg = EmbeddedPostgres(home / "pg")
        dsn = pg.start()
        say("  embedded Postgres (pgvector) ready")
        web_port = free_port()
        env = {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": kafka.bootstrap,
               "DRIFTLINE_DATA_DIR": str(home / "data"), "DRIFTLINE_WEB_PORT": str(web_port),
               "DATABASE_URL": dsn, "DRIFTLINE_WARMUP": str(warmup),
               "DRIFTLINE_COOLDOWN_S": "0", "DRIFTLINE_APP_ID": "driftline-demo"}
        settings = Settings.from_env(env)
        log = open(home / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "driftline.streams.cli", "worker"],
                                  env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        def worker_up() -> bool:
            assert worker is not None
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}; see "
                                   f"{home / 'worker.log'}")
            return _scrape(web_port) is not None

        _wait(worker_up, 90, "the worker's /metrics")
        say(f"  worker up (pid {worker.pid}, metrics http://127.0.0.1:{web_port}/metrics, "
            f"log {home / 'worker.log'})")
        code = asyncio.run(_run(scenario, settings, web_port, worker, pg, t_start))
        say(f"  report: {_report(scenario, home, warmup)}")
        return code
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if pg is not None:
            pg.close()
        if not keep:
            kafka.stop()
            say("  stopped worker, Postgres and Kafka")


async def _run(scenario: Scenario, settings: Settings, web_port: int,
               worker: subprocess.Popen[bytes], pg: Any, t_start: float) -> int:
    truth = scenario.truth()
    index = {event_id(scenario.seed, m.model_id, i): (m.model_id, i)
             for m in scenario.models for i in range(scenario.events_per_model)}
    obs = Observed()
    stop = asyncio.Event()
    follower = asyncio.create_task(_follow(settings, obs, index, truth, stop))
    total = scenario.events_per_model * len(scenario.models)
    bar = Progress(total, "  publish")
    await to_kafka(scenario, settings, progress=bar.update)
    bar.done(total)

    def processed() -> float:
        text = _scrape(web_port)
        return _metric_sum(text, "driftline_interactions_processed_total") if text else 0.0

    deadline = time.monotonic() + 180
    wbar = Progress(total, "  worker processed", OUT)
    while (n := processed()) < total:
        if worker.poll() is not None:
            raise RuntimeError("the worker exited; see its log")
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not process every interaction in time")
        wbar.update(int(n))
        await asyncio.sleep(0.3)
    wbar.done(total)

    async def settle(cond: Any, within: float) -> bool:
        end = time.monotonic() + within
        while time.monotonic() < end:
            if cond():
                return True
            await asyncio.sleep(0.2)
        return False

    # Every drift event leads to a decision; wait for requests to match what was detected.
    await settle(lambda: len(obs.drift_events) > 0 and len(obs.retrain_requests) >= len(
        {(e["model_id"]) for e in obs.drift_events}), 30)
    drifted = sorted({e["model_id"] for e in obs.drift_events})
    if drifted:
        say(f"  deploying v2 of {', '.join(drifted)} (closes their jobs, resets baselines)")
        await _deploy(settings, drifted)
    from driftline.streams.store.postgres import PostgresStore

    store = PostgresStore(pg.dsn, migrate=False)
    await store.start()
    try:
        counts: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = await store.counts()
            jobs = await store.jobs()
            if (counts.get("drift_events", 0) >= len({e["drift_id"] for e in obs.drift_events})
                    and counts.get("interactions", 0) >= total
                    and counts.get("model_versions", 0) >= len(drifted)
                    and all(j.get("state") in ("succeeded", "failed") for j in jobs)):
                break
            await asyncio.sleep(0.3)
        jobs = await store.jobs()
    finally:
        await store.close()
    stop.set()
    await follower
    return _summary(scenario, truth, index, obs, counts, jobs, time.monotonic() - t_start)


def _report(scenario: Scenario, home: Path, warmup: int) -> Path:
    """The same stream through the same monitor offline, drawn as an HTML report."""
    from driftline.detectors import MonitorConfig
    from driftline.streams.offline import replay
    from driftline.streams.offline.simulate import to_files

    files = to_files(scenario, home / "sim", progress=False)
    path = home / "report.html"
    replay.run(files["interactions"], home / "sim" / "drift-events.jsonl", files["feedback"],
               config=MonitorConfig(warmup=warmup), report_path=path, truth=scenario.truth())
    return path


def _summary(scenario: Scenario, truth: list[dict[str, Any]],
             index: dict[str, tuple[str, int]], obs: Observed, counts: dict[str, int],
             jobs: list[dict[str, Any]], seconds: float) -> int:
    say("")
    say("summary")
    say(f"  {'model':<14} {'kind':<10} {'signal':<13} {'injected at':>11} "
        f"{'detected at':>11} {'delay':>7}  detector")
    missed = 0
    for t in truth:
        hits = []
        for e in obs.drift_events:
            model, i = index.get(e["trigger_event_id"], (e["model_id"], -1))
            if model == t["model_id"] and e["kind"] == t["kind"] and i >= t["start"]:
                hits.append((i, e))
        if hits:
            i, e = min(hits, key=lambda h: h[0])
            say(f"  {t['model_id']:<14} {t['kind']:<10} {e['signal']:<13} {t['start']:>11} "
                f"{i:>11} {i - t['start']:>7}  {e['detector']}")
        else:
            missed += 1
            say(f"  {t['model_id']:<14} {t['kind']:<10} {t['signal']:<13} {t['start']:>11} "
                f"{'-':>11} {'missed':>7}")
    injected = {(t["model_id"], t["kind"]): t["start"] for t in truth}
    false_alarms = 0
    for e in obs.drift_events:
        model, i = index.get(e["trigger_event_id"], (e["model_id"], -1))
        start = injected.get((model, e["kind"]))
        if start is None or i < start:
            false_alarms += 1
    states: dict[str, int] = {}
    for j in jobs:
        states[j.get("state", "?")] = states.get(j.get("state", "?"), 0) + 1
    say(f"  drift events published: {len(obs.drift_events)} "
        f"({len({e['drift_id'] for e in obs.drift_events})} distinct drift_id), "
        f"false alarms: {false_alarms}")
    say(f"  retrain requests: {len(obs.retrain_requests)}; jobs: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(states.items())) or 'none'}")
    say("  store rows: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    say(f"  detected {len(truth) - missed}/{len(truth)} injected drifts in {seconds:.0f}s")
    return 0 if missed == 0 else 1
