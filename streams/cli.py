"""driftline: drift detection for AI models on Kafka, closing the loop to retraining.

Applications publish every model interaction to Kafka; driftline's worker watches each
model's stream with calibrated online detectors, publishes drift events (embedding,
behaviour, accuracy) and turns them into retraining or re-indexing actions recorded in
Supabase / Postgres. `driftline demo` runs the whole loop on this machine.
"""

from __future__ import annotations

import os

# One BLAS thread: a streaming worker runs many small matrix products, where OpenBLAS'
# thread pool only adds contention on busy cores. Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import enum  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import fields  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NoReturn  # noqa: E402

from driftline.streams import __version__  # noqa: E402
from driftline.streams import config as cfg  # noqa: E402
from driftline.streams.config import ConfigError, Layers, Secret, Settings  # noqa: E402


class Exit(enum.IntEnum):
    """The exit codes of ``driftline`` (documented in the README and ``--help``)."""

    OK = 0
    DRIFT = 1  # drift found (replay --fail-on-drift), or the demo missed an injected drift
    USAGE = 2  # unknown command or flag, a flag's value of the wrong form
    CONFIG = 3  # a setting's value (flag, environment, config file) or the file itself
    FILE = 4  # an input file missing or unreadable, an output file that cannot be written
    KAFKA = 5  # Kafka unreachable
    DATABASE = 6  # the database unreachable, timed out, or refusing (login, privileges)
    LOCAL = 7  # a local service driftline starts itself failed (local broker, embedded store)
    REFUSED = 8  # running now could overwrite state: `seed` while a worker runs
    INTERNAL = 70  # a bug: rerun with --traceback and report it


EXIT_CODES = "\n".join(f"  {int(e):>2}  {m}" for e, m in (
    (Exit.OK, "success"),
    (Exit.DRIFT, "drift found (replay --fail-on-drift); demo: an injected drift was missed"),
    (Exit.USAGE, "usage: unknown command or flag, a flag value of the wrong form"),
    (Exit.CONFIG, "bad configuration: a value (flag, environment or config file), the file"),
    (Exit.FILE, "a file missing or unreadable (or an output that cannot be written)"),
    (Exit.KAFKA, "Kafka unreachable"),
    (Exit.DATABASE, "database unreachable, timed out or refusing"),
    (Exit.LOCAL, "the local broker or embedded Postgres driftline starts failed"),
    (Exit.REFUSED, "refused: seed while workers run, or with no seasonal profile configured"),
    (Exit.INTERNAL, "internal error (rerun with --traceback)")))


