"""A second real broker, secured: SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners, a
test CA made here, SCRAM users, the StandardAuthorizer with driftline's ACL layout
(``driftline.streams.kafka_acls``) applied by Kafka's own ``kafka-acls`` tool.

Started once per session, only when a test asks for it. Its topics use one prefix
(``SECURE_PREFIX``) because its ACLs name them; tests keep apart by their model ids.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from driftline.streams.config import Secret, Settings
from driftline.streams.kafka_acls import AclLayout
from driftline.streams.tooling.local_kafka import (
    BrokerSecurity,
    LocalKafka,
    fetch_jars,
    free_port,
    free_ports,
)

from tests.fixtures_kafka import WorkerProcess, _port_open, wait_for

__all__ = ["SECURE_APP", "SECURE_PREFIX", "USERS", "SecureKafka", "TestCA", "driftline_env",
           "secure_kafka", "secure_worker"]

SECURE_PREFIX = "sec"
SECURE_APP = "sec-app"
# SCRAM users of the secured broker (the passwords are test data, made up here).
USERS = {"admin": "admin-pw-3Jq9", "driftline-worker": "worker-pw-Vb71",
         "driftline-deployer": "deploy-pw-Lm20", "app-producer": "producer-pw-Qz55",
         "intruder": "intruder-pw-Xx00"}


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


class TestCA:
    """A throwaway certificate authority (EC P-256) that issues PEM certificates."""

    __test__ = False  # not a test class

    def __init__(self, directory: Path, name: str = "driftline test CA") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(self._name).issuer_name(self._name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool = False, key_password: str | None = None) -> Cert:
        """A certificate for ``CN=cn`` (client auth; with ``server`` also server auth for
        127.0.0.1 / localhost); its key as PKCS#8 PEM, encrypted with ``key_password``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + (
            [ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(key_password.encode()) if key_password
            else serialization.NoEncryption())
        cert_file, key_file = self.dir / f"{cn}.crt.pem", self.dir / f"{cn}.key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8, encryption))
        key_file.chmod(0o600)
        return Cert(cert_file, key_file)


@dataclass
class SecureKafka:
    """The secured broker of the session and what a test needs to reach it."""

    kafka: LocalKafka
    ca: TestCA
    layout: AclLayout
    tls_dir: Path

    @property
    def sasl_bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def ssl_bootstrap(self) -> str:
        return self.kafka.ssl_bootstrap

    def sasl_env(self, user: str, password: str | None = None) -> dict[str, str]:
        """Environment of a SASL_SSL client logged in as ``user``."""
        return {"DRIFTLINE_KAFKA_BOOTSTRAP": self.sasl_bootstrap,
                "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "DRIFTLINE_KAFKA_SASL_USERNAME": user,
                "DRIFTLINE_KAFKA_SASL_PASSWORD": USERS[user] if password is None else password,
                "DRIFTLINE_KAFKA_SSL_CAFILE": str(self.ca.ca_file)}

    def mtls_env(self, cert: Cert, key_password: str = "") -> dict[str, str]:
        """Environment of a mutual-TLS client with ``cert``."""
        return {"DRIFTLINE_KAFKA_BOOTSTRAP": self.ssl_bootstrap,
                "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
                "DRIFTLINE_KAFKA_SSL_CAFILE": str(self.ca.ca_file),
                "DRIFTLINE_KAFKA_SSL_CERTFILE": str(cert.cert),
                "DRIFTLINE_KAFKA_SSL_KEYFILE": str(cert.key),
                "DRIFTLINE_KAFKA_SSL_KEY_PASSWORD": key_password}

    def settings(self, env: dict[str, str]) -> Settings:
        return Settings.from_env({"DRIFTLINE_TOPIC_PREFIX": SECURE_PREFIX,
                                  "DRIFTLINE_APP_ID": SECURE_APP, **env})

    def kafka_acls(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Kafka's own ``kafka-acls`` (AclCommand) as the admin user, over SASL_SSL."""
        return run_kafka_acls(self.kafka, self.tls_dir / "admin.properties", *args)


_JAVA_TOOL = ["java", "-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1"]


def run_kafka_acls(kafka: LocalKafka, command_config: Path, *args: str
                   ) -> subprocess.CompletedProcess[str]:
    """One ``kafka-acls`` command (Kafka's AclCommand from the pinned kafka-tools jar)."""
    return subprocess.run(
        [*_JAVA_TOOL, "-cp", f"{fetch_jars()}/*", "org.apache.kafka.tools.AclCommand",
         "--bootstrap-server", kafka.bootstrap, "--command-config", str(command_config),
         *args],
        capture_output=True, text=True, check=False, timeout=120)


def apply_acl_script(kafka: LocalKafka, script: str) -> None:
    """Run the ``kafka-acls.sh`` commands of docs/security.md as they are written, with
    ``kafka-acls.sh`` being Kafka's AclCommand."""
    java = " ".join(_JAVA_TOOL)
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n"
         f'kafka-acls.sh() {{ {java} -cp "{fetch_jars()}/*" '
         'org.apache.kafka.tools.AclCommand "$@"; }\n' + script],
        capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the ACL script failed:\n{script}\n{done.stdout}{done.stderr}")


