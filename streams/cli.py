"""The ``driftline`` command."""

from __future__ import annotations

import os

# One BLAS thread: a streaming worker runs many small matrix products, where OpenBLAS'
# thread pool only adds contention (measured here: a 200x384 @ 384x32 product took
# 4.2 ms with the pool on 2 busy cores, 0.1 ms on one thread). Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from driftline.streams.config import Settings  # noqa: E402


def _kafka(args: argparse.Namespace) -> int:
    from driftline.streams.tooling.local_kafka import KafkaError, LocalKafka

    try:
        kafka = LocalKafka.from_env()
        if args.action == "up":
            kafka.start(progress=lambda m: print(m, file=sys.stderr))
            print(f"Kafka running at {kafka.bootstrap} (logs: {kafka.log_file})")
        elif args.action == "down":
            print("Kafka stopped" if kafka.stop() else "Kafka was not running")
        elif args.action == "wipe":
            kafka.wipe()
            print(f"Kafka stopped and {kafka.home} deleted")
        else:
            print(kafka.status())
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _worker(args: argparse.Namespace) -> int:
    from driftline.streams import worker

    worker.run(Settings.from_env(), loglevel=args.loglevel)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from driftline.streams.store import open_store

    async def go() -> list[str]:
        store = open_store(Settings.from_env())
        await store.start()  # applies pending migrations
        try:
            return list(getattr(store, "applied", []))
        finally:
            await store.close()

    applied = asyncio.run(go())
    print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from driftline.streams.offline import simulate

    sc = simulate.demo_scenario(args.events, seed=args.seed)
    sc.embedding_format = args.embedding_format
    if args.to == "file":
        paths = simulate.to_files(sc, Path(args.out))
        print(f"wrote {paths['interactions']}, {paths['feedback']}, truth in {paths['truth']}")
        return 0
    settings = Settings.from_env()
    total = args.events * len(sc.models)
    bar = simulate.Progress(total, "publish")
    n = asyncio.run(simulate.to_kafka(sc, settings.kafka_bootstrap, settings.topic_prefix,
                                      rate=args.rate, progress=bar.update))
    bar.done(n)
    if args.truth:
        import orjson

        Path(args.truth).write_bytes(orjson.dumps(sc.truth(), option=orjson.OPT_INDENT_2))
    return 0


def _replay(args: argparse.Namespace) -> int:
    import orjson
    from driftline.streams.offline import replay
    from driftline.streams.offline.simulate import Progress

    truth = orjson.loads(Path(args.truth).read_bytes()) if args.truth else None
    size = Path(args.input).stat().st_size
    bar = Progress(0, "replay", sys.stderr)
    stats = replay.run(Path(args.input), Path(args.output),
                       feedback_path=Path(args.feedback) if args.feedback else None,
                       progress=lambda n: bar.update(n, f"lines ({size / 2**20:,.0f} MiB file)"),
                       report_path=args.report, truth=truth, rejects_path=args.rejects)
    print(stats)
    if args.rejects:
        print(f"rejected lines: {args.rejects}")
    if args.report:
        print(f"report: {args.report}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from driftline.streams.offline import demo

    return demo.main(events_per_model=args.events, seed=args.seed, keep=args.keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the whole loop on one machine, nothing to configure")
    p.add_argument("--events", type=int, default=4000, help="interactions per model")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="leave Kafka running afterwards")
    p.set_defaults(func=_demo)

    p = sub.add_parser("worker", help="run the Faust worker (all agents, /metrics)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=_worker)

    p = sub.add_parser("simulate", help="publish interactions with scheduled, known drift")
    p.add_argument("--to", choices=["kafka", "file"], default="kafka")
    p.add_argument("--out", default="sim", help="output directory for --to file")
    p.add_argument("--truth", help="where to write the ground truth (JSON) for --to kafka")
    p.add_argument("--events", type=int, default=8000, help="interactions per model (drift "
                   "starts at 60%%; keep it past 1.5x DRIFTLINE_WARMUP)")
    p.add_argument("--rate", type=float, default=0.0, help="interactions/s, 0 = as fast as "
                   "possible")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--embedding-format", choices=["json", "b64"], default="json")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("replay", help="run the monitor offline over JSONL files")
    p.add_argument("--input", required=True)
    p.add_argument("--feedback")
    p.add_argument("--output", required=True)
    p.add_argument("--report", help="also write an HTML (or .png) report of signals and "
                   "detections")
    p.add_argument("--truth", help="ground truth JSON from `driftline simulate` to mark "
                   "injected drift in the report")
    p.add_argument("--rejects", help="write each rejected line there (JSON lines: file, "
                   "line number, reason, message)")
    p.set_defaults(func=_replay)

    p = sub.add_parser("kafka", help="a local single-node Apache Kafka (no Docker)")
    p.add_argument("action", choices=["up", "down", "status", "wipe"])
    p.set_defaults(func=_kafka)

    p = sub.add_parser("migrate", help="apply the store schema (supabase/migrations)")
    p.set_defaults(func=_migrate)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