class Failure(Exception):
    """An error the user can act on: one line on stderr and its exit code."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- configuration ------------------------------------------------------------------------

# The common settings as flags: (flag, variable, help). Values go through the same parser
# as the environment's, so a bad one is a configuration error naming the flag.
SETTING_FLAGS = {
    "bootstrap_servers": ("--bootstrap-servers", "HOSTS", "DRIFTLINE_KAFKA_BOOTSTRAP",
                          "Kafka bootstrap servers, host:port[,host:port...]"),
    "web_port": ("--web-port", "PORT", "DRIFTLINE_WEB_PORT", "port of the worker's /metrics "
                 "and /healthz"),
    "warmup": ("--warmup", "N", "DRIFTLINE_WARMUP", "interactions per model (and version) "
               "that form its reference"),
    "false_alarm_rate": ("--false-alarm-rate", "RATE", "DRIFTLINE_FALSE_ALARM_RATE",
                         "target false alarms per event per signal; the thresholds are "
                         "calibrated to it"),
}
_DEFAULTS = {f.metadata["env"]: f.default for f in fields(Settings)}


def _layers(args: argparse.Namespace) -> Layers:
    """flags > environment > config file > defaults; the file and flags also go into this
    process's environment, so everything it starts (the demo's worker) sees them."""
    flags = {var: (flag, str(getattr(args, dest)))
             for dest, (flag, _, var, _) in SETTING_FLAGS.items()
             if getattr(args, dest, None) is not None}
    try:
        path = cfg.config_file(os.environ, getattr(args, "config", None))
    except FileNotFoundError as exc:
        raise Failure(Exit.FILE, f"config file {exc.filename}: not found") from None
    try:
        layers = cfg.layered(os.environ, path, flags)
    except OSError as exc:
        raise Failure(Exit.FILE, f"config file {path}: {exc.strerror}") from None
    except ConfigError as exc:
        raise Failure(Exit.CONFIG, str(exc)) from None
    os.environ.update({k: v for k, v in layers.env.items()
                       if layers.sources.get(k, "environment") != "environment"})
    return layers


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return _layers(args).settings()
    except ConfigError as exc:
        raise Failure(Exit.CONFIG, str(exc)) from None


def _toml_value(value: object) -> str:
    if isinstance(value, Secret):
        return '"**********"' if value else '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(args: argparse.Namespace) -> int:
    layers = _layers(args)
    try:
        settings = layers.settings()
    except ConfigError as exc:
        raise Failure(Exit.CONFIG, str(exc)) from None
    where = (f"config file: {layers.file.resolve()}" if layers.file else
             f"config file: none (no ./{cfg.CONFIG_FILE}, no --config, no "
             f"{cfg.CONFIG_VARIABLE})")
    print(f"# driftline {__version__} effective configuration; {where}")
    print("# precedence: flag > environment > config file > default; secrets redacted")
    for f in fields(Settings):
        var = f.metadata["env"]
        value = getattr(settings, f.name)
        print(f"{var} = {_toml_value(value)}  # {layers.sources.get(var, 'default')}")
    for var in cfg.OTHER_VARIABLES:
        if layers.env.get(var):
            print(f"{var} = {_toml_value(layers.env[var])}  # {layers.sources[var]}")
    return Exit.OK


# -- errors -------------------------------------------------------------------------------

def _readable(path: str | None, what: str) -> Path | None:
    """``path`` as a Path after checking it is a readable file (Exit.FILE otherwise)."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise Failure(Exit.FILE, f"{what} {path}: no such file")
    if not p.is_file():
        raise Failure(Exit.FILE, f"{what} {path}: not a file")
    if not os.access(p, os.R_OK):
        raise Failure(Exit.FILE, f"{what} {path}: permission denied")
    return p


