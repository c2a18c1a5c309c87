"""Chaos on the real local broker: does driftline lose or double anything?

One seeded run of the real ``driftline worker`` (subprocesses) on the real local Kafka
broker and an embedded PostgreSQL, while interactions (with 1% poison records) are
published at a steady rate, and meanwhile:

  * ``kill -9`` of the worker, three times (restarted at once, as a supervisor would);
  * a second worker joins and leaves again (two rebalances), three times;
  * the broker is stopped and started again (the publisher waits for it);
  * PostgreSQL is stopped for ``--pg-down-s`` (60 s) and started again.

A worker that exits on its own is restarted too (and counted): failing closed is allowed,
losing data is not. Afterwards, once every consumer group has caught up, a verifier
compares what came out with an uninterrupted run over the same input — the monitor's own
code (``MonitorProcessor``) in-process over the records in their partitions' order, as
the durability tests do — and prints:

  * interactions accounted for: stored in ``interactions`` (valid ones) or dead-lettered
    (poison), of all published; and applied exactly once by the monitor (the ``seen``
    count of each model's latency signal in its latest state);
  * drift ids lost / duplicated / extra on ``driftline.drift-events`` (read as a
    ``read_committed`` subscriber), and rows lost / duplicated / extra in the store;
  * dead letters (distinct source records, and copies).

It ends with a gate (``bench/gate.py``): exit status 1 unless nothing is lost, nothing
duplicated and the drift ids are the uninterrupted run's.

    .venv/bin/python bench/chaos.py              # the defaults: ~8 minutes
    .venv/bin/python bench/chaos.py --models 8 --events 1500 --feed-s 150 \
        --pg-down-s 20                           # a quicker look
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
from driftline.streams.config import Settings
from driftline.streams.ingest.records import Record, RecordLike
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.state_codec import LatestStates, decode_state
from driftline.streams.store.embedded import EmbeddedPostgres
from driftline.streams.tooling.local_kafka import LocalKafka, free_port, free_ports
from gate import Gate

T0 = 1_767_225_600.0
PREFIX = "chaos"
APP_ID = "chaos-app"
PARTITIONS = 4
H_TOPIC, H_PARTITION, H_OFFSET = ("driftline.source.topic", "driftline.source.partition",
                                  "driftline.source.offset")
START = time.monotonic()
# (share of --feed-s, event): the kills, rebalances and the broker restart one after the
# other; the Postgres outage runs beside them (a kill and a rebalance fall inside it).
SCHEDULE = [(0.06, "kill1"), (0.14, "rebalance1"), (0.28, "pg"), (0.31, "kill2"),
            (0.40, "rebalance2"), (0.58, "broker"), (0.70, "kill3"), (0.78, "rebalance3")]


def say(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- the input --------------------------------------------------------------------------

POISON: list[tuple[bool, bytes]] = [  # (keyed by the model, value)
    (True, b"{not json"),
    (True, b'{"event_id":"p","model_id":"%s","ts":1,"latency_ms":NaN}'),
    (True, b'{"event_id":"p","model_id":"%s","ts":1,"latency_ms":"slow"}'),
    (False, b'{"event_id":"p","model_id":"%s","ts":1}'),
    (True, b'{"schema_version":9,"event_id":"p","model_id":"%s","ts":1}'),
    (True, b'{"event_id":"p","model_id":"someone-else","ts":1}'),
]


@dataclass
class Input:
    records: list[tuple[bytes | None, bytes]]  # (key, value) in publish order
    valid: dict[str, str] = field(default_factory=dict)  # event_id -> model_id
    per_model: Counter[str] = field(default_factory=Counter)
    poison: int = 0


def make_input(models: int, events: int, poison_share: float, seed: int) -> Input:
    """``models`` models of ``events`` interactions each; a seeded half of them drift
    (latency x1.6, error rate 10% -> 30%, or output length x1.5) at a seeded point; the
    models' streams interleaved at random (each keeps its order); one poison record in
    every 1/``poison_share`` inserted, keyed by the model whose record it precedes."""
    rng = np.random.default_rng(seed)
    streams: list[list[bytes]] = []
    names = [f"{PREFIX}-m{k:02d}" for k in range(models)]
    out = Input([])
    for k, name in enumerate(names):
        kind = ("latency", "accuracy", "length", None)[k % 4]
        shift = int(rng.integers(events // 3, 2 * events // 3))
        docs = []
        for i in range(events):
            on = kind is not None and i >= shift
            event_id = f"{name}-{i}"
            doc = {"event_id": event_id, "model_id": name, "model_version": "v1",
                   "ts": T0 + i,
                   "latency_ms": round(float(rng.lognormal(
                       math.log(500.0 * (1.6 if on and kind == "latency" else 1.0)), 0.3)), 3),
                   "output_tokens": int(rng.lognormal(
                       math.log(200.0 * (1.5 if on and kind == "length" else 1.0)), 0.4)),
                   "correct": bool(rng.random() >= (0.3 if on and kind == "accuracy"
                                                    else 0.1))}
            docs.append(orjson.dumps(doc))
            out.valid[event_id] = name
        out.per_model[name] = events
        streams.append(docs)
    pos = [0] * models
    left = list(range(models))
    step = round(1 / poison_share) if poison_share > 0 else 0
    while left:
        j = int(rng.integers(len(left)))
        k = left[j]
        name = names[k]
        if step and len(out.records) % step == step - 1:
            keyed, value = POISON[out.poison % len(POISON)]
            value = value.replace(b"%s", name.encode())
            out.records.append((name.encode() if keyed else None, value))
            out.poison += 1
        out.records.append((name.encode(), streams[k][pos[k]]))
        pos[k] += 1
        if pos[k] == len(streams[k]):
            left.pop(j)
    return out


def partition_of(key: bytes) -> int:
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def reference(data: Input, settings: Settings) -> tuple[list[dict[str, Any]], int]:
    """The uninterrupted run: the drift events and the number of rejects of the monitor's
    code over the records in publish order (keyless ones are rejected either way)."""
    from prometheus_client import CollectorRegistry

    topic = settings.topic("interactions")
    proc = MonitorProcessor(
        interactions_topic=topic, feedback_topic=settings.topic("feedback"),
        updates_topic=settings.topic("model-updates"),
        monitor_config=settings.monitor_config(), metrics=Metrics(CollectorRegistry()),
        max_payload_bytes=settings.max_payload_bytes)
    offsets: Counter[int] = Counter()
    records: list[RecordLike] = []
    for key, value in data.records:
        part = partition_of(key) if key is not None else 0
        records.append(Record(topic, part, offsets[part], key, value))
        offsets[part] += 1
    result = proc.process(records, drain=True)
    return [ev for _, ev in result.drift_events], len(result.rejects)


# -- the processes ----------------------------------------------------------------------

def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Worker:
    """One ``driftline worker`` subprocess."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def start(self) -> None:
        self.port = free_port()
        env = {**self.env, "DRIFTLINE_WEB_PORT": str(self.port),
               "DRIFTLINE_DATA_DIR": str(self.workdir / f"data-{self.name}")}
        self.starts += 1
        log = open(self.workdir / f"worker-{self.name}-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.streams.cli", "worker"], env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited while starting; see "
                                   f"{self.workdir}/worker-{self.name}-{self.starts}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start in {timeout:.0f} s")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def health(self) -> dict[str, Any] | None:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz",
                                        timeout=2) as r:
                return dict(orjson.loads(r.read()))
        except OSError:
            return None


