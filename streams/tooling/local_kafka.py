"""A real single-node Apache Kafka (KRaft, broker+controller) for development and tests.

No Docker: the broker's jars come from Maven Central once (pinned versions and
SHA-256 sums in ``kafka_jars.lock``), are cached outside the repository, and run
on the machine's JDK (>= 17).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from driftline.streams import config
from driftline.streams.config import Secret, Settings

KAFKA_VERSION = "4.1.1"
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"  # unless DRIFTLINE_MAVEN_URL is set
MIN_JAVA = 17
# The local broker shares a few cores with the worker and the load (development, CI, the
# benchmarks). Its JIT's optimising tier (C2) kept compiling for minutes under changing
# load -- 6.8 s of compiler threads in a 31 s recording, with the broker at ~80% of a core
# at 78,000 interactions/s; with C1 only it took ~40% (bench/throughput.py's latency runs).
# A production broker, long-lived on its own machine, wants C2: use your Kafka's own
# start scripts or image there (docker-compose.yml does), or DRIFTLINE_KAFKA_JVM_OPTS.
DEFAULT_JVM_OPTS = "-Xms256m -Xmx1g -XX:+UseG1GC -XX:TieredStopAtLevel=1"


class KafkaError(RuntimeError):
    """The local broker could not be obtained, started or stopped."""


def _port_env(name: str, default: int) -> int:
    """A port from the environment variable ``name`` (unset or empty: ``default``)."""
    raw = os.environ.get(name) or str(default)
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
        raise KafkaError(f"{name}={raw!r} is not a port number (1-65535)")
    return int(raw)


def _cache_dir() -> Path:
    base = os.environ.get("DRIFTLINE_CACHE") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "driftline" / f"kafka-{KAFKA_VERSION}"


def _lock_entries() -> list[tuple[str, str, str, str]]:
    text = resources.files("driftline.streams.tooling").joinpath("kafka_jars.lock").read_text()
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        coord, sha = line.split()
        group, artifact, version = coord.split(":")
        out.append((group, artifact, version, sha))
    return out


def java_version(java: str = "java") -> int:
    """Major version of the JDK on PATH; a clear error when there is none."""
    exe = shutil.which(java)
    if exe is None:
        raise KafkaError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker and `{java}` is not on "
            "PATH. Install a JDK, e.g. `apt-get install openjdk-17-jre-headless`, or set "
            "JAVA_HOME/PATH.")
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise KafkaError(f"cannot read the Java version from `{exe} -version`")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8" style
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise KafkaError(f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, found Java {major} at "
                         f"{exe}. Install openjdk-17 (or newer) and put it first on PATH.")
    return major


def fetch_jars(progress: Callable[[str], None] | None = None) -> Path:
    """Download (once) and verify the broker's jars; return the directory holding them."""
    libs = _cache_dir() / "libs"
    libs.mkdir(parents=True, exist_ok=True)
    # Read when called (like DRIFTLINE_CACHE), not when the module was imported.
    repo = os.environ.get("DRIFTLINE_MAVEN_URL") or MAVEN_CENTRAL
    for group, artifact, version, sha in _lock_entries():
        name = f"{artifact}-{version}.jar"
        target = libs / name
        if target.exists() and _sha256(target) == sha:
            continue
        url = f"{repo}/{group.replace('.', '/')}/{artifact}/{version}/{name}"
        if progress:
            progress(f"downloading {group}:{artifact}:{version}")
        tmp = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except OSError as exc:
            raise KafkaError(f"cannot download {url}: {exc}") from None
        got = _sha256(tmp)
        if got != sha:
            tmp.unlink(missing_ok=True)
            raise KafkaError(f"checksum mismatch for {name}: expected {sha}, got {got}")
        tmp.replace(target)
    return libs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports. The sockets stay bound until all are chosen: two
    calls of a bind-and-close one after the other can get the same port back (a broker
    whose listener and controller then share one port refuses to start)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


_LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
"""


# The authorizer of a KRaft broker; ACLs live in the metadata log.
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
# A certificate's subject ``CN=name[,...]`` is the principal ``User:name``.
PRINCIPAL_MAPPING = "RULE:^CN=([^,]+).*$/$1/,DEFAULT"
SCRAM_ITERATIONS = 8192


@dataclass(frozen=True)
class BrokerSecurity:
    """TLS material, SCRAM users and authorization of a secured local broker.

    The broker then listens with SASL_SSL (SCRAM-SHA-512) on ``LocalKafka.port`` and with
    SSL requiring a client certificate (mutual TLS) on ``LocalKafka.ssl_port``; its
    controller listener and inter-broker traffic use mutual TLS with the broker's own
    certificate. There is no plaintext listener. ``acls``: the StandardAuthorizer is on,
    so only ``super_users`` (and the broker itself) may do what no ACL grants.
    """

    ca_file: Path                # PEM: the CA of the broker's and the clients' certificates
    cert_file: Path              # PEM: the broker's certificate (SAN 127.0.0.1), client-usable
    key_file: Path               # PEM: its private key, unencrypted PKCS#8
    broker_principal: str        # the CN of cert_file, a super user
    scram_users: tuple[tuple[str, Secret], ...] = ()  # SCRAM-SHA-512, created at format
    super_users: tuple[str, ...] = ()  # names: User:<name> may do anything
    acls: bool = True

    def admin_settings(self, bootstrap: str) -> Settings:
        """Settings of a client that connects as the broker itself (a super user) over
        mutual TLS: for readiness checks and for setting up topics and ACLs."""
        return Settings(kafka_bootstrap=bootstrap, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=str(self.ca_file),
                        kafka_ssl_certfile=str(self.cert_file),
                        kafka_ssl_keyfile=str(self.key_file))


def scram_credential(name: str, password: Secret, iterations: int = SCRAM_ITERATIONS,
                     salt: bytes | None = None) -> str:
    """A ``kafka-storage format --add-scram`` argument for a SCRAM-SHA-512 user, with the
    salted password (RFC 5802 ``Hi``) rather than the password itself, which so appears
    neither in the process list nor in an error of the storage tool. (The salted form
    still logs in over SCRAM: the tool runs for a moment, on the broker's machine.)"""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise KafkaError(f"SCRAM user name {name!r}: use letters, digits, '.', '_', '-'")
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha512", password.get().encode(), salt, iterations)
    return (f"SCRAM-SHA-512=[name={name},iterations={iterations},"
            f'salt="{base64.b64encode(salt).decode()}",'
            f'saltedpassword="{base64.b64encode(salted).decode()}"]')


def _die_with_parent() -> None:
    """(In the child, before exec.) Ask for SIGTERM when the parent dies."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class LocalKafka:
    """One local broker: its home directory (data, logs, pid file) and its ports."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    # With ``security``: SASL_SSL on ``port``, mutual TLS on ``ssl_port``.
    security: BrokerSecurity | None = None
    ssl_port: int | None = None
    jvm_opts: str = field(
        default_factory=lambda: os.environ.get("DRIFTLINE_KAFKA_JVM_OPTS") or DEFAULT_JVM_OPTS)

    @classmethod
    def from_env(cls) -> LocalKafka:
        return cls(home=config.home() / "kafka",
                   port=_port_env("DRIFTLINE_KAFKA_PORT", 9092),
                   controller_port=_port_env("DRIFTLINE_KAFKA_CONTROLLER_PORT", 9093))

    @property
    def bootstrap(self) -> str:
        """The client listener: PLAINTEXT, or SASL_SSL on a secured broker."""
        return f"{self.host}:{self.port}"

    @property
    def ssl_bootstrap(self) -> str:
        """The mutual-TLS listener of a secured broker."""
        if self.security is None or self.ssl_port is None:
            raise KafkaError("only a broker with security and an ssl_port has an SSL listener")
        return f"{self.host}:{self.ssl_port}"

    def _ports(self) -> list[int]:
        return [self.port, self.controller_port] + (
            [self.ssl_port] if self.security is not None and self.ssl_port else [])

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return "stopped"
        return f"running (pid {pid}, {self.bootstrap})" if _port_open(
            self.host, self.port) else f"starting (pid {pid})"

    def _write_config(self) -> Path:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
                         f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "4",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
        }
        if self.security is not None:
            props.update(self._security_props(self.security))
        cfg = self.home / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.yaml").write_text(_LOG4J2)
        return cfg

    def _security_props(self, sec: BrokerSecurity) -> dict[str, str]:
        if self.ssl_port is None:
            raise KafkaError("a secured broker needs an ssl_port (its mutual-TLS listener)")
        # Kafka's PEM key store is one file: the private key, then the certificate chain.
        keystore = self.home / "broker-keystore.pem"
        keystore.unlink(missing_ok=True)
        fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable
        with os.fdopen(fd, "w") as fh:                                     # by others
            fh.write(sec.key_file.read_text() + sec.cert_file.read_text())
        h = self.host
        props = {
            "listeners": f"SASL_SSL://{h}:{self.port},SSL://{h}:{self.ssl_port},"
                         f"CONTROLLER://{h}:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://{h}:{self.port},SSL://{h}:{self.ssl_port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(sec.ca_file),
            "ssl.client.auth": "required",  # SSL and CONTROLLER: mutual TLS
            "listener.name.sasl_ssl.ssl.client.auth": "none",
            "ssl.principal.mapping.rules": PRINCIPAL_MAPPING,
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        }
        if sec.acls:
            supers = [sec.broker_principal, *sec.super_users]
            props.update({
                "authorizer.class.name": STANDARD_AUTHORIZER,
                "super.users": ";".join(f"User:{u}" for u in supers),
                "allow.everyone.if.no.acl.found": "false",
            })
        return props

    def start(self, timeout: float = 120.0, progress: Callable[[str], None] | None = None,
              tied: bool = False) -> None:
        """Start the broker (idempotent) and return once it serves metadata.

        ``tied``: the broker gets SIGTERM when this process dies, even by SIGKILL (Linux),
        for a test session or benchmark that must not leave a broker behind.
        """
        if self.pid() is not None:
            self.wait_ready(timeout)
            return
        java_version()
        libs = fetch_jars(progress)
        self.home.mkdir(parents=True, exist_ok=True)
        cfg = self._write_config()
        cp = f"{libs}/*"
        log4j = f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}"
        meta = self.home / "data" / "meta.properties"
        if not meta.exists():
            # A KRaft cluster id is a base64url uuid without padding (StorageTool random-uuid).
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            scram = [] if self.security is None else [
                arg for name, password in self.security.scram_users
                for arg in ("--add-scram", scram_credential(name, password))]
            fmt = subprocess.run(
                ["java", "-cp", cp, log4j, "kafka.tools.StorageTool", "format",
                 f"--cluster-id={cluster_id}",
                 "-c", str(cfg), "--ignore-formatted", *scram],
                capture_output=True, text=True, check=False)
            if fmt.returncode != 0:
                raise KafkaError(f"formatting KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")
        for p in self._ports():
            if _port_open(self.host, p):
                raise KafkaError(f"port {self.host}:{p} is already in use; set "
                                 "DRIFTLINE_KAFKA_PORT / DRIFTLINE_KAFKA_CONTROLLER_PORT")
        if progress:
            progress(f"starting Kafka {KAFKA_VERSION} on {self.bootstrap}")
        log = open(self.log_file, "ab")
        proc = subprocess.Popen(
            self.command(cp, log4j, cfg),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if tied and sys.platform == "linux" else None)
        log.close()
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(timeout, proc)
        except BaseException:
            self.stop()
            raise

    def command(self, classpath: str, log4j: str, config: Path) -> list[str]:
        """The broker's java command line."""
        return ["java", *self.jvm_opts.split(), "-Djava.awt.headless=true", log4j,
                "-cp", classpath, "kafka.Kafka", str(config)]

    def wait_ready(self, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Poll until a Kafka client gets cluster metadata, or fail with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise KafkaError(f"Kafka exited with {proc.returncode}:\n{self._tail()}")
            if _port_open(self.host, self.port) and asyncio.run(
                    _metadata_ok(self._admin_settings())):
                return
            time.sleep(0.2)
        raise KafkaError(f"Kafka did not become ready in {timeout:.0f}s:\n{self._tail()}")

    def _admin_settings(self) -> Settings:
        if self.security is None:
            return Settings(kafka_bootstrap=self.bootstrap)
        return self.security.admin_settings(self.ssl_bootstrap)

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``)."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                reaped = 0
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    reaped = pid
            if reaped == pid:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wipe(self) -> None:
        """Stop and delete all data (topics, offsets)."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


async def _metadata_ok(settings: Settings) -> bool:
    from driftline.streams import kafka_clients

    admin = kafka_clients.admin(settings, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        await asyncio.wait_for(admin.describe_cluster(), 5)
        return True
    except Exception:
        return False
    finally:
        try:
            await admin.close()
        except Exception:
            pass