def _writable(path: str | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise Failure(Exit.FILE, f"{what} {path}: is a directory")
    if not parent.is_dir():
        raise Failure(Exit.FILE, f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise Failure(Exit.FILE, f"{what} {path}: permission denied")
    return p


@contextlib.contextmanager
def _kafka_errors(bootstrap: str) -> Iterator[None]:
    """Kafka client errors as one line; aiokafka's own error log of the same failure is
    held back (the line says it)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    log = logging.getLogger("aiokafka")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    except Exception as exc:
        failure = _kafka_failure(exc)
        if failure is not None:
            raise failure from None
        if not isinstance(exc, KafkaConnectionError):
            raise
        raise Failure(Exit.KAFKA, f"cannot reach Kafka at {bootstrap} "
                      "(DRIFTLINE_KAFKA_BOOTSTRAP or --bootstrap-servers)") from None
    except KafkaError as exc:
        raise Failure(Exit.KAFKA, f"Kafka at {bootstrap}: {exc}") from None
    finally:
        log.setLevel(level)


def _kafka_failure(exc: BaseException) -> Failure | None:
    """Kafka security settings that contradict each other (bad configuration), or a broker
    that refuses the connection, the login or an ACL (Kafka), as one line; else None."""
    from driftline.streams.kafka_clients import KafkaAccessError, KafkaConfigError, explain

    message = explain(exc)
    if message is None:
        return None
    if isinstance(exc, KafkaConfigError):
        return Failure(Exit.CONFIG, message)
    if isinstance(exc, KafkaAccessError) and "cannot connect" in message:
        message += " (DRIFTLINE_KAFKA_BOOTSTRAP or --bootstrap-servers)"
    return Failure(Exit.KAFKA, message)


# -- commands -----------------------------------------------------------------------------

def _kafka(args: argparse.Namespace) -> int:
    from driftline.streams.tooling.local_kafka import KafkaError, LocalKafka

    _layers(args)
    try:
        kafka = LocalKafka.from_env()
    except KafkaError as exc:  # its port variables
        raise Failure(Exit.CONFIG, str(exc)) from None
    try:
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
        raise Failure(Exit.LOCAL, f"local Kafka: {exc}") from None
    return Exit.OK


def _worker(args: argparse.Namespace) -> int:
    from driftline.streams import worker
    from driftline.streams.app import ensure_topics

    settings = _settings(args)
    _port_free(settings.web_host, settings.web_port)
    with _kafka_errors(settings.kafka_bootstrap):  # fail fast, before Faust starts
        asyncio.run(ensure_topics(settings))
    worker.run(settings, loglevel=args.loglevel)
    return Exit.OK


def _port_free(host: str, port: int) -> None:
    """The worker's web port must be free (Faust would fail deep in its start-up)."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise Failure(Exit.CONFIG, f"DRIFTLINE_WEB_PORT={port}: cannot listen on "
                          f"{host}:{port}: {exc.strerror} (--web-port)") from None


def _migrate(args: argparse.Namespace) -> int:
    from driftline.streams.store.errors import redact

    settings = _settings(args)
    if settings.database_url:
        dsn = settings.database_url.get()
        where = "the database at DATABASE_URL"
    elif settings.supabase_url:
        raise Failure(Exit.CONFIG, "driftline migrate needs DATABASE_URL (Supabase: the "
                      "project's database connection string); the REST API cannot apply a "
                      "schema (or run `supabase db push` with supabase/migrations/)")
    else:
        from driftline.streams.store.embedded import EmbeddedPostgres

        where = f"the embedded Postgres under {settings.data_dir / 'pg'}"
        server = EmbeddedPostgres(settings.data_dir / "pg")
        try:
            dsn = server.start()
        except Exception as exc:
            raise Failure(Exit.LOCAL, f"embedded Postgres under {settings.data_dir / 'pg'}: "
                          f"{type(exc).__name__}: {exc}") from None
    import asyncpg

    try:
        applied = asyncio.run(_apply(dsn, args.timeout))
    except asyncpg.LockNotAvailableError:
        raise Failure(Exit.DATABASE, f"{where}: waited {args.timeout:g} s for a lock another "
                      "session holds (another `driftline migrate`, or a long transaction on "
                      "driftline's tables) (--timeout)") from None
    except TimeoutError:
        raise Failure(Exit.DATABASE, f"{where} did not answer within {args.timeout:g} s "
                      "(--timeout)") from None
    except ConnectionRefusedError:
        raise Failure(Exit.DATABASE, f"{where}: connection refused (is it running, on that "
                      "host and port?)") from None
    except OSError as exc:
        raise Failure(Exit.DATABASE, redact(f"{where}: cannot connect: "
                                            f"{exc.strerror or _one_line(exc)}", dsn)) from None
    except Exception as exc:  # asyncpg: PostgresError (login, privileges), InterfaceError
        raise Failure(Exit.DATABASE, redact(f"{where} refused: {_one_line(exc)}", dsn)
                      ) from None
    print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    return Exit.OK


async def _apply(dsn: str, connect_s: float) -> list[str]:
    import asyncpg
    from driftline.streams.store.migrate import apply_on

    async with asyncio.timeout(connect_s):  # connecting and logging in
        # Waiting for a lock (another migrator's, a table in use) is bounded as well.
        conn = await asyncpg.connect(dsn, timeout=connect_s, server_settings={
            "lock_timeout": str(max(1, int(connect_s * 1000)))})
    try:
        return await apply_on(conn)
    finally:
        await conn.close()


def _simulate(args: argparse.Namespace) -> int:
    from driftline.streams.offline import simulate

    settings = _settings(args)
    sc = simulate.demo_scenario(args.events, seed=args.seed)
    sc.embedding_format = args.embedding_format
    if args.to == "file":
        out = Path(args.out)
        try:
            paths = simulate.to_files(sc, out)
        except OSError as exc:
            raise Failure(Exit.FILE, f"cannot write under {out}: {exc.strerror}") from None
        print(f"wrote {paths['interactions']}, {paths['feedback']}, truth in {paths['truth']}")
        return Exit.OK
    truth = _writable(args.truth, "truth file")
    total = args.events * len(sc.models)
    bar = simulate.Progress(total, "publish")
    with _kafka_errors(settings.kafka_bootstrap):
        n = asyncio.run(simulate.to_kafka(sc, settings, rate=args.rate, progress=bar.update))
    bar.done(n)
    if truth is not None:
        import orjson

        truth.write_bytes(orjson.dumps(sc.truth(), option=orjson.OPT_INDENT_2))
    return Exit.OK


def _replay(args: argparse.Namespace) -> int:
    import orjson
    from driftline.streams.offline import replay
    from driftline.streams.offline.simulate import Progress

    settings = _settings(args)
    source = _readable(args.input, "input")
    feedback = _readable(args.feedback, "feedback file")
    truth_path = _readable(args.truth, "truth file")
    output = _writable(args.output, "output")
    reports = [Path(r) for r in args.report or [] if _writable(r, "report")]
    rejects = _writable(args.rejects, "rejects file")
    for r in reports:
        if r.suffix.lower() not in (".html", ".htm", ".png", ".json"):
            raise Failure(Exit.USAGE, f"report {r}: the name must end in .html, .png or .json")
    truth = None
    if truth_path is not None:
        try:
            truth = orjson.loads(truth_path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise Failure(Exit.FILE, f"truth file {truth_path}: not JSON ({exc})") from None
        if not isinstance(truth, list):
            raise Failure(Exit.FILE, f"truth file {truth_path}: not a list of injected "
                          "drifts (`driftline simulate` writes one)")
    assert source is not None and output is not None
    size = source.stat().st_size
    bar = Progress(0, "replay", sys.stderr)
    stats = replay.run(source, output, feedback_path=feedback, config=settings.monitor_config(),
                       progress=lambda n: bar.update(n, f"lines ({size / 2**20:,.0f} MiB file)"),
                       report_path=reports or None, truth=truth, rejects_path=rejects,
                       segments=settings.segment_plan() or None)
    print(stats)
    if rejects is not None:
        print(f"rejected lines: {rejects}")
    for r in reports:
        print(f"report: {r}")
    if args.fail_on_drift and stats.drift_events:
        print(f"error: drift found: {stats.drift_events} drift event(s) in {output} "
              "(--fail-on-drift)", file=sys.stderr)
        return Exit.DRIFT
    return Exit.OK


def _seed(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from driftline.streams.monitor import seed as seeding
    from driftline.streams.offline.simulate import Progress
    from driftline.streams.store import StoreError, StoreUnavailable, open_store

    settings = _settings(args)
    bar = Progress(0, "seed", sys.stderr)
    done: dict[str, int] = {}  # history rows read per model

    def progress(model_id: str, rows: int) -> None:
        done[model_id] = rows
        bar.update(sum(done.values()), f"history rows ({model_id})")

    async def run() -> seeding.SeedReport:
        store = open_store(settings)
        await store.start()
        try:
            return await seeding.seed(settings, store, models=args.model, periods=args.periods,
                                      dry_run=args.dry_run, progress=progress)
        finally:
            await store.close()

    with _kafka_errors(settings.kafka_bootstrap):
        try:
            report = asyncio.run(run())
        except seeding.SeedRefused as exc:
            raise Failure(Exit.REFUSED, str(exc)) from None
        except StoreUnavailable as exc:
            raise Failure(Exit.DATABASE, str(exc)) from None
        except StoreError as exc:
            raise Failure(Exit.CONFIG, str(exc)) from None
    rows = sum(s.rows for s in report.seeded)
    if rows:
        bar.done(rows, "history rows")

    def when(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

    print(f"history: {when(report.since)} to {when(report.cut)} (the earliest interaction "
          "the worker will read)")
    for s in report.seeded:
        bins = ", ".join(f"{name} {n}/{s.bins}" for name, n in s.known.items())
        short = " -- less than two periods of history in some bins" if any(
            n < s.bins for n in s.known.values()) else ""
        print(f"{'would seed' if args.dry_run else 'seeded'} {s.model_id} (partition "
              f"{s.partition}): {s.rows:,} interactions; bins known: {bins}{short}")
    for m in report.skipped:
        print(f"skipped {m}: it has a state already")
    for m in report.empty:
        print(f"skipped {m}: no stored interactions in the history")
    verb = "would be seeded" if args.dry_run else "seeded"
    print(f"{len(report.seeded)} model(s) {verb}, "
          f"{len(report.skipped) + len(report.empty)} skipped")
    return Exit.OK


def _demo(args: argparse.Namespace) -> int:
    from driftline.streams.offline import demo
    from driftline.streams.tooling.local_kafka import KafkaError

    _layers(args)
    try:
        return demo.main(events_per_model=args.events, seed=args.seed, keep=args.keep)
    except KafkaError as exc:
        raise Failure(Exit.LOCAL, f"demo: local Kafka: {exc}") from None
    except (RuntimeError, TimeoutError) as exc:
        raise Failure(Exit.LOCAL, f"demo: {exc}") from None


# -- the parser ---------------------------------------------------------------------------

class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (none for switches and required ones)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or action.default in (None, False, argparse.SUPPRESS)
                or action.required or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _fill(text: str) -> str:
    return textwrap.fill(text, width=88)


def _setting_flags(p: argparse.ArgumentParser, *names: str) -> None:
    for dest in names:
        flag, metavar, var, text = SETTING_FLAGS[dest]
        p.add_argument(flag, dest=dest, metavar=metavar,
                       help=f"{text} (overrides {var}; default: {_DEFAULTS[var]})")


def _config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help=f"TOML config file with the "
                   f"environment variables' names (default: ${cfg.CONFIG_VARIABLE}, else "
                   f"./{cfg.CONFIG_FILE} if present)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="driftline", description=__doc__, formatter_class=_Help,
        epilog=_fill("Configuration: environment variables (`driftline config` prints them "
                     f"all), or the same names in a TOML file (./{cfg.CONFIG_FILE}, --config "
                     f"PATH or ${cfg.CONFIG_VARIABLE}); flags > environment > file > "
                     "defaults. `driftline COMMAND --help` describes each command.")
        + f"\n\nExit codes:\n{EXIT_CODES}")
    parser.add_argument("--version", action="version", version=f"driftline {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=_fill(description),
                           formatter_class=_Help)
        _config_flag(p)
        return p

    p = command("demo", "the whole loop on this machine, nothing to configure",
                "Start a private Kafka broker and an embedded Postgres under "
                "$DRIFTLINE_HOME/demo (wiped first), run the worker, publish a seeded "
                "simulation with one injected drift of each kind, follow the drift events "
                "and retrain requests, deploy new versions, print a summary and stop "
                "everything. Exit 1 if an injected drift is missed.")
    p.add_argument("--events", type=int, default=4000, help="interactions per model")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulation")
    p.add_argument("--keep", action="store_true", help="leave Kafka running afterwards")
    p.set_defaults(func=_demo)

    p = command("worker", "run the Faust worker (monitor, retrain and logger agents, "
                "/metrics)", "Run the worker until SIGTERM/SIGINT: it creates driftline's "
                "topics if missing, watches driftline.interactions, .feedback and "
                ".model-updates, publishes drift events and retrain requests, writes the "
                "store and serves /metrics and /healthz.")
    _setting_flags(p, "bootstrap_servers", "web_port", "warmup", "false_alarm_rate")
    p.add_argument("--loglevel", default="info",
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="log level of the worker")
    p.set_defaults(func=_worker)

    p = command("simulate", "publish interactions with scheduled, known drift",
                "Generate realistic interactions for four models with one injected drift "
                "of each kind (at 60%% of the stream), to Kafka or to JSONL files, and "
                "write the ground truth of what was injected.")
    p.add_argument("--to", choices=["kafka", "file"], default="kafka",
                   help="publish to Kafka or write JSONL files")
    p.add_argument("--out", default="sim", help="output directory for --to file "
                   "(interactions.jsonl, feedback.jsonl, truth.json)")
    p.add_argument("--truth", metavar="PATH", help="where to write the ground truth (JSON) "
                   "for --to kafka")
    p.add_argument("--events", type=int, default=8000, help="interactions per model (drift "
                   "starts at 60%%; keep it past 1.5x the warm-up)")
    p.add_argument("--rate", type=float, default=0.0, help="interactions/s, 0 = as fast as "
                   "possible")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulation")
    p.add_argument("--embedding-format", choices=["json", "b64"], default="json",
                   help="embeddings as JSON arrays or base64 float32 (embedding_b64)")
    _setting_flags(p, "bootstrap_servers")
    p.set_defaults(func=_simulate)

    p = command("replay", "run the monitor offline over JSONL files",
                "Run the same monitors as the worker over interactions (and feedback) in "
                "JSONL files, one JSON object a line in stream order, and write the drift "
                "events. With --report, draw every model's signals, baselines, warm-ups, "
                "detections and (with --truth) the injected drift.")
    p.add_argument("--input", required=True, metavar="PATH",
                   help="interactions, JSONL (required)")
    p.add_argument("--feedback", metavar="PATH", help="delayed labels / ratings, JSONL")
    p.add_argument("--output", required=True, metavar="PATH",
                   help="where to write the drift events, JSONL (required)")
    p.add_argument("--report", metavar="PATH", action="append",
                   help="also write a report: .html (self-contained), .png or .json "
                   "(summary); repeat for several")
    p.add_argument("--truth", metavar="PATH", help="ground truth JSON from `driftline "
                   "simulate`, to mark and score the injected drift in the report")
    p.add_argument("--rejects", metavar="PATH", help="write each rejected line there (JSON "
                   "lines: file, line number, reason, message)")
    p.add_argument("--fail-on-drift", action="store_true",
                   help="exit 1 when any drift is found (a CI gate)")
    _setting_flags(p, "warmup", "false_alarm_rate")
    p.set_defaults(func=_replay)

    p = command("seed", "learn new models' daily cycles from the store before a first start",
                "For models with interactions in the store and no state yet, learn their "
                "seasonal profiles (time of day or week) from the last --periods periods "
                "of stored history before the earliest interaction the worker will read, "
                "and write them to the monitor-state topic: a fresh deploy then tells a "
                "daily cycle from drift at once, instead of after two periods. Run it "
                "while no worker runs (it refuses otherwise). Reads the store over SQL "
                "(DATABASE_URL, or the embedded Postgres).")
    p.add_argument("--model", action="append", metavar="ID",
                   help="seed this model only; repeat for several (default: every model "
                   "with history)")
    p.add_argument("--periods", type=float, default=3.0,
                   help="periods of history to read (a bin counts once seen in two)")
    p.add_argument("--dry-run", action="store_true",
                   help="read and learn, print what would be seeded, write nothing")
    _setting_flags(p, "bootstrap_servers")
    p.set_defaults(func=_seed)

    p = command("kafka", "a local single-node Apache Kafka (no Docker)",
                "Manage a local single-node Kafka (KRaft) from Maven Central's jars under "
                "$DRIFTLINE_HOME/kafka; needs a JDK 17+.")
    p.add_argument("action", choices=["up", "down", "status", "wipe"],
                   help="start, stop, show, or stop and delete its data")
    p.set_defaults(func=_kafka)

    p = command("migrate", "apply the store schema (supabase/migrations)",
                "Apply the SQL migrations shipped with driftline to DATABASE_URL (or the "
                "embedded Postgres when nothing is configured), once each, in the Supabase "
                "CLI's ledger.")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the database to answer")
    p.set_defaults(func=_migrate)

    p = command("config", "print the effective configuration (secrets redacted)",
                "Print every setting as TOML (a valid driftline.toml), with where its value "
                "came from: flag, environment, config file or default.")
    _setting_flags(p, "bootstrap_servers", "web_port", "warmup", "false_alarm_rate")
    p.set_defaults(func=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # pgserver's platformdirs warns on every start where XDG_RUNTIME_DIR is unset (a
    # container, CI): noise on stderr that says nothing about driftline.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    args = build_parser().parse_args(argv)
    quiet = args.command in ("replay", "migrate", "config", "simulate", "seed")
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except Failure as exc:
        if args.traceback:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        failure = _kafka_failure(exc)  # (raised inside Faust's start-up, say)
        if failure is not None:
            print(f"error: {failure}", file=sys.stderr)
            return int(failure.code)
        print(f"error: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with "
              "--traceback and report it)", file=sys.stderr)
        return int(Exit.INTERNAL)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


if __name__ == "__main__":
    sys.exit(main())
