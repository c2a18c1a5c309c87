"""A flood of model ids against the real worker on the real local broker: memory and rate.

A producer that writes a fresh ``model_id`` per record (a bug, or an attack) used to take
the worker to ~8 KB per id (200,000 ids: 1.65 GB) and its rate down fiftyfold. Bounded
now by three things (``streams/monitor/admission.py``, ``spill.py``): new models are
admitted at ``DRIFTLINE_MODEL_ADMISSION_PER_S`` (the rest dead-lettered as
``model_not_admitted``), at most ``DRIFTLINE_MAX_MODELS`` are held in memory (idle ones
wait on disk), and every other per-model structure is capped.

Two topics (defaults for every bound). On each, a first worker takes the first 5% of
``--normal`` interactions of 100 models and checkpoints; then a second worker of the
same group, which restores those models from the state topic (a worker that knows its
models), takes what follows, and is measured:

  normal  the rest of the 100 models' interactions
  flood   the same, interleaved at random with ``--ids`` distinct new ids of
          ``--per-id`` interactions each

For each: input records per second (from the first record taken to the last), the peak
resident memory of the worker (``/proc``, polled four times a second), and at the end what
happened to every record: fed to a monitor or dead-lettered, by reason. Targets (issue
19): with 1,000,000 ids, peak RSS ≤ 1 GiB and the rate ≥ 50% of the normal stream's; every
record accounted for; every record of the 100 models fed (none shed with the flood). A
timing on a shared host: run by hand, not in CI.

    .venv/bin/python bench/flood.py                       # 1,000,000 ids x 2, then cap 1,000
    .venv/bin/python bench/flood.py --ids 200000 --normal 300000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from driftline.streams.tooling.local_kafka import LocalKafka, free_ports
from gate import Gate
from throughput import MODELS, Worker, compact, fill, log, make_docs, side_by_side

MAX_RSS_BYTES = 1 << 30
MIN_RATE_VS_NORMAL = 0.5


def flood_records(normal: list[tuple[bytes, bytes]], ids: int, per_id: int, seed: int
                  ) -> list[tuple[bytes, bytes]]:
    """``normal`` with ``ids * per_id`` records of new ids spread through it at random
    (each id's records in order, the normal ones in theirs)."""
    rng = random.Random(seed)
    now = time.time()
    flood = []
    for k in range(ids):
        model = f"flood-{k:07d}"
        key = model.encode()
        for j in range(per_id):
            flood.append((key, compact(orjson.dumps({
                "event_id": f"{model}-{j}", "model_id": model, "ts": now,
                "latency_ms": round(rng.lognormvariate(6.4, 0.35), 2),
                "output_tokens": rng.randint(20, 400)}))))
    # Interleave: a random merge that keeps both sequences' own order.
    out: list[tuple[bytes, bytes]] = []
    a, b = 0, 0
    total = len(normal) + len(flood)
    while a < len(normal) or b < len(flood):
        if b >= len(flood) or (a < len(normal)
                               and rng.random() * (total - a - b) < len(normal) - a):
            out.append(normal[a])
            a += 1
        else:
            out.append(flood[b])
            b += 1
    return out


class Peak:
    """The worker's peak resident memory, polled in a thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.worker.rss_bytes())
            except OSError:
                return
            self._stop.wait(0.25)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def wait_consumed(worker: Worker, n: int, timeout: float = 3600) -> None:
    """Until the worker has taken ``n`` input records (``/healthz``), with progress. (The
    rates come from ``throughput.side_by_side``.)"""
    deadline = time.monotonic() + timeout
    last_log = 0.0
    while (done := worker.consumed() or 0.0) < n:
        if worker.proc.poll() is not None:
            raise RuntimeError("driftline worker exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker did not take {n:,} records in {timeout:.0f} s")
        if time.monotonic() - last_log > 5:
            log(f"  {done:,.0f}/{n:,} records, RSS {worker.rss_bytes() / 2**20:,.0f} MiB")
            last_log = time.monotonic()
        time.sleep(0.25)


def metrics(worker: Worker) -> dict[str, float]:
    """The worker's counters that account for the records, summed over labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        if "reason=" in name_labels:
            name += "|" + name_labels.split('reason="', 1)[1].split('"', 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


async def dead_letters(boot: str, topic: str) -> tuple[int, int]:
    """The dead letters in the topic, and those whose key is one of the 100 normal models
    (``model-NNNN``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    parts = [p["partition"] for t in described if t["topic"] == topic and not t["error_code"]
             for p in t["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0, 0
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        n = total = 0
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            for _tp, msgs in (await consumer.getmany(*todo, timeout_ms=1000)).items():
                total += len(msgs)
                n += sum(1 for m in msgs if m.key is not None and m.key.startswith(b"model-"))
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
        return total, n
    finally:
        await consumer.stop()


async def committed(boot: str, group: str, topic: str) -> int:
    """The offsets ``group`` committed on ``topic``, summed over its partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic)


def prepare(boot: str, prefix: str, known: list[tuple[bytes, bytes]],
            records: list[tuple[bytes, bytes]], tmp: Path, warmup: int) -> None:
    """A worker takes ``known`` (its models' first records) and checkpoints; then
    ``records`` are published, for a new worker of the same group (which restores those
    models from the state topic) to take."""
    topic = f"{prefix}.interactions"
    log(f"[{prefix}] publishing {len(known):,} records of the models to know")
    asyncio.run(fill(boot, topic, known))  # type: ignore[arg-type]
    first = Worker(boot, prefix, tmp, warmup)
    try:
        wait_consumed(first, len(known))
        deadline = time.monotonic() + 120
        while asyncio.run(committed(boot, f"{prefix}-app0-monitor", topic)) < len(known):
            if time.monotonic() > deadline:
                raise TimeoutError("the first worker did not commit its records")
            time.sleep(0.5)
    finally:
        first.stop()
    log(f"[{prefix}] publishing {len(records):,} records")
    asyncio.run(fill(boot, topic, records))  # type: ignore[arg-type]


def settle(boot: str, prefix: str, w: Worker, records: list[tuple[bytes, bytes]]
           ) -> dict[str, float]:
    """Once ``w`` has taken every record: what happened to each (the counters settle at
    the next checkpoint), the dead letters in the topic, and the 100 models' share."""
    deadline = time.monotonic() + 120
    while True:
        m = metrics(w)
        fed = m.get("driftline_interactions_processed_total", 0.0)
        dead = sum(v for k, v in m.items()
                   if k.startswith("driftline_dead_letters_published_total|"))
        if fed + dead >= len(records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    normal = sum(1 for key, _ in records if key.startswith(b"model-"))
    in_topic, lost = asyncio.run(dead_letters(boot, f"{prefix}.dead-letters"))
    out = {"records": float(len(records)), "fed": fed, "dead": dead,
           "dead_in_topic": float(in_topic), "normal": float(normal),
           "normal_fed": float(normal - lost)}
    out.update({k: v for k, v in m.items() if k.startswith((
        "driftline_dead_letters_published_total|", "driftline_models_",
        "driftline_monitored_models"))})
    return out


def measure(boot: str, streams: dict[str, tuple[str, list[tuple[bytes, bytes]]]], tmp: Path,
            warmup: int) -> dict[str, dict[str, float]]:
    """Workers on prepared streams of the same length at the same time, each on a core
    of its own, trading cores every 0.05 s (``throughput.side_by_side``: the same spells
    of a busy host for all), measured over the same stretch of their streams (5% to
    35%): records per wall second and per CPU-second of each; then each one's peak RSS
    and accounting."""
    workers = {name: Worker(boot, prefix, tmp, warmup) for name, (prefix, _) in streams.items()}
    peaks = {name: Peak(w) for name, w in workers.items()}
    out: dict[str, dict[str, float]] = {}
    try:
        total = len(next(iter(streams.values()))[1])
        # (A stretch early enough that the faster stream is still running at its end.)
        rates = side_by_side(workers, (total // 20, total * 7 // 20), total)
        for name, w in workers.items():
            wait_consumed(w, total)
            prefix, records = streams[name]
            out[name] = settle(boot, prefix, w, records)
            out[name]["rate"], out[name]["cpu_rate"] = rates[name]
    finally:
        for name, w in workers.items():
            rss = peaks[name].stop()
            out.setdefault(name, {})["rss"] = float(rss)
            w.stop()
    for name, r in out.items():
        log(f"  {name}: {r.get('rate', 0):,.0f} records/s ({r.get('cpu_rate', 0):,.0f} per "
            f"CPU-second), peak RSS {r['rss'] / 2**20:,.0f} MiB, fed {r.get('fed', 0):,.0f}, "
            f"dead-lettered {r.get('dead', 0):,.0f}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=1_000_000, help="distinct new model ids")
    ap.add_argument("--per-id", type=int, default=2, help="interactions per new id")
    ap.add_argument("--normal", type=int, default=1_000_000,
                    help="interactions of the 100 normal models (in both streams)")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--cap", type=int, default=1000,
                    help="then the same flood with DRIFTLINE_MAX_MODELS at this (0: skip)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="driftline-flood-"))
    port, controller_port = free_ports(2)
    kafka = LocalKafka(home=tmp / "kafka", port=port, controller_port=controller_port)
    kafka.start(progress=log, tied=True)
    try:
        normal = make_docs(args.normal, 0, MODELS, seed=3)
        alone = max(args.normal // 20, MODELS)
        known, rest = normal[:alone], normal[alone:]
        log(f"[flood] generating {args.ids:,} ids x {args.per_id}")
        flooded = flood_records(rest, args.ids, args.per_id, seed=11)
        # The normal stream as long as the flooded one: both measured over one stretch.
        plain = make_docs(len(flooded), 0, MODELS, seed=3, start=alone)
        del normal, rest
        prepare(kafka.bootstrap, "fnormal", known, plain, tmp, args.warmup)
        prepare(kafka.bootstrap, "fflood", known, flooded, tmp, args.warmup)
        log("[normal | flood] two workers side by side")
        got = measure(kafka.bootstrap, {"normal": ("fnormal", plain),
                                        "flood": ("fflood", flooded)}, tmp, args.warmup)
        base, fl = got["normal"], got["flood"]
        del plain
        capped = None
        if args.cap:  # the same flood with few models held: eviction and return at work
            prepare(kafka.bootstrap, "fcapped", known, flooded, tmp, args.warmup)
            os.environ["DRIFTLINE_MAX_MODELS"] = str(args.cap)
            try:
                log(f"[cap {args.cap:,}] the flood with DRIFTLINE_MAX_MODELS={args.cap:,}")
                capped = measure(kafka.bootstrap, {"capped": ("fcapped", flooded)}, tmp,
                                 args.warmup)["capped"]
            finally:
                del os.environ["DRIFTLINE_MAX_MODELS"]
    finally:
        kafka.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the broker's data: several GB
    mib = 2**20
    print(f"\n# a flood of {args.ids:,} new model ids x {args.per_id} interactions among "
          f"{args.normal:,} of {MODELS} models (defaults for every bound); normal and flood "
          "side by side, cap alone")
    print(f"{'stream':<10} {'records':>10} {'records/s':>10} {'/CPU-s':>8} {'peak RSS':>10} "
          f"{'fed':>10} {'dead-lettered':>14} {'held':>6} {'on disk':>8} {'evicted':>8} "
          f"{'refused':>9}")
    rows = [("normal", base), ("flood", fl)] + ([(f"cap {args.cap:,}", capped)]
                                                if capped else [])
    for name, r in rows:
        print(f"{name:<10} {r['records']:>10,.0f} {r['rate']:>10,.0f} {r['cpu_rate']:>8,.0f} "
              f"{r['rss'] / mib:>7,.0f} MiB {r['fed']:>10,.0f} {r['dead']:>14,.0f} "
              f"{r.get('driftline_monitored_models', 0):>6,.0f} "
              f"{r.get('driftline_models_spilled', 0):>8,.0f} "
              f"{r.get('driftline_models_evicted_total', 0):>8,.0f} "
              f"{r.get('driftline_models_refused_total', 0):>9,.0f}")
    reasons = {k.split("|", 1)[1]: v for k, v in fl.items() if "|" in k}
    print("flood dead letters by reason: "
          + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(reasons.items())) or "none"))
    ratio, wall = fl["cpu_rate"] / base["cpu_rate"], fl["rate"] / base["rate"]
    print(f"flood / normal: {ratio:.2f} per CPU-second, {wall:.2f} per wall second")
    gate = Gate(f"flood of {args.ids:,} model ids (a timing: not for CI)")
    gate.check("peak RSS under the flood", fl["rss"] / mib, "<=", MAX_RSS_BYTES / mib,
               unit="MiB")
    gate.check("flood rate / normal rate (per CPU-second)", ratio, ">=", MIN_RATE_VS_NORMAL,
               note=f"{wall:.2f} per wall second")
    gate.check("flood records accounted for (fed + dead-lettered)", fl["fed"] + fl["dead"],
               "==", fl["records"])
    gate.check("dead letters in the topic / counted", fl["dead_in_topic"], "==", fl["dead"])
    gate.check("the 100 models' records fed, alone", base["normal_fed"], "==", base["normal"])
    gate.check("the 100 models' records fed, under the flood", fl["normal_fed"], "==",
               fl["normal"])
    if capped:
        cap = f"DRIFTLINE_MAX_MODELS={args.cap:,}"
        gate.check(f"peak RSS, {cap}", capped["rss"] / mib, "<=", MAX_RSS_BYTES / mib,
                   unit="MiB")
        gate.check(f"records accounted for, {cap}", capped["fed"] + capped["dead"], "==",
                   capped["records"])
        gate.check(f"the 100 models' records fed, {cap}", capped["normal_fed"], "==",
                   capped["normal"])
        gate.check(f"models evicted, {cap}", capped.get("driftline_models_evicted_total", 0.0),
                   ">=", 1)
    print(gate.table())
    if args.json:
        args.json.write_text(json.dumps({"normal": base, "flood": fl, "capped": capped},
                                        indent=2))
    return gate.status()


if __name__ == "__main__":
    sys.exit(main())
