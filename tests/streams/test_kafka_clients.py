"""The one home of Kafka client settings: security keywords from Settings, clear errors
without secrets, and no client in ``streams/`` built anywhere else."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import faust
import pytest
from driftline.streams import kafka_clients
from driftline.streams.config import Secret, Settings
from driftline.streams.kafka_clients import KafkaConfigError, connection_kwargs

from tests.fixtures_secure_kafka import TestCA

PASSWORD = "sasl-hunter2-pw"
KEY_PASSWORD = "key-hunter2-pw"
STREAMS = Path(__file__).resolve().parents[2] / "streams"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def _env(**values: str) -> Settings:
    return Settings.from_env({f"DRIFTLINE_KAFKA_{k.upper()}": v for k, v in values.items()})


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert connection_kwargs(Settings.from_env({})) == {
        "bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert kafka_clients.faust_credentials(Settings.from_env({})) is None


def test_sasl_ssl_from_the_environment(ca: TestCA) -> None:
    s = _env(bootstrap="k1:9093,k2:9093", security_protocol="sasl_ssl",
             sasl_username="driftline-worker", sasl_password=PASSWORD,
             ssl_cafile=str(ca.ca_file))
    kw = connection_kwargs(s)
    ctx = kw.pop("ssl_context")
    assert kw == {"bootstrap_servers": "k1:9093,k2:9093", "security_protocol": "SASL_SSL",
                  "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "driftline-worker",
                  "sasl_plain_password": PASSWORD}
    # The broker's certificate and name are always checked, against the given CA only.
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in ctx.get_ca_certs()] == [
        ((("commonName", "driftline test CA"),),)]
    creds = kafka_clients.faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username) == (
        "SASL_SSL", "SCRAM-SHA-512", "driftline-worker")
    assert creds.ssl_context is not None and PASSWORD not in repr(creds)
    assert PASSWORD not in repr(s)


def test_mutual_tls_with_an_encrypted_key(ca: TestCA) -> None:
    cert = ca.issue("driftline-worker", key_password=KEY_PASSWORD)
    s = _env(security_protocol="SSL", ssl_cafile=str(ca.ca_file), ssl_certfile=str(cert.cert),
             ssl_keyfile=str(cert.key), ssl_key_password=KEY_PASSWORD)
    kw = connection_kwargs(s)
    assert kw["security_protocol"] == "SSL" and isinstance(kw["ssl_context"], ssl.SSLContext)
    assert not any(k.startswith("sasl") for k in kw)
    creds = kafka_clients.faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"
    assert KEY_PASSWORD not in repr(s)


def test_sasl_plaintext_with_scram() -> None:
    s = _env(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
             sasl_username="u", sasl_password=PASSWORD)
    kw = connection_kwargs(s)
    assert "ssl_context" not in kw and kw["sasl_mechanism"] == "SCRAM-SHA-256"
    creds = kafka_clients.faust_credentials(s)
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None


def _error(settings: Settings) -> str:
    with pytest.raises(KafkaConfigError) as info:
        connection_kwargs(settings)
    msg = str(info.value)
    assert PASSWORD not in msg and KEY_PASSWORD not in msg and "\n" not in msg
    return msg


def test_contradicting_or_incomplete_settings_are_refused(ca: TestCA, tmp_path: Path) -> None:
    cert = ca.issue("w", key_password=KEY_PASSWORD)
    assert _error(_env(security_protocol="TLS")) == (
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL='TLS' is not one of PLAINTEXT, SSL, "
        "SASL_PLAINTEXT, SASL_SSL")
    assert _error(_env(security_protocol="SASL_SSL", sasl_username="u")) == (
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs DRIFTLINE_KAFKA_SASL_PASSWORD")
    assert _error(_env(security_protocol="SASL_SSL")) == (
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs DRIFTLINE_KAFKA_SASL_USERNAME and "
        "DRIFTLINE_KAFKA_SASL_PASSWORD")
    # Credentials the protocol would ignore are a mistake, not a silent downgrade.
    assert _error(_env(sasl_username="u", sasl_password=PASSWORD)) == (
        "DRIFTLINE_KAFKA_SASL_USERNAME, DRIFTLINE_KAFKA_SASL_PASSWORD set, but "
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL (SASL_SSL does)")
    assert _error(_env(security_protocol="SSL", sasl_password=PASSWORD)).startswith(
        "DRIFTLINE_KAFKA_SASL_PASSWORD set, but DRIFTLINE_KAFKA_SECURITY_PROTOCOL=SSL")
    assert _error(_env(ssl_cafile=str(ca.ca_file))) == (
        "DRIFTLINE_KAFKA_SSL_CAFILE set, but DRIFTLINE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does "
        "not use TLS (SSL or SASL_SSL do)")
    assert _error(_env(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                       sasl_username="u", sasl_password=PASSWORD)).startswith(
        "DRIFTLINE_KAFKA_SASL_MECHANISM=PLAIN over SASL_PLAINTEXT would send the password")
    assert _error(_env(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI",
                       sasl_username="u", sasl_password=PASSWORD)).startswith(
        "DRIFTLINE_KAFKA_SASL_MECHANISM='GSSAPI' is not one of")
    assert _error(_env(security_protocol="SSL", ssl_keyfile=str(cert.key))) == (
        "DRIFTLINE_KAFKA_SSL_KEYFILE is set without DRIFTLINE_KAFKA_SSL_CERTFILE (the client "
        "certificate)")
    missing = tmp_path / "nope.pem"
    assert _error(_env(security_protocol="SSL", ssl_cafile=str(missing))).startswith(
        f"cannot read the CA certificates in DRIFTLINE_KAFKA_SSL_CAFILE={missing}: ")
    wrong = _error(_env(security_protocol="SSL", ssl_cafile=str(ca.ca_file),
                        ssl_certfile=str(cert.cert), ssl_keyfile=str(cert.key),
                        ssl_key_password="not-it"))
    assert wrong.startswith(f"cannot load the client certificate and key from "
                            f"DRIFTLINE_KAFKA_SSL_CERTFILE={cert.cert}, "
                            f"DRIFTLINE_KAFKA_SSL_KEYFILE={cert.key}: ")
    assert "wrong DRIFTLINE_KAFKA_SSL_KEY_PASSWORD" in wrong
    assert "not-it" not in wrong


def test_callers_cannot_override_the_connection() -> None:
    with pytest.raises(TypeError, match="connection settings come from Settings"):
        kafka_clients.producer(Settings(), bootstrap_servers="elsewhere:9092")
    with pytest.raises(TypeError, match="security_protocol"):
        kafka_clients.consumer(Settings(), "t", security_protocol="PLAINTEXT")


async def test_clients_carry_the_security_settings(ca: TestCA) -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1", kafka_security_protocol="SASL_SSL",
                 kafka_sasl_username="u", kafka_sasl_password=Secret(PASSWORD),
                 kafka_ssl_cafile=str(ca.ca_file))
    producer = kafka_clients.producer(s, acks="all")
    consumer = kafka_clients.consumer(s, "t", group_id=None)
    admin = kafka_clients.admin(s)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "u"
        assert client._ssl_context is not None
    await producer.stop()
    await consumer.stop()
    await admin.close()


_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}


def test_no_kafka_client_is_built_outside_kafka_clients() -> None:
    """Every aiokafka client in streams/ comes from kafka_clients, and the Faust app gets
    its broker credentials from there: a new client cannot forget the security keywords."""
    offenders = []
    for path in sorted(STREAMS.rglob("*.py")):
        if path.name == "kafka_clients.py":
            continue
        if path.name == "client.py":  # the public API: the caller's own options, or
            continue  # Publisher/Subscriber.from_settings, which go through kafka_clients
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = (node.func.attr if isinstance(node.func, ast.Attribute)
                    else getattr(node.func, "id", ""))
            if name in _CLIENTS or name == "create_conn":
                offenders.append(f"{path.relative_to(STREAMS)}:{node.lineno} {name}")
            if name == "App" and not any(k.arg == "broker_credentials" for k in node.keywords):
                offenders.append(f"{path.relative_to(STREAMS)}:{node.lineno} faust.App "
                                 "without broker_credentials")
    assert offenders == []


async def test_the_public_client_connects_as_settings_say() -> None:
    from driftline.streams.client import Publisher, Subscriber

    s = Settings.from_env({"DRIFTLINE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                           "DRIFTLINE_TOPIC_PREFIX": "acme"})
    pub = Publisher.from_settings(s)
    assert pub.topic_prefix == "acme"
    assert pub._producer.client._bootstrap_servers == "127.0.0.1:1"
    sub = Subscriber.from_settings(s, group_id="g")
    assert sub._consumer._client._bootstrap_servers == "127.0.0.1:1"
    assert sub._consumer.subscription() == {"acme.drift-events"}
