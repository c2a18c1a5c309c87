"""Kafka security on the real broker: SASL_SSL (SCRAM-SHA-512) and mutual TLS with a CA made
by the test, the worker failing closed without (good) credentials, and the ACL layout.

The secured broker (``tests/fixtures_secure_kafka.py``) has no plaintext listener, the
StandardAuthorizer on, and exactly the grants of ``driftline.streams.kafka_acls`` applied
with Kafka's own ``kafka-acls`` tool. Records are published and read with aiokafka
configured here by hand, not through driftline's ``kafka_clients``.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from driftline.streams.app import ensure_topics
from driftline.streams.tooling.local_kafka import BrokerSecurity, free_port

from tests.fixtures_kafka import WorkerProcess, wait_for
from tests.fixtures_secure_kafka import (
    SECURE_PREFIX,
    USERS,
    Cert,
    SecureKafka,
    TestCA,
    driftline_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

WARMUP = 300


def _topic(name: str) -> str:
    return f"{SECURE_PREFIX}.{name}"


def _context(sk: SecureKafka, cert: Cert | None = None, password: str | None = None
             ) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(sk.ca.ca_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key), password=password)
    return ctx


def _sasl(sk: SecureKafka, user: str) -> dict[str, Any]:
    """Hand-made aiokafka keywords of a SASL_SSL client logged in as ``user``."""
    return {"bootstrap_servers": sk.sasl_bootstrap, "security_protocol": "SASL_SSL",
            "ssl_context": _context(sk), "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user, "sasl_plain_password": USERS[user]}


def _mtls(sk: SecureKafka, cert: Cert) -> dict[str, Any]:
    return {"bootstrap_servers": sk.ssl_bootstrap, "security_protocol": "SSL",
            "ssl_context": _context(sk, cert)}


def _produce(client: dict[str, Any], records: list[tuple[str, bytes, bytes]]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(acks="all", **client)
        await producer.start()
        try:
            for topic, key, value in records:
                await producer.send(topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()
    asyncio.run(go())


def _read(client: dict[str, Any], topic: str, until: Any, timeout: float = 90.0) -> list[Any]:
    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(topic, group_id=None, auto_offset_reset="earliest",
                                    enable_auto_commit=False, **client)
        await consumer.start()
        out: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not until(out):
                for msgs in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend(msgs)
        finally:
            await consumer.stop()
        return out
    return asyncio.run(go())


def _interactions(model: str, n: int = 700, shift_at: int = 400) -> list[dict[str, Any]]:
    rng = np.random.default_rng(11)
    return [{"event_id": f"{model}-{i}", "model_id": model, "model_version": "v1",
             "ts": 1_767_225_600 + i,
             "latency_ms": float(rng.lognormal(math.log(500.0 * (3 if i >= shift_at else 1)),
                                               0.3)),
             "output_tokens": int(rng.lognormal(math.log(150), 0.5)), "refusal": False}
            for i in range(n)]


def _latency_events(records: list[Any], model: str) -> list[dict[str, Any]]:
    docs = [orjson.loads(r.value) for r in records]
    return [d for d in docs if d["model_id"] == model and d["signal"] == "latency"]


def _one(dsn: str, sql: str, *args: Any) -> dict[str, Any] | None:
    async def q() -> dict[str, Any] | None:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(sql, *args)
            return dict(row) if row else None
        finally:
            await conn.close()
    return asyncio.run(q())


def _assert_no_secret(worker: WorkerProcess, *secrets: str) -> None:
    log = worker.log.read_text(errors="replace")
    metrics = worker.metrics() or ""
    assert metrics, "no /metrics"
    for secret in secrets:
        assert secret not in log, "a secret in the worker's log"
        assert secret not in metrics, "a secret in /metrics"


def _drift_path(sk: SecureKafka, worker: WorkerProcess, dsn: str, model: str) -> None:
    """Interactions (by the application principal) -> drift event and retrain request
    (by the worker) -> store rows; a deploy (by the deployer) reaches the worker."""
    docs = _interactions(model)
    _produce(_sasl(sk, "app-producer"), [(_topic("interactions"), model.encode(),
                                          orjson.dumps(d)) for d in docs])
    admin = _sasl(sk, "admin")
    drift = _read(admin, _topic("drift-events"), lambda r: _latency_events(r, model))
    [ev, *_] = _latency_events(drift, model) or [None]
    assert ev is not None, worker.tail()
    assert 400 <= int(ev["trigger_event_id"].rsplit("-", 1)[1]) < 500, ev
    requests = _read(admin, _topic("retrain-requests"),
                     lambda r: any(orjson.loads(m.value)["model_id"] == model for m in r))
    [req] = [orjson.loads(m.value) for m in requests if orjson.loads(m.value)["model_id"]
             == model]
    assert ev["drift_id"] in req["drift_ids"]
    job = wait_for(lambda: _one(dsn, "select state from retrain_jobs where model_id = $1",
                                model), 60, "the retrain job row", worker)
    assert job["state"] in ("requested", "running", "succeeded")
    _produce(_sasl(sk, "driftline-deployer"), [(_topic("model-updates"), model.encode(),
                                                orjson.dumps({"model_id": model,
                                                              "model_version": "v2",
                                                              "ts": time.time(),
                                                              "kind": "deployed"}))])
    wait_for(lambda: _one(dsn, "select 1 from model_versions where model_id = $1 and"
                               " model_version = 'v2'", model), 60,
             "the deploy recorded by the worker", worker)
    wait_for(lambda: worker.metric("driftline_interactions_processed_total",
                                   model=model) >= len(docs), 60,
             "every interaction processed", worker)


def test_worker_runs_the_whole_path_over_sasl_ssl(
        secure_kafka: SecureKafka, secure_worker: Any, postgres_dsn: str) -> None:
    """The worker logged in as its own (non-super) principal: every client it opens --
    the admin, the monitor's consumer, producer and state reader, the logger, Faust's
    consumer and producer -- goes through SASL_SSL and the ACLs."""
    env = secure_kafka.sasl_env("driftline-worker")
    worker = secure_worker({**env, "DATABASE_URL": postgres_dsn,
                            "DRIFTLINE_WARMUP": str(WARMUP),
                            "DRIFTLINE_MAX_MODEL_LABELS": "1000"})
    model = f"sasl-{uuid.uuid4().hex[:8]}"
    _drift_path(secure_kafka, worker, postgres_dsn, model)
    _assert_no_secret(worker, USERS["driftline-worker"])


def test_worker_runs_the_whole_path_over_mutual_tls(
        secure_kafka: SecureKafka, secure_worker: Any, postgres_dsn: str) -> None:
    """The same over the SSL listener with a client certificate (its key encrypted):
    the certificate's CN is the same principal, so the same ACLs hold."""
    key_password = "cert-key-pw-7Hd2"
    cert = secure_kafka.ca.issue("driftline-worker", key_password=key_password)
    worker = secure_worker({**secure_kafka.mtls_env(cert, key_password),
                            "DATABASE_URL": postgres_dsn, "DRIFTLINE_WARMUP": str(WARMUP),
                            "DRIFTLINE_MAX_MODEL_LABELS": "1000"}, name="mtls")
    model = f"mtls-{uuid.uuid4().hex[:8]}"
    _drift_path(secure_kafka, worker, postgres_dsn, model)
    _assert_no_secret(worker, key_password)