def _admin_properties(path: Path, ca: TestCA) -> Path:
    """A Java client configuration for the SCRAM admin (as the docs show it)."""
    path.write_text(
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{USERS["admin"]}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={ca.ca_file}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    tls = tmp_path_factory.mktemp("tls")
    ca = TestCA(tls)
    broker = ca.issue("broker", server=True)
    security = BrokerSecurity(
        ca_file=ca.ca_file, cert_file=broker.cert, key_file=broker.key,
        broker_principal="broker", super_users=("admin",),
        scram_users=tuple((u, Secret(p)) for u, p in USERS.items()))
    sasl_port, ssl_port, controller_port = free_ports(3)
    kafka = LocalKafka(home=tmp_path_factory.mktemp("kafka-secure"), port=sasl_port,
                       controller_port=controller_port, ssl_port=ssl_port, security=security)
    kafka.start(timeout=180, tied=True)
    layout = AclLayout(topic_prefix=SECURE_PREFIX, app_id=SECURE_APP,
                       worker="User:driftline-worker", deployer="User:driftline-deployer",
                       producers=("User:app-producer",))
    sk = SecureKafka(kafka, ca, layout, tls)
    try:
        _admin_properties(tls / "admin.properties", ca)
        apply_acl_script(kafka, layout.script(kafka.bootstrap, str(tls / "admin.properties")))
        yield sk
    finally:
        kafka.stop()


def driftline_env(env: dict[str, str]) -> dict[str, str]:
    """The process environment without any Kafka setting of the caller's, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_KAFKA_")}
    return {**base, **env}


@pytest.fixture
def secure_worker(secure_kafka: SecureKafka, tmp_path: Path
                  ) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``driftline worker`` subprocesses on the secured broker (sec.* topics)."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "w") -> WorkerProcess:
        port = free_port()
        full = driftline_env({"DRIFTLINE_TOPIC_PREFIX": SECURE_PREFIX,
                              "DRIFTLINE_APP_ID": SECURE_APP,
                              "DRIFTLINE_DATA_DIR": str(tmp_path / f"data-{name}"),
                              "DRIFTLINE_WEB_PORT": str(port),
                              "DRIFTLINE_BATCH_WITHIN_S": "0.05", **env})
        log = tmp_path / f"worker-{name}-{len(started)}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "driftline.streams.cli", "worker"],
                                    env=full, stdout=fh, stderr=subprocess.STDOUT)
        w = WorkerProcess(proc, Settings.from_env(full), log, port)
        started.append(w)
        wait_for(lambda: _port_open(port), 90, "the worker's web port", w)
        return w

    yield start
    for w in started:
        w.stop()
