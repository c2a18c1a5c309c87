"""Streaming throughput on the real local broker, side by side in one run.

For each dataset (scalar signals only; with 384-d embeddings as JSON arrays) a topic is
pre-filled with interactions for 100 models, then consumed from the beginning by:

  raw       a bare aiokafka consumer loop that only fetches and decodes with orjson
            (the practical limit of a Python consumer)
  faust     a straightforward Faust agent: one event at a time, the same contract
            validation and detectors (``ModelMonitor.observe``), one table write per event
  driftline the real ``driftline worker`` process (monitor agent; logger disabled, the
            store is not what is measured here)

raw and driftline alternate ``--repeat`` times on the same topic (the worker with a new
group and an emptied state topic each time); the table shows medians, then every pair.
Then: a scalar stream of ``--poison-events`` with 1% poison messages against the same
stream clean, two workers side by side (the same spells of a busy host for both; each on
a core of its own, trading cores every 0.05 s; each measured over the same stretch of
its stream, past the models' warm-ups; which one starts first alternates), as records
per second and per CPU-second of each worker (``--poison-share 0`` puts the same clean
stream on both sides: the method's own noise);
produce -> drift event latency at half of driftline's measured
scalar rate (and at any other ``--latency-rate``), and the worker's resident memory with
1,000 active models with 384-d embeddings. The broker's data (several GB) is deleted at
the end unless ``BENCH_KEEP=1``. The run ends with a gate (``bench/gate.py``): each ratio,
latency and memory figure beside its target, exit status 1 when one is missed (a timing
on a shared host: run it as a check by hand, not in CI).

    .venv/bin/python bench/throughput.py            # defaults below
    .venv/bin/python bench/throughput.py --events 500000 --faust-events 5000 \
        --latency-rate 5000,20000,half
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from driftline.streams.tooling.local_kafka import LocalKafka, free_port, free_ports
from gate import Gate

MODELS = 100
# Targets (the README's): the worker against the raw consume loop and the per-event Faust
# agent, 1% poison against the same stream clean, produce -> drift event p99, memory.
MIN_VS_RAW = 0.5
MIN_VS_FAUST = 3.0
MIN_POISONED_VS_CLEAN = 0.9
MAX_P99_S = 1.0
MAX_RSS_MIB = 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def compact(data: bytes) -> bytes:
    """A copy of exactly its size: the bytes ``orjson.dumps`` returns keep the ~4 kB its
    writer started with (a 100-byte record held ~4 kB of memory: a few million of them
    took the benchmark to the whole machine's memory)."""
    return bytes(memoryview(data))


def make_docs(n: int, dim: int, models: int, seed: int, start: int = 0,
              shift: dict[int, int] | None = None) -> list[tuple[bytes, bytes]]:
    """Seeded interactions as (key, value); ``shift`` maps model -> index of a x3 latency."""
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(math.log(600), 0.35, n)
    tok = rng.lognormal(math.log(180), 0.6, n).astype(int) + 1
    refusal = rng.random(n) < 0.02
    correct = rng.random(n) < 0.9
    out = []
    emb = None
    for k in range(n):
        if dim and k % 4096 == 0:
            emb = rng.standard_normal((min(4096, n - k), dim)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        i = start + k
        m = i % models
        mi = i // models
        latency = float(lat[k]) * (3.0 if shift and m in shift and mi >= shift[m] else 1.0)
        d: dict[str, Any] = {"event_id": f"e{i}", "model_id": f"model-{m:04d}",
                             "model_version": "v1", "ts": time.time(),
                             "latency_ms": round(latency, 2), "output_tokens": int(tok[k]),
                             "refusal": bool(refusal[k]), "correct": bool(correct[k])}
        if dim:
            assert emb is not None
            d["embedding"] = emb[k % 4096]
        out.append((d["model_id"].encode(),
                    compact(orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY))))
    return out


POISON: list[tuple[bytes | None, bytes]] = [
    (b"model-0000", b"{not json"),
    (b"model-0000", b'{"event_id":"p","model_id":"model-0000","ts":1,"latency_ms":NaN}'),
    (b"model-0000", b'{"event_id":"p","model_id":"model-0000","ts":1,"latency_ms":"slow"}'),
    (None, b'{"event_id":"p","model_id":"model-0000","ts":1}'),
    (b"model-0000", b'{"schema_version":9,"event_id":"p","model_id":"model-0000","ts":1}'),
]


def poisoned(records: list[tuple[bytes, bytes]], share: float
             ) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """Replace one record in every 1/share by a poison message; return them and the count.

    The position within each stretch moves (by 37, coprime with 100): records go round
    the models, so a fixed position would take every record of one model and none of
    the others'."""
    step = round(1 / share)
    out: list[tuple[bytes | None, bytes]] = list(records)
    bad = 0
    for start in range(0, len(out) - step + 1, step):
        out[start + (bad * 37) % step] = POISON[bad % len(POISON)]
        bad += 1
    return out, bad


async def fill(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]],
               partitions: int = 4) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=1 << 20, max_request_size=8 << 20)
    await producer.start()
    try:
        pending = []
        for k, (key, value) in enumerate(records):
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                log(f"  filled {k + 1:,}/{len(records):,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def drop_topic(bootstrap: str, topic: str) -> None:
    """Delete ``topic`` and wait until the cluster no longer lists it."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic in await admin.list_topics():
            await admin.delete_topics([topic])
        deadline = time.monotonic() + 60
        while topic in await admin.list_topics():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} still listed 60 s after its deletion")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def raw_rate(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{time.time()}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20)
    await consumer.start()
    loads = orjson.loads
    got = 0
    t0 = 0.0
    try:
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if batch and not t0:
                t0 = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    loads(m.value)
                got += len(msgs)
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - t0)


FAUST_APP = textwrap.dedent('''
    import os, sys, time
    import faust
    from driftline.detectors import ModelMonitor, MonitorConfig
    from driftline.streams.ingest.contract import parse_interaction

    N = int(os.environ["N"])
    app = faust.App(os.environ["APP"], broker="kafka://" + os.environ["BOOT"], store="memory://",
                    key_serializer="raw", value_serializer="raw", web_enabled=False,
                    consumer_auto_offset_reset="earliest", datadir=os.environ["DATA"])
    src = app.topic(os.environ["TOPIC"], key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw")
    state = app.Table("state", key_type=bytes, value_type=bytes, partitions=4)
    monitors = {}
    seen = {"n": 0, "t0": 0.0}

    @app.agent(src)
    async def monitor(stream):
        async for event in stream.events():
            if not seen["t0"]:
                seen["t0"] = time.perf_counter()
            it = parse_interaction(event.value, event.key)
            mon = monitors.get(it.model_id)
            if mon is None:
                mon = monitors[it.model_id] = ModelMonitor(it.model_id, MonitorConfig(
                    warmup=int(os.environ["WARMUP"])))
            mon.observe(it.obs)
            state[event.key] = mon.snapshot()  # one changelog record per event
            seen["n"] += 1
            if seen["n"] >= N:
                print("RATE", N / (time.perf_counter() - seen["t0"]), flush=True)
                os._exit(0)
''')


def faust_rate(bootstrap: str, topic: str, n: int, warmup: int, tmp: Path) -> float:
    script = tmp / "faust_baseline.py"
    script.write_text(FAUST_APP)
    env = {**os.environ, "N": str(n), "APP": f"fb{int(time.time())}", "BOOT": bootstrap,
           "TOPIC": topic, "DATA": str(tmp / "faust-data"), "WARMUP": str(warmup),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = (f"import runpy; m = runpy.run_path({str(script)!r}); "
            "from faust.worker import Worker; "
            "Worker(m['app'], loglevel='error', quiet=True, redirect_stdouts=False)"
            ".execute_from_commandline()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=3600, check=False)
    found = re.search(r"RATE ([0-9.]+)", out.stdout)
    if found:
        return float(found.group(1))
    raise RuntimeError(f"faust baseline failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


class Worker:
    """The real ``driftline worker`` in a subprocess, read through its /metrics."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, warmup: int, run: int = 0
                 ) -> None:
        self.port = free_port()
        env = {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
               "DRIFTLINE_TOPIC_PREFIX": prefix, "DRIFTLINE_APP_ID": f"{prefix}-app{run}",
               "DRIFTLINE_DATA_DIR": str(tmp / f"data-{prefix}-{run}"),
               "DRIFTLINE_WEB_PORT": str(self.port), "DRIFTLINE_WARMUP": str(warmup),
               "DRIFTLINE_LOG_SAMPLE_RATE": "0", "DRIFTLINE_BATCH_SIZE": "5000",
               "DRIFTLINE_BATCH_WITHIN_S": "0.02",
               "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "")}
        self.log = open(tmp / f"worker-{prefix}-{run}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "driftline.streams.cli", "worker",
                                      "--loglevel", "warning"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def pin(self, cpus: set[int]) -> None:
        """Run the worker (every thread of it) on these cores."""
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:  # a thread that just ended
                pass

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def _health(self, field: str) -> float | None:
        """One figure of the cheap ``/healthz`` (None while the worker does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return float(orjson.loads(r.read())[field])
        except OSError:
            return None

    def processed(self) -> float | None:
        """Interactions fed to monitors so far."""
        return self._health("interactions_processed")

    def consumed(self) -> float | None:
        """Input records (good or bad) taken in so far. Smoother than the interactions
        processed: while the worker is behind, runs wait (up to 512 per model, ~10% of
        this benchmark's stream) and are fed to the detectors in bursts."""
        return self._health("records_consumed")

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_processed(self, n: int, timeout: float = 3600) -> tuple[float, float]:
        """Seconds from the first processed interaction to the n-th, and the rate between.

        Polls ``/healthz`` four times a second and interpolates the crossing times
        linearly between polls. (Not ``/metrics``: a scrape renders every series and
        refreshes the per-model gauges, ~50 ms of the worker's event loop with 100 models,
        which Prometheus pays every 15 s, not several times a second.)
        """
        deadline = time.monotonic() + timeout
        prev: tuple[float, float] | None = None  # (time, count) of the previous scrape
        start: tuple[float, float] | None = None  # first scrape that showed progress
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("driftline worker exited")
            done = self.processed() or 0.0
            now = time.perf_counter()
            if start is None and done > 0:
                start = (now, done)  # timed from here: the rate over a measured count
            if done >= n and start is not None and prev is not None and done > prev[1]:
                t_end = prev[0] + (n - prev[1]) / (done - prev[1]) * (now - prev[0])
                dt = t_end - start[0]
                if dt <= 0:  # from none to all of them between two polls
                    raise RuntimeError(f"the worker processed all {n:,} interactions "
                                       "within one poll: too few to time, use more --events")
                return dt, (n - start[1]) / dt
            prev = (now, done)
            time.sleep(0.25)
        raise TimeoutError(f"worker did not process {n} interactions")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_metric(worker: Worker, name: str, value: float, timeout: float = 60) -> float:
    """The metric once it reached ``value`` (or what it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    got = worker.metric(name) or 0.0
    while got < value and time.monotonic() < deadline:
        time.sleep(0.2)
        got = worker.metric(name) or 0.0
    return got


def side_by_side(workers: dict[str, Worker], stretch: tuple[int, int], total: int,
                 timeout: float = 3600, swap_s: float = 0.05
                 ) -> dict[str, tuple[float, float]]:
    """Workers running at the same time on streams of ``total`` records, each measured
    over the same stretch of its stream (from its ``stretch[0]``-th record taken in to
    its ``stretch[1]``-th: past the models' warm-ups, say): records per second of wall
    time, and per second of the worker's own CPU time.

    Each worker has a core of its own, and they trade cores every ``swap_s`` seconds
    (with fewer cores than workers they float). On the 2-core host of the README's runs
    a plain CPU loop pinned to either core did 41-69 loops per CPU-second from one second
    to the next -- the host's other load, which the guest's CPU time does not show --
    and not the same on both cores at once. The same clean stream on both sides
    (``--poison-share 0``), 8 pairs each: floating, 0.91-1.16 per CPU-second; pinned to
    fixed cores, the side on core 0 came out ~30% ahead; trading cores every 0.5 s,
    0.94-1.06 (two loops: 0.92-1.06 over 2-second spells); every 0.05 s, 0.96-1.05,
    median 1.00 (the loops: 0.99-1.02). The stretch is counted in records, not seconds:
    a worker that starts ahead would otherwise be measured on another part of the
    stream. A stretch must lie where every worker was running (each had taken in records
    and none had finished its stream), or this raises.
    """
    lo, hi = stretch
    cores = sorted(os.sched_getaffinity(0))
    stop = threading.Event()

    def trade() -> None:
        turn = 0
        while not stop.is_set():
            for j, w in enumerate(workers.values()):
                w.pin({cores[(j + turn) % len(cores)]})
            turn += 1
            stop.wait(swap_s)

    trader = threading.Thread(target=trade, daemon=True)
    if len(cores) >= len(workers) > 1:
        trader.start()
    polls: dict[str, list[tuple[float, float, float]]] = {k: [] for k in workers}
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not finish")
            for kind, w in workers.items():
                if w.proc.poll() is not None:
                    raise RuntimeError(f"driftline worker {kind} exited")
                polls[kind].append((w.consumed() or 0.0, w.cpu_seconds(),
                                    time.perf_counter()))
            if all(p[-1][0] >= hi for p in polls.values()):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        if trader.is_alive():
            trader.join()

    def at(track: list[tuple[float, float, float]], count: float) -> tuple[float, float]:
        """(CPU seconds, time) when the worker had taken in ``count`` records."""
        for (c0, u0, t0), (c1, u1, t1) in pairwise(track):
            if c0 <= count <= c1 and c1 > c0:
                f = (count - c0) / (c1 - c0)
                return u0 + f * (u1 - u0), t0 + f * (t1 - t0)
        raise RuntimeError(f"no poll around record {count:,.0f}")

    def running(track: list[tuple[float, float, float]], t: float) -> bool:
        seen = [c for c, _, tp in track if tp <= t]
        return bool(seen) and 0 < seen[-1] < total

    out = {}
    for kind, track in polls.items():
        (u0, t0), (u1, t1) = at(track, lo), at(track, hi)
        for other, theirs in polls.items():
            if other != kind and not (running(theirs, t0) and running(theirs, t1)):
                raise RuntimeError(
                    f"{other} was not running through {kind}'s stretch: too few records to "
                    "time them side by side (more --poison-events for throughput.py, more "
                    "--normal for flood.py)")
        out[kind] = ((hi - lo) / (t1 - t0), (hi - lo) / max(1e-9, u1 - u0))
    return out


async def latency_run(bootstrap: str, prefix: str, rate: float, warmup: int, per_model: int,
                      worker: Worker) -> list[float]:
    """Publish at ``rate``/s with a latency drift per model; return produce->drift seconds.

    The models' warm-ups are published first and waited for (the worker is up, assigned
    and caught up); then the rest at ``rate``, with each model's shift at its own time
    spread over the stream.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    spread = per_model - warmup - 400
    shift = {m: warmup + 100 + (m * 7919) % spread for m in range(MODELS)}
    consumer = AIOKafkaConsumer(f"{prefix}.drift-events", bootstrap_servers=bootstrap,
                                auto_offset_reset="latest", group_id=None)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2,
                                max_batch_size=1 << 20)
    await producer.start()
    slot_of: dict[str, int] = {}  # measured event id -> its send slot
    sent_slot: list[float] = []  # slot -> when it was handed to the producer
    lat: list[float] = []

    async def follow() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    ev = orjson.loads(m.value)
                    s = slot_of.get(ev["trigger_event_id"])
                    if s is not None and s < len(sent_slot) and sent_slot[s]:
                        lat.append(now - sent_slot[s])
            if len(lat) >= MODELS:
                return

    task = asyncio.create_task(follow())
    total = per_model * MODELS
    # Payloads are made up front, stamped with their planned send time: the producer's
    # own work per record stays small (it shares the two cores with broker and worker).
    docs = [orjson.loads(value) for _, value in
            make_docs(total, 0, MODELS, seed=11, start=10_000_000, shift=None)]
    t0 = time.time() + 2.0
    values = []
    for k, d in enumerate(docs):
        m, mi = k % MODELS, k // MODELS
        if mi >= shift[m]:
            d["latency_ms"] *= 3.0
        d["ts"] = t0 + k / rate
        values.append((d["event_id"], d["model_id"].encode(), orjson.dumps(d)))
    topic = f"{prefix}.interactions"
    head = warmup * MODELS
    for _event_id, key, value in values[:head]:
        await producer.send(topic, value, key=key)
    await producer.flush()
    deadline = time.monotonic() + 300
    while (await asyncio.to_thread(worker.metric, "driftline_interactions_processed_total")
           or 0.0) < head:
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not take the warm-up interactions")
        await asyncio.sleep(0.5)
    # The load generator shares the two cores with broker and worker, so the measured
    # part is made up front: its records, stamped with their planned send times, are
    # appended to one record batch per partition and 5 ms slot (aiokafka's batch API).
    # Sending is then a few send_batch() calls every 5 ms -- a tenth of the CPU that
    # appending on the fly took, which the broker and the worker would otherwise lack.
    # Latency counts from the moment a record's slot was handed to the producer.
    topic = f"{prefix}.interactions"
    parts = sorted(await producer.partitions_for(topic))
    partition_of = {key: DefaultPartitioner()(key, parts, parts) for _, key, _ in values}
    slot_s = 0.005
    per_slot = rate * slot_s
    n_slots = math.ceil((total - head) / per_slot)
    t0 = time.time() + 2.0 + (total - head) * 10e-6  # (building takes ~5 us a record)
    slots: list[list[tuple[int, Any]]] = [[] for _ in range(n_slots)]
    current: dict[int, Any] = {}  # partition -> the batch being filled, in slot ``filling``
    filling = 0
    for k in range(head, total):
        event_id, key, value = values[k]
        planned = t0 + (k - head) / rate
        d = orjson.loads(value)
        d["ts"] = planned
        value = orjson.dumps(d)
        s = int((k - head) / per_slot)
        if s != filling:
            current, filling = {}, s
        slot_of[event_id] = s
        p = partition_of[key]
        batch = current.get(p)
        if batch is None or batch.append(key=key, value=value,
                                         timestamp=int(planned * 1000)) is None:
            batch = current[p] = producer.create_batch()  # the slot's first, or one full
            slots[s].append((p, batch))
            batch.append(key=key, value=value, timestamp=int(planned * 1000))
    sent_slot.extend([0.0] * n_slots)
    late = time.time() - t0
    if late > 0:
        log(f"  (sending starts {late:.1f}s after the planned time: built slowly)")
    start = max(t0, time.time())
    pending: list[Any] = []
    for s, batches in enumerate(slots):
        # A slot goes out when its last record is due.
        await asyncio.sleep(max(0.0, start + (s + 1) * slot_s - time.time()))
        sent_slot[s] = time.time()
        for p, batch in batches:
            pending.append(await producer.send_batch(batch, topic, partition=p))
        if len(pending) > 1000:
            await asyncio.gather(*pending)
            pending = []
        if s % 800 == 799 or s == n_slots - 1:
            k = min(total, head + int((s + 1) * per_slot))
            log(f"  latency run: {k:,}/{total:,} sent, {len(lat)} drift events")
    await asyncio.gather(*pending)
    await producer.flush()
    try:  # the follower ends when it has one detection per model
        await asyncio.wait_for(task, 30)
    except TimeoutError:
        pass
    await producer.stop()
    await consumer.stop()
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000, help="interactions per dataset")
    ap.add_argument("--faust-events", type=int, default=30_000,
                    help="events the per-event Faust baseline is timed over (it is slow)")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="alternating raw/driftline runs per dataset (medians are shown)")
    ap.add_argument("--latency-rate", default="half",
                    help="comma list of interactions/s for latency runs; 'half': half the "
                         "scalar max (the default)")
    ap.add_argument("--memory-models", type=int, default=1000)
    ap.add_argument("--memory-events", type=int, default=400, help="per model")
    ap.add_argument("--poison-events", type=int, default=1_500_000,
                    help="records of the clean and the poisoned stream (long enough that "
                         "the once-a-second checkpoints and held runs average out)")
    ap.add_argument("--poison-share", type=float, default=0.01,
                    help="share of poison messages (0: the same clean stream on both "
                         "sides, the measurement's own noise)")
    ap.add_argument("--skip", default="",
                    help="comma list of: scalar,embedding,poison,latency,memory")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    port, controller_port = free_ports(2)
    kafka = LocalKafka(home=tmp / "kafka", port=port, controller_port=controller_port)
    kafka.start(progress=log, tied=True)
    boot = kafka.bootstrap
    gate = Gate("streaming throughput, latency and memory (a timing: not for CI)")
    rows = []
    runs: list[tuple[str, list[float], list[float]]] = []
    max_rate = 0.0
    try:
        for name, dim in (("scalar", 0), ("embedding", 384)):
            if name in skip:
                continue
            prefix = f"b{name}"
            log(f"[{name}] generating and publishing {args.events:,} interactions")
            asyncio.run(fill(boot, f"{prefix}.interactions",
                             make_docs(args.events, dim, MODELS, seed=3)))
            raws, ourss = [], []
            for run in range(args.repeat):  # alternating, so both see the same machine
                log(f"[{name}] raw aiokafka + orjson loop ({run + 1}/{args.repeat})")
                raws.append(asyncio.run(raw_rate(boot, f"{prefix}.interactions", args.events)))
                log(f"[{name}] driftline worker ({run + 1}/{args.repeat})")
                if run:  # a fresh start: no state from the previous run, a new group
                    asyncio.run(drop_topic(boot, f"{prefix}.monitor-state"))
                w = Worker(boot, prefix, tmp, args.warmup, run)
                try:
                    ourss.append(w.wait_processed(args.events)[1])
                finally:
                    w.stop()
                log(f"  raw {raws[-1]:,.0f}/s, driftline {ourss[-1]:,.0f}/s")
            raw, ours = float(np.median(raws)), float(np.median(ourss))
            runs.append((name, raws, ourss))
            log(f"[{name}] per-event Faust agent ({args.faust_events:,} events)")
            fst = faust_rate(boot, f"{prefix}.interactions", args.faust_events, args.warmup,
                             tmp)
            rows.append((name, raw, fst, ours))
            if name == "scalar":
                max_rate = ours
        poison_row = None
        if "poison" not in skip:
            share, n = args.poison_share, args.poison_events
            log(f"[poison] scalar stream of {n:,} with {share:.0%} poison messages")
            clean_docs = make_docs(n, 0, MODELS, seed=3)
            records, bad = poisoned(clean_docs, share) if share else (clean_docs, 0)
            asyncio.run(fill(boot, "bclean.interactions", clean_docs))
            asyncio.run(fill(boot, "bpoison.interactions", records))
            del clean_docs, records
            # Side by side with the same stream clean: two workers at once, each measured
            # over the window in which both ran. (One after the other, a pair's rates moved
            # by +-20% with the machine, more than the 1% poison costs.) Each pair gives
            # the ratio of wall-clock rates, and of interactions per CPU-second of each
            # worker: two workers and the broker on two cores do not split them evenly.
            walls, cpus, dead = [], [], 0.0
            for run in range(args.repeat):
                for kind in ("bclean", "bpoison"):
                    asyncio.run(drop_topic(boot, f"{kind}.monitor-state"))
                # Which worker starts first alternates: the first gets ahead of the other,
                # by its start-up (imports, numba's compile) and the cores it then has
                # alone, and is at a later point of the stream while both run.
                kinds = ("bclean", "bpoison") if run % 2 == 0 else ("bpoison", "bclean")
                pair = {kind: Worker(boot, kind, tmp, args.warmup, 100 + run)
                        for kind in kinds}
                try:
                    # Measured once past the models' warm-ups (fits, thresholds), up to
                    # as far before the end.
                    past = 2 * args.warmup * MODELS
                    got = side_by_side(pair, (past, n - past), n)
                    # (Dead letters go out at checkpoints: read once all are out.)
                    dead = wait_metric(pair["bpoison"], "driftline_dead_letters_published_total",
                                       bad)
                finally:
                    for w in pair.values():
                        w.stop()
                # Records (good and bad) taken in per second.
                (cw, cc), (pw, pc) = got["bclean"], got["bpoison"]
                walls.append((pw, cw))
                cpus.append((pc, cc))
                log(f"  clean {cw:,.0f}/s ({cc:,.0f} per CPU-s), poisoned {pw:,.0f}/s "
                    f"({pc:,.0f} per CPU-s): {pw / cw:.2f} wall, {pc / cc:.2f} CPU; "
                    f"{dead:,.0f} dead letters")
            poison_row = (share, bad, dead, walls, cpus)
        print()
        print(f"throughput, {args.events:,} interactions / {MODELS} models, 4 partitions, "
              f"one worker process, 2 cores")
        print(f"{'dataset':<10} {'raw loop/s':>12} {'faust/s':>10} {'driftline/s':>12} "
              f"{'drift/raw':>10} {'drift/faust':>12}")
        for name, raw, fst, ours in rows:
            print(f"{name:<10} {raw:>12,.0f} {fst:>10,.0f} {ours:>12,.0f} {ours / raw:>10.2f} "
                  f"{ours / fst:>12.1f}")
            gate.check(f"{name}: driftline / raw loop", ours / raw, ">=", MIN_VS_RAW,
                       note=f"median of {args.repeat}")
            gate.check(f"{name}: driftline / per-event faust", ours / fst, ">=", MIN_VS_FAUST)
        print(f"targets: driftline/raw >= {MIN_VS_RAW}, driftline/faust >= {MIN_VS_FAUST:g}")
        if args.repeat > 1:
            print(f"(medians of {args.repeat} alternating runs; each run's driftline/raw:)")
            for name, raws, ourss in runs:
                print(f"  {name:<10} " + "  ".join(
                    f"{o:,.0f}/{r:,.0f} = {o / r:.2f}" for r, o in zip(raws, ourss, strict=True)))
        if poison_row:
            share, bad, dead, walls, cpus = poison_row
            print(f"scalar with {share:.0%} poison ({bad:,} bad records, {dead:,.0f} "
                  f"dead-lettered per run), two workers side by side (cores traded), "
                  f"{args.repeat} pairs:")
            for what, pairs in (("per CPU-second", cpus), ("per second", walls)):
                ratios = [p / c for p, c in pairs]
                if what == "per CPU-second":
                    gate.check(f"{share:.0%} poison: poisoned / clean per CPU-second",
                               float(np.median(ratios)), ">=", MIN_POISONED_VS_CLEAN,
                               note=f"median of {len(ratios)} pairs")
                print(f"  {what:<15} {float(np.median([p for p, _ in pairs])):>9,.0f} = "
                      f"{float(np.median(ratios)):.2f} x clean "
                      f"{float(np.median([c for _, c in pairs])):,.0f} (pairs: "
                      + ", ".join(f"{r:.2f}" for r in ratios) + ")")
            print(f"  target: >= {MIN_POISONED_VS_CLEAN} x clean")
        rates = [max_rate / 2 if r == "half" else float(r)
                 for r in args.latency_rate.split(",") if r and (r != "half" or max_rate)]
        for k, rate in enumerate(rates if "latency" not in skip else []):
            log(f"[latency] publishing at {rate:,.0f}/s with one drift per model")
            prefix = f"blat{k}"
            w = Worker(boot, prefix, tmp, 200)
            try:
                asyncio.run(fill(boot, f"{prefix}.interactions", []))
                lat = asyncio.run(latency_run(boot, prefix, rate, 200, 3000, w))
            finally:
                w.stop()
            p99 = None  # no detection: the figure is missing, and so is its target
            if lat:
                p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
                print(f"produce -> drift event at {rate:,.0f}/s: {len(lat)} detections, "
                      f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                      f"(target p99 <= {MAX_P99_S:g} s)")
            gate.check(f"produce -> drift event p99 at {rate:,.0f}/s", p99, "<=", MAX_P99_S,
                       unit="s", note=f"{len(lat)} detections")
        if "memory" not in skip:
            n = args.memory_models * args.memory_events
            log(f"[memory] {args.memory_models} models x {args.memory_events} interactions, "
                "384-d")
            prefix = "bmem"
            asyncio.run(fill(boot, f"{prefix}.interactions",
                             make_docs(n, 384, args.memory_models, seed=5)))
            w = Worker(boot, prefix, tmp, min(args.warmup, args.memory_events // 2))
            try:
                w.wait_processed(n)
                rss = w.rss_bytes()
            finally:
                w.stop()
            print(f"worker memory with {args.memory_models:,} active models (384-d, "
                  f"{args.memory_events} interactions each): RSS {rss / 2**20:,.0f} MiB "
                  f"(target <= {MAX_RSS_MIB} MiB)")
            gate.check(f"worker RSS, {args.memory_models:,} models with 384-d embeddings",
                       rss / 2**20, "<=", MAX_RSS_MIB, unit="MiB")
    finally:
        kafka.stop()
        if os.environ.get("BENCH_KEEP"):
            log(f"kept {tmp} (broker data, worker logs)")
        else:  # the broker's data: several GB per run
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(gate.table())
    return gate.status()


if __name__ == "__main__":
    sys.exit(main())