def _worker_exits(env: dict[str, str], tmp_path: Any, timeout: float = 90.0
                  ) -> tuple[int, str]:
    full = driftline_env({"DRIFTLINE_TOPIC_PREFIX": SECURE_PREFIX,
                          "DRIFTLINE_APP_ID": "sec-app",
                          "DRIFTLINE_DATA_DIR": str(tmp_path / "data"),
                          "DRIFTLINE_WEB_PORT": str(free_port()), **env})
    done = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "worker"],
                          env=full, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return done.returncode, done.stdout + done.stderr


FAILS = {
    "no credentials": (lambda sk: {"DRIFTLINE_KAFKA_BOOTSTRAP": sk.sasl_bootstrap},
                       "over PLAINTEXT: 127.0.0.1:{port}: the broker closed the connection: is "
                       "this a PLAINTEXT listener? Check DRIFTLINE_KAFKA_SECURITY_PROTOCOL"),
    "wrong password": (lambda sk: sk.sasl_env("driftline-worker", "not-the-password-1"),
                       "authentication as 'driftline-worker' (SCRAM-SHA-512) failed: check "
                       "DRIFTLINE_KAFKA_SASL_USERNAME and DRIFTLINE_KAFKA_SASL_PASSWORD"),
    "unknown user": (lambda sk: sk.sasl_env("nobody", "whatever-pw-2"),
                     "authentication as 'nobody' (SCRAM-SHA-512) failed"),
    "password missing": (lambda sk: sk.sasl_env("driftline-worker", ""),
                         "DRIFTLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
                         "DRIFTLINE_KAFKA_SASL_PASSWORD"),
    "untrusted broker": (lambda sk: {**sk.sasl_env("driftline-worker"),
                                     "DRIFTLINE_KAFKA_SSL_CAFILE": ""},
                         "the broker's TLS certificate is not trusted"),
    "mtls without a certificate": (
        lambda sk: {"DRIFTLINE_KAFKA_BOOTSTRAP": sk.ssl_bootstrap,
                    "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
                    "DRIFTLINE_KAFKA_SSL_CAFILE": str(sk.ca.ca_file)},
        "the broker closed the connection: is this a SSL listener? Check "
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL (a listener that requires client certificates "
        "needs DRIFTLINE_KAFKA_SSL_CERTFILE)"),
}


@pytest.mark.parametrize("case", list(FAILS))
def test_worker_without_good_credentials_fails_closed_in_one_line(
        secure_kafka: SecureKafka, tmp_path: Any, case: str) -> None:
    make_env, expected = FAILS[case]
    env = make_env(secure_kafka)
    t0 = time.monotonic()
    code, output = _worker_exits(env, tmp_path)
    # Exit codes of the CLI: 3 contradictory settings, 5 the broker refuses.
    assert code == (3 if case == "password missing" else 5), output
    assert time.monotonic() - t0 < 60, "a refused login must not wait for long"
    lines = [line for line in output.splitlines() if line.strip()]
    port = env["DRIFTLINE_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1]
    assert lines[-1].startswith("error: ") and expected.format(port=port) in lines[-1], output
    assert "Traceback" not in output
    for secret in (USERS["driftline-worker"], "not-the-password-1", "whatever-pw-2"):
        assert secret not in output


def test_worker_with_a_certificate_of_another_ca_fails_closed(
        secure_kafka: SecureKafka, tmp_path: Any) -> None:
    rogue = TestCA(tmp_path / "rogue", name="not the broker's CA").issue("driftline-worker")
    code, output = _worker_exits(secure_kafka.mtls_env(rogue), tmp_path)
    assert code == 5, output
    [line] = [ln for ln in output.splitlines() if ln.startswith("error: ")]
    assert "over SSL" in line and "Traceback" not in output


# -- ACLs ----------------------------------------------------------------------------

def _send(client: dict[str, Any], topic: str) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(acks="all", request_timeout_ms=10_000, **client)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b'{"probe": true}', key=b"acl-probe")
        finally:
            await producer.stop()
    asyncio.run(go())


@pytest.fixture(scope="module")
def secure_topics(secure_kafka: SecureKafka) -> None:
    """driftline's topics on the secured broker, created by the worker's principal."""
    asyncio.run(ensure_topics(secure_kafka.settings(secure_kafka.sasl_env("driftline-worker"))))


ALLOWED = [("driftline-worker", "drift-events"), ("driftline-worker", "monitor-state"),
           ("driftline-worker", "dead-letters"), ("driftline-worker", "retrain-requests"),
           ("driftline-deployer", "model-updates"), ("app-producer", "interactions"),
           ("app-producer", "feedback")]
REFUSED = [("app-producer", "drift-events"), ("app-producer", "monitor-state"),
           ("app-producer", "model-updates"), ("driftline-deployer", "drift-events"),
           ("driftline-deployer", "interactions"), ("driftline-worker", "model-updates"),
           ("driftline-worker", "interactions"), ("intruder", "interactions"),
           ("intruder", "drift-events"), ("intruder", "monitor-state")]


@pytest.mark.parametrize(("user", "topic"), ALLOWED)
def test_acls_let_each_principal_write_its_topics(secure_kafka: SecureKafka,
                                                  secure_topics: None, user: str,
                                                  topic: str) -> None:
    _send(_sasl(secure_kafka, user), _topic(topic))


@pytest.mark.parametrize(("user", "topic"), REFUSED)
def test_acls_refuse_every_other_writer(secure_kafka: SecureKafka, secure_topics: None,
                                        user: str, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        _send(_sasl(secure_kafka, user), _topic(topic))


def test_acls_hold_for_certificate_principals(secure_kafka: SecureKafka,
                                              secure_topics: None) -> None:
    """A certificate's CN is the principal: the worker's certificate writes drift events,
    another certificate of the same CA cannot."""
    _send(_mtls(secure_kafka, secure_kafka.ca.issue("driftline-worker")),
          _topic("drift-events"))
    with pytest.raises(TopicAuthorizationFailedError):
        _send(_mtls(secure_kafka, secure_kafka.ca.issue("intruder")), _topic("drift-events"))


def test_no_other_principal_reads_or_writes_state(secure_kafka: SecureKafka,
                                                  secure_topics: None) -> None:
    """The state topic is the worker's alone: another principal cannot even read it."""
    from aiokafka.errors import TopicAuthorizationFailedError as Denied

    async def read_as(user: str) -> None:
        consumer = AIOKafkaConsumer(_topic("monitor-state"), group_id=None,
                                    auto_offset_reset="earliest", **_sasl(secure_kafka, user))
        try:
            await consumer.start()
            await consumer.getmany(timeout_ms=2000)
        finally:
            await consumer.stop()

    with pytest.raises(Denied):
        asyncio.run(read_as("app-producer"))


def test_the_broker_holds_exactly_the_documented_grants(secure_kafka: SecureKafka) -> None:
    import re

    listed = secure_kafka.kafka_acls("--list")
    assert listed.returncode == 0, listed.stderr
    held = set()
    resource = None
    for line in listed.stdout.splitlines():
        if m := re.search(r"resourceType=(\w+), name=([^,]+), patternType=(\w+)", line):
            resource = m.groups()
        elif m := re.search(r"principal=([^,]+), host=\*, operation=(\w+), "
                            r"permissionType=ALLOW", line):
            assert resource is not None
            held.add((m[1], m[2], *resource))
    want = {(acl.principal, op.upper(), acl.resource.upper(), name, acl.pattern.upper())
            for acl in secure_kafka.layout.grants() for op in acl.operations
            for name in acl.names}
    assert held == want


def test_broker_security_has_no_plaintext_listener(secure_kafka: SecureKafka) -> None:
    props = dict(line.split("=", 1) for line in
                 (secure_kafka.kafka.home / "server.properties").read_text().splitlines())
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:broker;User:admin"
    assert isinstance(secure_kafka.kafka.security, BrokerSecurity)


# -- the simulator's producer ---------------------------------------------------------

def _simulate(env: dict[str, str], events: int, seed: int) -> subprocess.CompletedProcess[str]:
    full = driftline_env({"DRIFTLINE_TOPIC_PREFIX": SECURE_PREFIX, **env})
    return subprocess.run([sys.executable, "-m", "driftline.streams.cli", "simulate", "--to",
                           "kafka", "--events", str(events), "--seed", str(seed)],
                          env=full, capture_output=True, text=True, timeout=120, check=False)


def test_simulate_publishes_over_sasl_ssl_as_an_application(
        secure_kafka: SecureKafka, secure_topics: None) -> None:
    from driftline.streams.offline.simulate import demo_scenario, event_id

    seed, events = 4242, 40
    done = _simulate(secure_kafka.sasl_env("app-producer"), events, seed)
    assert done.returncode == 0, done.stderr
    want = {event_id(seed, m.model_id, i) for m in demo_scenario(events, seed).models
            for i in range(events)}

    def ids(records: list[Any]) -> set[str]:
        return {orjson.loads(r.value).get("event_id") for r in records} & want

    got = _read(_sasl(secure_kafka, "admin"), _topic("interactions"),
                lambda r: ids(r) == want, timeout=60)
    assert ids(got) == want


def test_simulate_as_a_principal_without_write_access_fails_in_one_line(
        secure_kafka: SecureKafka, secure_topics: None) -> None:
    done = _simulate(secure_kafka.sasl_env("driftline-deployer"), 10, 1)
    assert done.returncode == 5, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: not authorized by the broker: TOPIC_AUTHORIZATION_FAILED (sec.interactions) "
        "-- the principal lacks an ACL for this (docs/security.md)")
    assert "Traceback" not in done.stderr and USERS["driftline-deployer"] not in done.stderr


def test_a_user_added_with_kafka_configs_logs_in_and_gets_nothing(
        secure_kafka: SecureKafka, secure_topics: None) -> None:
    """SCRAM users can be added on the running broker as docs/security.md shows (Kafka's
    own ConfigCommand); a new principal authenticates but holds no grant."""
    from driftline.streams.tooling.local_kafka import fetch_jars

    password = "late-user-pw-5Rt8"
    done = subprocess.run(
        ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{fetch_jars()}/*",
         "kafka.admin.ConfigCommand", "--bootstrap-server", secure_kafka.sasl_bootstrap,
         "--command-config", str(secure_kafka.tls_dir / "admin.properties"), "--alter",
         "--add-config", f"SCRAM-SHA-512=[password={password}]", "--entity-type", "users",
         "--entity-name", "late-user"],
        capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    client = {**_sasl(secure_kafka, "intruder"), "sasl_plain_username": "late-user",
              "sasl_plain_password": password}

    def refused() -> bool:  # the new credential reaches the broker's cache shortly after
        try:
            _send(client, _topic("interactions"))
        except TopicAuthorizationFailedError:
            return True
        except Exception:
            return False
        raise AssertionError("late-user wrote without a grant")

    wait_for(refused, 30, "late-user authenticated (and refused the write)")
