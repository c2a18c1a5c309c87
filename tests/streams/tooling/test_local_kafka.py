"""The local broker's plumbing without starting a broker: Java check, jar lock, download
verification, status and the KRaft configuration it writes."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from driftline.streams.tooling import local_kafka as kafka_local
from driftline.streams.tooling.local_kafka import (
    KAFKA_VERSION,
    KafkaError,
    LocalKafka,
    fetch_jars,
    java_version,
)


def _fake_java(bin_dir: Path, stderr: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "java"
    lines = " ".join("'" + line + "'" for line in stderr.splitlines())
    # Only shell builtins: PATH holds nothing but this directory.
    exe.write_text(f"#!/bin/sh\nprintf '%s\\n' {lines} >&2\n")
    exe.chmod(0o755)


def test_java_missing_names_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(KafkaError, match="not on PATH") as info:
        java_version()
    msg = str(info.value)
    assert "Java 17+" in msg
    assert "openjdk-17" in msg and "JAVA_HOME" in msg


@pytest.mark.parametrize(("banner", "major"), [
    ('openjdk version "11.0.2" 2019-01-15\nOpenJDK Runtime Environment 18.9', 11),
    ('java version "1.8.0_292"\nJava(TM) SE Runtime Environment', 8),
    ('openjdk version "16" 2021-03-16', 16),
])
def test_java_too_old_names_version_and_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            banner: str, major: int) -> None:
    _fake_java(tmp_path / "bin", banner)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(KafkaError, match="needs Java 17") as info:
        java_version()
    msg = str(info.value)
    assert f"found Java {major} at {tmp_path / 'bin' / 'java'}" in msg
    assert "needs Java 17+" in msg and "openjdk-17" in msg


@pytest.mark.parametrize(("banner", "major"), [
    ('openjdk version "17.0.9" 2023-10-17', 17),
    ('openjdk version "21" 2023-09-19', 21),
    ('openjdk version "25-ea" 2025-09-16', 25),
])
def test_java_new_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, banner: str,
                         major: int) -> None:
    _fake_java(tmp_path / "bin", banner)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert java_version() == major


def test_java_unreadable_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_java(tmp_path / "bin", "Error: could not create the Java Virtual Machine.")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(KafkaError, match="cannot read the Java version"):
        java_version()


def test_jar_lock_parses_with_sha256_per_entry() -> None:
    entries = kafka_local._lock_entries()
    assert len(entries) > 20
    coords = set()
    for group, artifact, version, sha in entries:
        assert re.fullmatch(r"[0-9a-f]{64}", sha), (artifact, sha)
        assert group and artifact and version
        coords.add((group, artifact))
    assert len(coords) == len(entries)  # one version per artifact
    assert ("org.apache.kafka", "kafka_2.13") in coords
    kafka = [v for g, a, v, _ in entries if (g, a) == ("org.apache.kafka", "kafka_2.13")]
    assert kafka == [KAFKA_VERSION]


class _Repo(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def maven(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server over a directory laid out like a Maven repository."""
    root = tmp_path / "repo"
    root.mkdir()
    seen: list[str] = []

    class Handler(_Repo):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _publish(root: Path, content: bytes) -> Path:
    d = root / "org" / "example" / "widget" / "1.0"
    d.mkdir(parents=True, exist_ok=True)
    jar = d / "widget-1.0.jar"
    jar.write_bytes(content)
    return jar


def _one_entry(monkeypatch: pytest.MonkeyPatch, sha: str) -> None:
    monkeypatch.setattr(kafka_local, "_lock_entries",
                        lambda: [("org.example", "widget", "1.0", sha)])