# -- the broker as a client sees it -----------------------------------------------------

async def group_lag(bootstrap: str, group: str, topics: list[str]) -> int | None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await consumer.start()
        await admin.start()
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        return sum(max(0, end[tp] - max(committed[tp].offset if tp in committed else 0, 0))
                   for tp in tps)
    except (KafkaError, OSError):
        return None
    finally:
        await admin.close()
        await consumer.stop()


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        desc = (await admin.describe_consumer_groups([group]))[0].groups[0]
        return str(desc[2]), len(desc[5])
    except (KafkaError, OSError):
        return "", 0
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end, as a ``read_committed`` subscriber sees it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed",
                                max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=500)
            for msgs in fetched.values():
                out.extend(msgs)
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
        return out
    finally:
        await consumer.stop()


async def query(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


# -- the run ----------------------------------------------------------------------------

class Chaos:
    def __init__(self, args: argparse.Namespace, data: Input, workdir: Path) -> None:
        self.args = args
        self.data = data
        self.workdir = workdir
        port, controller = free_ports(2)
        self.kafka = LocalKafka(home=workdir / "kafka", port=port, controller_port=controller)
        self.pg = EmbeddedPostgres(workdir / "pg")
        self.dsn = ""
        self.published = 0
        self.broker_up = asyncio.Event()
        self.feed_lock = asyncio.Lock()
        self.workers: dict[str, Worker] = {}
        self.wanted: set[str] = set()  # workers that should be running
        self.unplanned: list[str] = []
        self.events_done: list[str] = []
        self.current = "starting"

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def env(self) -> dict[str, str]:
        return {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": self.bootstrap,
                "DRIFTLINE_TOPIC_PREFIX": PREFIX, "DRIFTLINE_APP_ID": APP_ID,
                "DATABASE_URL": self.dsn, "DRIFTLINE_WARMUP": str(self.args.warmup),
                "DRIFTLINE_BATCH_WITHIN_S": "0.05", "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                # Faust's group (the retrain agent) waits out a killed member's session.
                "BROKER_SESSION_TIMEOUT": "10", "BROKER_REBALANCE_TIMEOUT": "10"}

    async def start_worker(self, name: str) -> Worker:
        w = self.workers.get(name) or Worker(name, self.env(), self.workdir)
        self.workers[name] = w
        w.start()
        self.wanted.add(name)
        await asyncio.to_thread(w.wait_up)
        return w

    # -- background tasks --

    async def supervise(self) -> None:
        """Restart a wanted worker that exited on its own (and count it)."""
        while True:
            await asyncio.sleep(0.5)
            for name in list(self.wanted):
                w = self.workers[name]
                if not w.alive():
                    assert w.proc is not None
                    self.unplanned.append(f"{name} exit {w.proc.returncode} during "
                                          f"{self.current}")
                    say(f"worker {name} exited on its own ({w.proc.returncode}); restarting")
                    w.start()

    async def feed(self) -> None:
        from aiokafka import AIOKafkaProducer

        topic = f"{PREFIX}.interactions"
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            records = self.data.records
            chunk = self.args.chunk
            interval = chunk * self.args.feed_s / len(records)
            for lo in range(0, len(records), chunk):
                await self.broker_up.wait()
                async with self.feed_lock:
                    futs = [await producer.send(topic, value, key=key)
                            for key, value in records[lo:lo + chunk]]
                    await asyncio.gather(*futs)
                self.published = min(lo + chunk, len(records))
                await asyncio.sleep(interval)
        finally:
            await producer.stop()

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(self.args.progress_s)
            rows = "?"
            try:
                rows = str((await query(self.dsn, "select count(*) from interactions"))[0][0])
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                rows = "down"
            procs = {n: (w.health() or {}).get("interactions_processed", "-")
                     for n, w in self.workers.items() if w.alive()}
            say(f"published {self.published:,}/{len(self.data.records):,}  "
                f"processed {procs}  store rows {rows}  now: {self.current}")

    # -- the chaos --

    async def wait_published(self, share: float) -> None:
        while self.published < share * len(self.data.records):  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # (the feeder's progress, polled)

    async def kill9(self, n: int) -> None:
        w = self.workers["a"]
        self.current = f"kill -9 #{n}"
        say(f"kill -9 of worker a (#{n}), restarted at once")
        self.wanted.discard("a")  # not the supervisor's to restart
        w.signal(signal.SIGKILL)
        await asyncio.to_thread(w.proc.wait)  # type: ignore[union-attr]
        w.start()
        self.wanted.add("a")
        await asyncio.to_thread(w.wait_up)

    async def rebalance(self, n: int) -> None:
        self.current = f"rebalance #{n}"
        say(f"rebalance #{n}: worker b joins")
        b = await self.start_worker("b")
        group = f"{APP_ID}-monitor"
        deadline = time.monotonic() + 120
        while await group_state(self.bootstrap, group) != ("Stable", 2):
            if time.monotonic() > deadline:
                say("  the monitor group never showed two members")
                break
            await asyncio.sleep(0.5)
        deadline = time.monotonic() + 30
        while ((b.health() or {}).get("interactions_processed") or 0) == 0:
            if time.monotonic() > deadline:
                say("  worker b processed nothing in 30 s")
                break
            await asyncio.sleep(0.5)
        say(f"rebalance #{n}: worker b leaves (SIGTERM)")
        self.wanted.discard("b")
        code = await asyncio.to_thread(b.stop)
        if code not in (0, -signal.SIGTERM):
            self.unplanned.append(f"b exit {code} on SIGTERM (rebalance #{n})")

    async def broker_restart(self) -> None:
        self.current = "broker restart"
        say("broker restart: publisher paused, broker stopped")
        self.broker_up.clear()
        async with self.feed_lock:
            await asyncio.to_thread(self.kafka.stop)
        await asyncio.sleep(self.args.broker_down_s)
        await asyncio.to_thread(self.kafka.start, 180, None, True)
        say("broker restart: broker back, publisher resumed")
        self.broker_up.set()

    async def pg_outage(self) -> None:
        say(f"postgres down for {self.args.pg_down_s:g} s")
        await asyncio.to_thread(self.pg.stop)
        await asyncio.sleep(self.args.pg_down_s)
        await asyncio.to_thread(self.pg.start)
        say("postgres back")

    async def run(self) -> dict[str, Any]:
        say(f"starting Kafka and PostgreSQL under {self.workdir}")
        await asyncio.to_thread(self.kafka.start, 180, None, True)
        self.broker_up.set()
        self.dsn = await asyncio.to_thread(self.pg.start)
        await self.start_worker("a")
        say(f"worker a up; publishing {len(self.data.records):,} records "
            f"({self.data.poison:,} poison) over {self.args.feed_s:g} s")
        tasks = [asyncio.create_task(t) for t in (self.supervise(), self.progress())]
        feeder = asyncio.create_task(self.feed())
        # The schedule, in seconds of publishing (seeded jitter); an event that is due
        # while the one before still runs follows it at once.
        t_feed = time.monotonic()
        outage: asyncio.Task[None] | None = None
        rng = random.Random(self.args.seed)
        for share, name in SCHEDULE:
            at = t_feed + self.args.feed_s * (share + rng.uniform(-0.01, 0.01))
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if name.startswith("kill"):
                await self.kill9(int(name[-1]))
            elif name.startswith("rebalance"):
                await self.rebalance(int(name[-1]))
            elif name == "pg":
                outage = asyncio.create_task(self.pg_outage())
            elif name == "broker":
                await self.broker_restart()
            self.events_done.append(name)
            self.current = "steady"
        if feeder.done():
            say("warning: the input ran out before the last event (raise --feed-s)")
        await feeder
        if outage is not None:
            await outage
        self.current = "draining"
        say("everything published; waiting for every consumer group to catch up")
        drained = await self.drain()
        for t in tasks:
            t.cancel()
        return {"drained": drained}

    async def drain(self) -> bool:
        groups = [(f"{APP_ID}-monitor", [f"{PREFIX}.{t}" for t in
                                         ("interactions", "feedback", "model-updates")]),
                  (f"{APP_ID}-logger", [f"{PREFIX}.interactions"]),
                  (APP_ID, [f"{PREFIX}.drift-events"])]
        deadline = time.monotonic() + self.args.drain_s
        quiet = 0
        while time.monotonic() < deadline:
            lags = [await group_lag(self.bootstrap, g, ts) for g, ts in groups]
            quiet = quiet + 1 if lags == [0, 0, 0] else 0
            if quiet >= 3:  # three polls in a row: the store's writes are in
                return True
            await asyncio.sleep(2)
        say(f"not drained after {self.args.drain_s:g} s: lags {lags}")
        return False

    async def stop(self) -> None:
        for name in list(self.workers):
            self.wanted.discard(name)
            await asyncio.to_thread(self.workers[name].stop)
        await asyncio.to_thread(self.kafka.stop)
        await asyncio.to_thread(self.pg.close)


# -- the verifier -----------------------------------------------------------------------

async def verify(chaos: Chaos, ref: list[dict[str, Any]], ref_rejects: int
                 ) -> dict[str, Any]:
    data = chaos.data
    bootstrap, dsn = chaos.bootstrap, chaos.dsn
    by_id = {ev["drift_id"]: ev for ev in ref}
    events = [orjson.loads(m.value) for m in
              await read_topic(bootstrap, f"{PREFIX}.drift-events")]
    copies = Counter(ev["drift_id"] for ev in events)
    differing = sum(1 for ev in events
                    if ev["drift_id"] in by_id and ev != by_id[ev["drift_id"]])
    dead = await read_topic(bootstrap, f"{PREFIX}.dead-letters")
    sources: Counter[tuple[str | None, ...]] = Counter()
    for m in dead:
        h = {k: v.decode() for k, v in m.headers}
        sources[h.get(H_TOPIC), h.get(H_PARTITION), h.get(H_OFFSET)] += 1
    stored_ids = {r[0] for r in await query(dsn, "select event_id from interactions")}
    rows = (await query(dsn, "select count(*) from interactions"))[0][0]
    drift_rows = [r[0] for r in await query(dsn, "select drift_id from drift_events")]
    same_detection = (await query(
        dsn, "select count(*) - count(distinct (model_id, signal, detector,"
             " trigger_event_id)) from drift_events"))[0][0]
    decided_twice = (await query(
        dsn, "select count(*) from (select d from retrain_decisions, unnest(drift_ids) d"
             " group by d having count(*) > 1) x"))[0][0]
    undecided = (await query(
        dsn, "select count(*) from drift_events where decision_id is null"))[0][0]
    jobs = (await query(dsn, "select count(*) from retrain_jobs"))[0][0]
    # Exactly-once application: each model's latency signal counts the values it was fed.
    states = LatestStates.of([(m.key, m.value, m.partition) for m in
                            await read_topic(bootstrap, f"{PREFIX}.monitor-state")])
    seen = {}
    for model, (part, blob) in states.items():
        st = decode_state(blob, part)
        seen[model] = int(st.monitor.signals["latency"].seen)
    valid = set(data.valid)
    return {
        "published": len(data.records), "valid": len(valid), "poison": data.poison,
        "ref_rejects": ref_rejects,
        "stored_valid": len(stored_ids & valid), "stored_other": len(stored_ids - valid),
        "rows_lost": len(valid - stored_ids), "interaction_rows_dup": rows - len(stored_ids),
        "dead_sources": len(sources), "dead_copies": sum(sources.values()),
        "applied": sum(min(seen.get(m, 0), n) for m, n in data.per_model.items()),
        "applied_twice": sum(max(0, seen.get(m, 0) - n) for m, n in data.per_model.items()),
        "models_off": sum(seen.get(m, 0) != n for m, n in data.per_model.items()),
        "ref_ids": len(by_id), "ids": len(copies),
        "lost": len(set(by_id) - set(copies)), "extra": len(set(copies) - set(by_id)),
        "duplicated": sum(1 for c in copies.values() if c > 1),
        "copies": sum(copies.values()), "differing": differing,
        "drift_rows": len(drift_rows), "drift_rows_lost": len(set(by_id) - set(drift_rows)),
        "drift_rows_extra": len(set(drift_rows) - set(by_id)),
        "same_detection_rows": same_detection, "decided_twice": decided_twice,
        "undecided": undecided, "jobs": jobs,
    }


def report(v: dict[str, Any], chaos: Chaos, drained: bool, elapsed: float) -> int:
    accounted = v["stored_valid"] + v["dead_sources"]
    print(f"\n# chaos: {v['published']:,} records ({v['valid']:,} interactions of "
          f"{len(chaos.data.per_model)} models, {v['poison']:,} poison), seed "
          f"{chaos.args.seed}, {elapsed:.0f} s")
    print("events: " + ", ".join(chaos.events_done)
          + f"; postgres down {chaos.args.pg_down_s:g} s")
    print(f"unplanned worker exits (restarted): {len(chaos.unplanned)}"
          + (f" ({'; '.join(chaos.unplanned)})" if chaos.unplanned else ""))
    print(f"drained: {'yes' if drained else 'NO'}\n")
    w = 44
    print(f"{'':<{w}}  {'uninterrupted':>13}  {'chaos':>13}")
    rows = [
        ("interactions accounted for", v["published"], accounted),
        ("  stored in the store (valid)", v["valid"], v["stored_valid"]),
        ("  dead-lettered (poison, distinct sources)", v["ref_rejects"], v["dead_sources"]),
        ("  applied once by the monitor", v["valid"], v["applied"]),
        ("drift ids", v["ref_ids"], v["ids"]),
        ("drift ids lost", 0, v["lost"]),
        ("drift ids duplicated (published > once)", 0, v["duplicated"]),
        ("drift ids extra", 0, v["extra"]),
        ("drift events differing from the reference", 0, v["differing"]),
        ("drift_events rows", v["ref_ids"], v["drift_rows"]),
        ("rows lost (interactions + drift_events)", 0, v["rows_lost"] + v["drift_rows_lost"]),
        ("rows duplicated", 0, v["interaction_rows_dup"] + v["same_detection_rows"]
         + v["decided_twice"]),
        ("rows extra", 0, v["stored_other"] + v["drift_rows_extra"]),
        ("dead letters (records / copies)", f"{v['poison']} / {v['poison']}",
         f"{v['dead_sources']} / {v['dead_copies']}"),
        ("interactions applied twice", 0, v["applied_twice"]),
        ("drift events without a decision", 0, v["undecided"]),
    ]
    for name, ref, got in rows:
        fmt = (lambda x: f"{x:,}" if isinstance(x, int) else str(x))  # noqa: E731
        print(f"{name:<{w}}  {fmt(ref):>13}  {fmt(got):>13}")
    print(f"(retrain jobs: {v['jobs']}; drift event copies on the topic: {v['copies']})\n")

    gate = Gate("chaos: nothing lost, nothing doubled")
    gate.check("interactions accounted for", accounted, "==", v["published"])
    gate.check("interactions applied exactly once (models off)", v["models_off"], "==", 0)
    gate.check("drift ids lost", v["lost"], "==", 0)
    gate.check("drift ids duplicated", v["duplicated"], "==", 0)
    gate.check("drift ids extra", v["extra"], "==", 0)
    gate.check("store rows lost", v["rows_lost"] + v["drift_rows_lost"], "==", 0)
    gate.check("store rows duplicated", v["interaction_rows_dup"] + v["same_detection_rows"]
               + v["decided_twice"], "==", 0)
    gate.check("dead letters (distinct poison records)", v["dead_sources"], "==", v["poison"])
    gate.check("consumer groups caught up", 1 if drained else 0, "==", 1)
    print(gate.table())
    return gate.status()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=24)
    ap.add_argument("--events", type=int, default=4000, help="interactions per model")
    ap.add_argument("--poison-share", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--feed-s", type=float, default=300.0,
                    help="seconds over which the input is published, evenly")
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--pg-down-s", type=float, default=60.0)
    ap.add_argument("--broker-down-s", type=float, default=5.0)
    ap.add_argument("--drain-s", type=float, default=240.0)
    ap.add_argument("--progress-s", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    # The publisher's retries while the broker restarts are expected: not on the screen.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)

    data = make_input(args.models, args.events, args.poison_share, args.seed)
    settings = Settings.from_env({"DRIFTLINE_TOPIC_PREFIX": PREFIX,
                                  "DRIFTLINE_WARMUP": str(args.warmup)})
    say(f"uninterrupted run over {len(data.records):,} records (in-process monitor)")
    ref, ref_rejects = reference(data, settings)
    say(f"  {len(ref)} drift events, {ref_rejects} rejects")
    workdir = Path(tempfile.mkdtemp(prefix="driftline-chaos-"))
    chaos = Chaos(args, data, workdir)
    status = 1
    t0 = time.monotonic()

    async def go() -> int:
        try:
            drained = (await chaos.run())["drained"]
            elapsed = time.monotonic() - t0
            say("verifying")
            v = await verify(chaos, ref, ref_rejects)
            return report(v, chaos, drained, elapsed)
        finally:
            say("stopping")
            await chaos.stop()

    try:
        status = asyncio.run(go())
    finally:
        if args.keep:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
