"""The ``driftline`` command as a user meets it: run as a subprocess, every error path is one
line on stderr (``error: ...``, no traceback) with its documented exit code."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from driftline.streams import __version__
from driftline.streams.cli import EXIT_CODES, Exit, build_parser

DRIFTLINE = str(Path(sys.executable).with_name("driftline"))
if not Path(DRIFTLINE).exists():  # a venv's console script sits beside its python
    DRIFTLINE = shutil.which("driftline") or DRIFTLINE


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("DRIFTLINE_") and k not in ("DATABASE_URL", "SUPABASE_URL")}
    return subprocess.run([DRIFTLINE, *args], env={**base, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_error_line(proc: subprocess.CompletedProcess[str], code: Exit) -> str:
    """The single stderr line of a failed command, after checking its exit code."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


def closed_port() -> int:
    """A loopback port that was bound and closed: nothing listens there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung database)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


# -- help and version -----------------------------------------------------------------------

def test_version() -> None:
    proc = run("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"driftline {__version__}")


def test_top_level_help_describes_the_tool_and_its_exit_codes() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    assert "drift detection for AI models" in proc.stdout
    for command in ("demo", "worker", "simulate", "replay", "kafka", "migrate", "seed", "config"):
        assert re.search(rf"^\s+{command}\s+\S", proc.stdout, re.M), command
    assert EXIT_CODES in proc.stdout
    assert [int(e) for e in Exit] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 70]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_flag_has_help_and_shows_its_default(command: str) -> None:
    parser = _subcommands()[command]
    text = parser.format_help()
    options = text.split("\noptions:\n", 1)[1]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, (command, action.dest)
        has_default = action.default not in (None, False) or action.dest in (
            "bootstrap_servers", "web_port", "warmup", "false_alarm_rate")
        if action.option_strings and not action.required and has_default:
            flag = action.option_strings[0]
            block = options.split(f"  {flag}", 1)[1].split("\n  -", 1)[0]
            assert "default:" in block, (command, flag, block)
    proc = run(command, "--help")
    assert proc.returncode == 0 and proc.stdout == text


# -- errors ---------------------------------------------------------------------------------

def test_missing_input_file(tmp_path: Path) -> None:
    line = one_error_line(run("replay", "--input", str(tmp_path / "nope.jsonl"),
                              "--output", str(tmp_path / "x.jsonl")), Exit.FILE)
    assert line == f"error: input {tmp_path / 'nope.jsonl'}: no such file"
    assert not (tmp_path / "x.jsonl").exists()


def test_unreadable_and_unwritable_files(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("")
    line = one_error_line(run("replay", "--input", str(tmp_path), "--output",
                              str(tmp_path / "x.jsonl")), Exit.FILE)
    assert "not a file" in line
    line = one_error_line(run("replay", "--input", str(src), "--output",
                              str(tmp_path / "no" / "dir" / "x.jsonl")), Exit.FILE)
    assert "does not exist" in line
    (tmp_path / "truth.json").write_text("{not json")
    line = one_error_line(run("replay", "--input", str(src), "--output",
                              str(tmp_path / "x.jsonl"), "--truth",
                              str(tmp_path / "truth.json")), Exit.FILE)
    assert "truth file" in line and "not JSON" in line


def test_missing_config_file(tmp_path: Path) -> None:
    line = one_error_line(run("config", "--config", str(tmp_path / "nope.toml")), Exit.FILE)
    assert "nope.toml: not found" in line
    line = one_error_line(run("config", env={"DRIFTLINE_CONFIG": str(tmp_path / "x.toml")}),
                          Exit.FILE)
    assert "x.toml: not found" in line


def test_unreachable_kafka_for_simulate_and_worker(tmp_path: Path) -> None:
    port = closed_port()
    for args in (("simulate", "--to", "kafka", "--events", "10"), ("worker",)):
        start = time.monotonic()
        proc = run(*args, env={"DRIFTLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
                               "DRIFTLINE_HOME": str(tmp_path)})
        line = one_error_line(proc, Exit.KAFKA)
        assert line.startswith(f"error: cannot connect to Kafka over PLAINTEXT: 127.0.0.1:{port}: ")
        assert line.endswith(f"Connect call failed ('127.0.0.1', {port}) "
                             "(DRIFTLINE_KAFKA_BOOTSTRAP or --bootstrap-servers)")
        assert "Unclosed" not in proc.stderr and time.monotonic() - start < 60
    # The flag reaches the same check.
    proc = run("simulate", "--events", "10", "--bootstrap-servers", f"127.0.0.1:{port}")
    one_error_line(proc, Exit.KAFKA)


def test_worker_web_port_in_use(silent_server: int) -> None:
    line = one_error_line(run("worker", "--web-port", str(silent_server),
                              "--bootstrap-servers", f"127.0.0.1:{closed_port()}"), Exit.CONFIG)
    assert line == (f"error: DRIFTLINE_WEB_PORT={silent_server}: cannot listen on "
                    f"127.0.0.1:{silent_server}: Address already in use (--web-port)")


def test_refused_database() -> None:
    port = closed_port()
    proc = run("migrate", env={"DATABASE_URL": f"postgresql://u:hunter2@127.0.0.1:{port}/db"})
    line = one_error_line(proc, Exit.DATABASE)
    assert "connection refused" in line and "hunter2" not in proc.stderr + proc.stdout


def test_a_database_that_never_answers_times_out(silent_server: int) -> None:
    start = time.monotonic()
    proc = run("migrate", "--timeout", "1",
               env={"DATABASE_URL": f"postgresql://u:hunter2@127.0.0.1:{silent_server}/db"},
               timeout=60)
    line = one_error_line(proc, Exit.DATABASE)
    assert line == "error: the database at DATABASE_URL did not answer within 1 s (--timeout)"
    assert time.monotonic() - start < 20


@pytest.mark.postgres
def test_a_real_postgres_refusing_and_then_migrating(postgres_dsn: str) -> None:
    parts = urlsplit(postgres_dsn)
    no_db = urlunsplit(parts._replace(path="/no_such_database"))
    line = one_error_line(run("migrate", env={"DATABASE_URL": no_db}), Exit.DATABASE)
    assert "refused" in line and "no_such_database" in line and "does not exist" in line
    proc = run("migrate", env={"DATABASE_URL": postgres_dsn})
    assert (proc.returncode, proc.stdout.strip()) == (0, "migrations applied: none pending")


@pytest.mark.postgres
def test_migrate_waiting_for_another_migrators_lock_times_out(postgres_dsn: str) -> None:
    """Another session holds the migration lock (a second `driftline migrate`, stuck):
    migrate waits --timeout for it, then says so in one line, exit 6."""
    import asyncio

    import asyncpg
    from driftline.streams.store.migrate import _LOCK_KEY

    async def holding() -> subprocess.CompletedProcess[str]:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
            return await asyncio.to_thread(run, "migrate", "--timeout", "1",
                                           env={"DATABASE_URL": postgres_dsn}, timeout=60)
        finally:
            await conn.close()

    start = time.monotonic()
    line = one_error_line(asyncio.run(holding()), Exit.DATABASE)
    assert line == ("error: the database at DATABASE_URL: waited 1 s for a lock another "
                    "session holds (another `driftline migrate`, or a long transaction on "
                    "driftline's tables) (--timeout)")
    assert time.monotonic() - start < 30
    # The lock released, the same command succeeds.
    proc = run("migrate", "--timeout", "1", env={"DATABASE_URL": postgres_dsn})
    assert (proc.returncode, proc.stdout.strip()) == (0, "migrations applied: none pending")


@pytest.mark.parametrize(("args", "env", "expected"), [
    (("config",), {"DRIFTLINE_WARMUP": "abc"},
     "error: DRIFTLINE_WARMUP='abc' is not a valid int (from environment)"),
    (("config", "--warmup", "5"), {},
     "error: DRIFTLINE_WARMUP='5' is too short: a warm-up needs at least 20 interactions "
     "(from flag --warmup)"),
    (("config", "--web-port", "70000"), {},
     "error: DRIFTLINE_WEB_PORT='70000' is not a port (1-65535) (from flag --web-port)"),
    (("simulate", "--bootstrap-servers", "kafka"), {},
     "error: DRIFTLINE_KAFKA_BOOTSTRAP='kafka' is not a list of host:port (from flag "
     "--bootstrap-servers)"),
    (("replay", "--input", "x", "--output", "y"), {"DRIFTLINE_FALSE_ALARM_RATE": "0.5"},
     "error: DRIFTLINE_FALSE_ALARM_RATE='0.5' must be in (0, 0.1): false alarms per event "
     "per signal, e.g. 1e-6 (from environment)"),
    (("migrate",), {"SUPABASE_URL": "https://x.supabase.co"},
     "error: SUPABASE_URL='https://x.supabase.co' needs SUPABASE_SERVICE_ROLE_KEY as well "
     "(from environment)"),
    (("migrate",), {"SUPABASE_URL": "https://x.supabase.co",
                    "SUPABASE_SERVICE_ROLE_KEY": "k"}, None),
    (("migrate",), {"DATABASE_URL": "mysql://u:hunter2@h/db"},  # the secret stays hidden
     "error: DATABASE_URL='***' is not a postgresql:// URL (from environment)"),
    (("kafka", "status"), {"DRIFTLINE_KAFKA_PORT": "90000"},
     "error: DRIFTLINE_KAFKA_PORT='90000' is not a port number (1-65535)"),
])
def test_bad_configuration(args: tuple[str, ...], env: dict[str, str],
                           expected: str | None) -> None:
    line = one_error_line(run(*args, env=env), Exit.CONFIG)
    if expected is not None:
        assert line == expected


def test_bad_config_files(tmp_path: Path) -> None:
    cases = {"DRIFTLINE_WARMUP = [1]\n": "must be a string, a number or a boolean",
             "DRIFTLINE_WARMPU = 500\n": "unknown setting 'DRIFTLINE_WARMPU'",
             "DRIFTLINE_WARMUP = \n": "not valid TOML",
             "DRIFTLINE_WARMUP = 'lots'\n": "DRIFTLINE_WARMUP='lots' is not a valid int (from "}
    for text, expected in cases.items():
        (tmp_path / "driftline.toml").write_text(text)
        line = one_error_line(run("config", cwd=tmp_path), Exit.CONFIG)
        assert expected in line, (text, line)


def test_a_local_broker_without_java(tmp_path: Path) -> None:
    """No JDK on PATH: the local broker cannot start (exit 7), and says what to install."""
    line = one_error_line(run("kafka", "up", env={"PATH": str(tmp_path), "JAVA_HOME": "",
                                                   "DRIFTLINE_HOME": str(tmp_path / "h")}),
                          Exit.LOCAL)
    assert line.startswith("error: local Kafka: Java 17+ is needed") and "apt-get" in line


def test_traceback_on_request(tmp_path: Path) -> None:
    proc = run("--traceback", "replay", "--input", str(tmp_path / "nope.jsonl"), "--output",
               str(tmp_path / "x.jsonl"))
    assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr


def test_usage_errors_are_one_line_too() -> None:
    line = one_error_line(run("replay", "--input"), Exit.USAGE)
    assert "--input" in line and "driftline replay --help" in line
    one_error_line(run("no-such-command"), Exit.USAGE)
    one_error_line(run("simulate", "--events", "many"), Exit.USAGE)


# -- configuration ----------------------------------------------------------------------------

def test_config_file_env_and_flags_in_that_order(tmp_path: Path) -> None:
    (tmp_path / "driftline.toml").write_text(
        'DRIFTLINE_WARMUP = 700\nDRIFTLINE_TOPIC_PREFIX = "from-file"\n'
        'DRIFTLINE_KAFKA_BOOTSTRAP = "file:9092"\nDRIFTLINE_COOLDOWN_S = 12.5\n'
        'DATABASE_URL = "postgresql://u:hunter2-file@h/db"\n')
    proc = run("config", "--warmup", "900", cwd=tmp_path,
               env={"DRIFTLINE_KAFKA_BOOTSTRAP": "env:9092", "DRIFTLINE_WARMUP": "800",
                    "DRIFTLINE_WEBHOOK_SECRET": "hunter2-env", "DRIFTLINE_HOME": "/srv/dl"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"config file: {tmp_path / 'driftline.toml'}" in out
    assert "DRIFTLINE_WARMUP = 900  # flag --warmup" in out
    assert "DRIFTLINE_KAFKA_BOOTSTRAP = \"env:9092\"  # environment" in out
    assert "DRIFTLINE_TOPIC_PREFIX = \"from-file\"  # driftline.toml" in out
    assert "DRIFTLINE_COOLDOWN_S = 12.5  # driftline.toml" in out
    assert "DRIFTLINE_PARTITIONS = 4  # default" in out
    assert 'DRIFTLINE_DATA_DIR = "/srv/dl/data"  # default' in out
    assert 'DRIFTLINE_HOME = "/srv/dl"  # environment' in out
    assert 'DATABASE_URL = "**********"  # driftline.toml' in out
    assert 'DRIFTLINE_WEBHOOK_SECRET = "**********"  # environment' in out
    assert "hunter2" not in out + proc.stderr
    # What it prints (secrets aside) is itself a config file giving the same settings.
    printed = tmp_path / "printed.toml"
    printed.write_text("\n".join(line for line in out.splitlines()
                                 if "*****" not in line and not line.startswith("#")))
    again = run("config", "--config", str(printed), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "DRIFTLINE_WARMUP = 900  # " in again.stdout
    assert 'DRIFTLINE_KAFKA_BOOTSTRAP = "env:9092"' in again.stdout


def test_the_config_file_reaches_what_the_command_runs(tmp_path: Path) -> None:
    """A setting in the file is the command's setting: replay's warm-up from the file
    makes a warm-up too short for this stream an error there."""
    src = tmp_path / "in.jsonl"
    src.write_text("")
    (tmp_path / "cfg.toml").write_text("DRIFTLINE_WARMUP = 10\n")
    line = one_error_line(run("replay", "--config", str(tmp_path / "cfg.toml"), "--input",
                              str(src), "--output", str(tmp_path / "o.jsonl")), Exit.CONFIG)
    assert line.endswith(f"(from {tmp_path / 'cfg.toml'})")