def test_fetch_jars_detects_checksum_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              maven: tuple[str, Path, list[str]]) -> None:
    url, root, seen = maven
    _publish(root, b"not the jar you pinned")
    _one_entry(monkeypatch, hashlib.sha256(b"the pinned jar").hexdigest())
    monkeypatch.setenv("DRIFTLINE_MAVEN_URL", url)
    monkeypatch.setenv("DRIFTLINE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(KafkaError, match=r"checksum mismatch for widget-1\.0\.jar") as info:
        fetch_jars()
    msg = str(info.value)
    assert hashlib.sha256(b"not the jar you pinned").hexdigest() in msg
    assert seen == ["/org/example/widget/1.0/widget-1.0.jar"]
    libs = tmp_path / "cache" / "driftline" / f"kafka-{KAFKA_VERSION}" / "libs"
    assert list(libs.iterdir()) == []  # neither the jar nor a .part is left behind


def test_fetch_jars_downloads_once_and_verifies(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path,
                                               maven: tuple[str, Path, list[str]]) -> None:
    url, root, seen = maven
    content = os.urandom(4096)
    _publish(root, content)
    _one_entry(monkeypatch, hashlib.sha256(content).hexdigest())
    monkeypatch.setenv("DRIFTLINE_MAVEN_URL", url)
    monkeypatch.setenv("DRIFTLINE_CACHE", str(tmp_path / "cache"))
    progress: list[str] = []
    libs = fetch_jars(progress.append)
    assert (libs / "widget-1.0.jar").read_bytes() == content
    assert progress == ["downloading org.example:widget:1.0"]
    assert fetch_jars(progress.append) == libs
    assert len(seen) == 1 and len(progress) == 1  # cached and still valid: no download
    # A corrupted cached jar is fetched again.
    (libs / "widget-1.0.jar").write_bytes(b"corrupt")
    fetch_jars()
    assert len(seen) == 2 and (libs / "widget-1.0.jar").read_bytes() == content


def test_fetch_jars_reports_unreachable_repository(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path,
                                                   maven: tuple[str, Path, list[str]]) -> None:
    url, _root, _seen = maven  # nothing published: 404
    _one_entry(monkeypatch, "0" * 64)
    monkeypatch.setenv("DRIFTLINE_MAVEN_URL", url)
    monkeypatch.setenv("DRIFTLINE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(KafkaError, match=r"cannot download http://127\.0\.0\.1:\d+/org/"):
        fetch_jars()


def test_status_is_stopped_without_pid_file(tmp_path: Path) -> None:
    k = LocalKafka(home=tmp_path / "kafka")
    assert not k.pid_file.exists()
    assert k.pid() is None
    assert k.status() == "stopped"
    assert k.stop() is False


@pytest.mark.parametrize("content", ["", "not a pid", "2147483646"])
def test_status_is_stopped_with_a_stale_pid_file(tmp_path: Path, content: str) -> None:
    k = LocalKafka(home=tmp_path)
    k.pid_file.write_text(content)
    assert k.status() == "stopped"
    assert k.stop() is False
    assert not k.pid_file.exists()  # stale pid files are cleaned up


def test_server_properties_has_kraft_essentials(tmp_path: Path) -> None:
    k = LocalKafka(home=tmp_path / "kafka", port=19092, controller_port=19093)
    cfg = k._write_config()
    assert cfg == tmp_path / "kafka" / "server.properties"
    props = dict(line.split("=", 1) for line in cfg.read_text().splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert (tmp_path / "kafka" / "data").is_dir()
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert (tmp_path / "kafka" / "log4j2.yaml").read_text().startswith("Configuration:")
    assert k.bootstrap == "127.0.0.1:19092"


def test_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    monkeypatch.setenv("DRIFTLINE_KAFKA_PORT", "29092")
    monkeypatch.setenv("DRIFTLINE_KAFKA_CONTROLLER_PORT", "29093")
    k = LocalKafka.from_env()
    assert (k.home, k.port, k.controller_port) == (tmp_path / "kafka", 29092, 29093)


def test_from_env_empty_values_mean_defaults(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    for name in ("DRIFTLINE_HOME", "DRIFTLINE_KAFKA_PORT", "DRIFTLINE_KAFKA_CONTROLLER_PORT"):
        monkeypatch.setenv(name, "")
    k = LocalKafka.from_env()
    assert (k.home, k.port, k.controller_port) == (tmp_path / ".driftline" / "kafka", 9092,
                                                   9093)


@pytest.mark.parametrize("raw", ["x", "0", "65536", "-1", "90 92", "\u00b2"])
def test_from_env_names_a_bad_port(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_PORT", "9092")
    monkeypatch.setenv("DRIFTLINE_KAFKA_CONTROLLER_PORT", raw)
    with pytest.raises(KafkaError, match=f"DRIFTLINE_KAFKA_CONTROLLER_PORT='{raw}' is not a port"):
        LocalKafka.from_env()


def test_jvm_options_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DRIFTLINE_KAFKA_JVM_OPTS", raising=False)
    cmd = LocalKafka(home=tmp_path).command("/jars/*", "-Dlog4j2.configurationFile=x",
                                            tmp_path / "server.properties")
    assert cmd[0] == "java"
    assert cmd[1:5] == ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1"]
    assert cmd[-4:] == ["-cp", "/jars/*", "kafka.Kafka", str(tmp_path / "server.properties")]
    monkeypatch.setenv("DRIFTLINE_KAFKA_JVM_OPTS", "-Xmx2g  -XX:+UseParallelGC")
    cmd = LocalKafka(home=tmp_path).command("/jars/*", "-Dx", tmp_path / "p")
    assert cmd[1:3] == ["-Xmx2g", "-XX:+UseParallelGC"]
    assert "-XX:TieredStopAtLevel=1" not in cmd


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTLINE_CACHE", str(tmp_path / "c"))
    assert kafka_local._cache_dir() == tmp_path / "c" / "driftline" / f"kafka-{KAFKA_VERSION}"
    monkeypatch.setenv("DRIFTLINE_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert kafka_local._cache_dir() == tmp_path / "x" / "driftline" / f"kafka-{KAFKA_VERSION}"


@pytest.mark.kafka
def test_tied_broker_stops_when_its_starter_is_killed(tmp_path: Path) -> None:
    """A test session or benchmark killed by SIGKILL leaves no broker running."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from driftline.streams.tooling.local_kafka import LocalKafka, free_port\n"
        "k = LocalKafka(home=Path(sys.argv[1]), port=free_port(), controller_port=free_port())\n"
        "k.start(timeout=180, tied=True)\n"
        "print(k.pid(), flush=True)\n"
        "sys.stdin.read()\n")
    starter = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "k")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    assert starter.stdout is not None
    pid = int(starter.stdout.readline())
    try:
        os.kill(pid, 0)  # the broker runs
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"-XX:TieredStopAtLevel=1" in args and b"kafka.Kafka" in args
        starter.send_signal(signal.SIGKILL)
        starter.wait(30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"broker {pid} still runs after its starter was killed")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_free_ports_are_distinct() -> None:
    """A broker's listener and controller ports come from one call: never the same port."""
    for _ in range(20):
        ports = kafka_local.free_ports(8)
        assert len(set(ports)) == 8


def test_secured_broker_config_has_no_plaintext_listener(tmp_path: Path) -> None:
    from driftline.streams.config import Secret
    from driftline.streams.tooling.local_kafka import BrokerSecurity

    (tmp_path / "ca.pem").write_text("CA\n")
    (tmp_path / "b.crt").write_text("-----CERT-----\n")
    (tmp_path / "b.key").write_text("-----KEY-----\n")
    sec = BrokerSecurity(tmp_path / "ca.pem", tmp_path / "b.crt", tmp_path / "b.key",
                         broker_principal="broker", super_users=("admin",),
                         scram_users=(("admin", Secret("pw")),))
    k = LocalKafka(home=tmp_path / "kafka", port=19092, controller_port=19093,
                   ssl_port=19094, security=sec)
    props = dict(line.split("=", 1) for line in k._write_config().read_text().splitlines())
    assert props["listeners"] == ("SASL_SSL://127.0.0.1:19092,SSL://127.0.0.1:19094,"
                                  "CONTROLLER://127.0.0.1:19093")
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19092,SSL://127.0.0.1:19094"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL"
    assert props["inter.broker.listener.name"] == "SSL"
    assert props["ssl.client.auth"] == "required"  # mutual TLS on SSL and CONTROLLER
    assert props["listener.name.sasl_ssl.ssl.client.auth"] == "none"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["super.users"] == "User:broker;User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    keystore = Path(props["ssl.keystore.location"])
    assert keystore.read_text() == "-----KEY-----\n-----CERT-----\n"
    assert keystore.stat().st_mode & 0o077 == 0  # the key is the owner's alone
    assert "pw" not in "".join(f"{k}={v}" for k, v in props.items() if "jaas" in k)
    assert (k.bootstrap, k.ssl_bootstrap) == ("127.0.0.1:19092", "127.0.0.1:19094")
    with pytest.raises(KafkaError, match="needs an ssl_port"):
        LocalKafka(home=tmp_path / "k2", security=sec)._write_config()


def test_scram_credentials_carry_no_password() -> None:
    import base64
    import hashlib

    from driftline.streams.config import Secret

    arg = kafka_local.scram_credential("driftline-worker", Secret("s3cret-pw"),
                                       iterations=4096, salt=b"0123456789abcdef")
    salted = hashlib.pbkdf2_hmac("sha512", b"s3cret-pw", b"0123456789abcdef", 4096)
    assert arg == ("SCRAM-SHA-512=[name=driftline-worker,iterations=4096,"
                   f'salt="{base64.b64encode(b"0123456789abcdef").decode()}",'
                   f'saltedpassword="{base64.b64encode(salted).decode()}"]')
    assert "s3cret-pw" not in arg
    with pytest.raises(KafkaError, match="SCRAM user name"):
        kafka_local.scram_credential("a,b=c", Secret("x"))
