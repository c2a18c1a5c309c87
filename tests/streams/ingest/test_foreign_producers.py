"""Producers driftline did not write, every codec, on the real broker, into the real worker.

confluent-kafka (librdkafka), kafka-python and Kafka's own Java console producer
(``org.apache.kafka.tools.ConsoleProducer`` from ``kafka-tools``, pinned in
``kafka_jars.lock``) each publish interactions with gzip, snappy, lz4 and zstd, with
record headers, and records without a key; confluent-kafka also publishes through a
transaction it commits and one it aborts. Then hostile records on every input topic:
NUL and control characters in interactions, feedback, deploys and drift events.

The real ``driftline worker`` (monitor, logger into the real Postgres, retrain agent)
must feed exactly the committed, keyed interactions to the detectors and the store --
none of an aborted transaction -- and dead-letter every hostile or keyless record with
its reason, while it keeps running.
"""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg
import orjson
import pytest
from driftline.streams.tooling.local_kafka import fetch_jars

from tests.fixtures_kafka import consume, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_BATCH = 25
TS = 1_767_225_600


def _docs(model: str, n: int, tag: str) -> list[bytes]:
    return [orjson.dumps({"event_id": f"{model}-{tag}-{i}", "model_id": model,
                          "model_version": "v1", "ts": TS + i, "latency_ms": 500.0 + i,
                          "output_tokens": 100 + i, "metadata": {"via": tag, "é": "ü"}})
            for i in range(n)]


def _confluent(bootstrap: str, topic: str, model: str, codec: str) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                  "linger.ms": 20, "acks": "all"})
    for value in _docs(model, PER_BATCH, "confluent"):
        p.produce(topic, value, key=model.encode(), headers=[("source", b"librdkafka"),
                                                             ("codec", codec.encode())])
    p.produce(topic, _docs(model, 1, "confluent-nokey")[0])  # no key
    assert p.flush(30) == 0


def _kafka_python(bootstrap: str, topic: str, model: str, codec: str) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=20,
                      acks="all")
    for value in _docs(model, PER_BATCH, "kafka-python"):
        p.send(topic, value, key=model.encode(), headers=[("source", b"kafka-python")])
    p.send(topic, _docs(model, 1, "kafka-python-nokey")[0], key=None)
    p.flush(30)
    p.close()


def _java(bootstrap: str, topic: str, model: str, codec: str) -> None:
    libs = fetch_jars()
    lines = [f"source:java,codec:{codec}\t{model}\t{v.decode()}"
             for v in _docs(model, PER_BATCH, "java")]
    lines.append(f"source:java\tNULL\t{_docs(model, 1, 'java-nokey')[0].decode()}")
    out = subprocess.run(
        ["java", "-cp", f"{libs}/*", "org.apache.kafka.tools.ConsoleProducer",
         "--bootstrap-server", bootstrap, "--topic", topic,
         "--producer-property", f"compression.type={codec}",
         "--producer-property", "acks=all",
         "--property", "parse.key=true", "--property", "key.separator=\t",
         "--property", "parse.headers=true", "--property", "headers.delimiter=\t",
         "--property", "headers.separator=,", "--property", "headers.key.separator=:",
         "--property", "null.marker=NULL"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120,
        check=False)
    assert out.returncode == 0, out.stderr[-3000:]


def _transactions(bootstrap: str, topic: str, model: str) -> None:
    """One committed and one aborted transaction of confluent-kafka (zstd)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{model}-tx",
                  "compression.type": "zstd"})
    p.init_transactions(30)
    p.begin_transaction()
    for value in _docs(model, PER_BATCH, "committed"):
        p.produce(topic, value, key=model.encode())
    p.commit_transaction(30)
    p.begin_transaction()
    for value in _docs(model, PER_BATCH, "aborted"):
        p.produce(topic, value, key=model.encode())
    p.flush(30)
    p.abort_transaction(30)


def _stored(dsn: str, prefix: str) -> list[str]:
    async def q() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("select event_id from interactions where model_id like $1",
                                    f"{prefix}%")
            return sorted(r[0] for r in rows)
        finally:
            await conn.close()
    return asyncio.run(q())


def test_foreign_producers_every_codec_headers_null_keys_and_transactions(
        run_worker, kafka_bootstrap, topic_prefix, clean_dsn):
    worker = run_worker({"DATABASE_URL": clean_dsn, "DRIFTLINE_WARMUP": "200"})
    interactions = f"{topic_prefix}.interactions"
    expected: list[str] = []
    models = []
    for name, send in (("confluent", _confluent), ("kafka-python", _kafka_python),
                       ("java", _java)):
        for codec in CODECS:
            model = f"{topic_prefix}-{name}-{codec}"
            models.append(model)
            send(kafka_bootstrap, interactions, model, codec)
            expected += [orjson.loads(d)["event_id"] for d in _docs(model, PER_BATCH, name)]
    tx_model = f"{topic_prefix}-tx"
    _transactions(kafka_bootstrap, interactions, tx_model)
    expected += [orjson.loads(d)["event_id"] for d in _docs(tx_model, PER_BATCH, "committed")]

    m = f"{topic_prefix}-hostile"
    hostile = [
        ("interactions", b'{"event_id":"h\\u0000","model_id":"%s","ts":1}', "nul_character"),
        ("interactions", b'{"event_id":"h","model_id":"%s","ts":1,"metadata":{"k":"\\u0000"}}',
         "nul_character"),
        ("interactions", b'{"event_id":"h\\u0007","model_id":"%s","ts":1}',
         "control_character"),
        ("feedback", b'{"event_id":"h\\u0000","model_id":"%s","ts":1,"correct":true}',
         "nul_character"),
        ("feedback", b'{"event_id":"h\\n","model_id":"%s","ts":1,"correct":true}',
         "control_character"),
        ("model-updates", b'{"model_id":"%s","model_version":"v\\u0000","ts":1}',
         "nul_character"),
        ("model-updates", b'{"model_id":"%s","model_version":"v\\u001b[2J","ts":1}',
         "control_character"),
        ("drift-events", b'{"schema_version":1,"drift_id":"d\\u0000","model_id":"%s",'
         b'"kind":"behavior","signal":"latency","detector":"x","detected_at":'
         b'"2026-01-01T00:00:00Z","severity":1.0}', "nul_character"),
    ]
    produce(kafka_bootstrap, [(f"{topic_prefix}.{t}", m.encode(), v % m.encode())
                              for t, v, _ in hostile])
    # A good deploy after them: the worker is still applying records in order.
    produce(kafka_bootstrap, [(f"{topic_prefix}.model-updates", m.encode(),
                               orjson.dumps({"model_id": m, "model_version": "v2", "ts": 2}))])

    n_keyless = 3 * len(CODECS)
    dead = consume(kafka_bootstrap, f"{topic_prefix}.dead-letters",
                   lambda r: len(r) >= len(hostile) + n_keyless, timeout=120)
    reasons = sorted((dict(r.headers)["driftline.source.topic"].decode().rsplit(".", 1)[1],
                      dict(r.headers)["driftline.error.reason"].decode()) for r in dead)
    assert reasons == sorted([(t, why) for t, _, why in hostile]
                             + [("interactions", "missing_field")] * n_keyless), worker.tail()
    wait_for(lambda: worker.health()["interactions_processed"] >= len(expected), 120,
             "every committed interaction processed", worker)
    wait_for(lambda: len(_stored(clean_dsn, topic_prefix)) >= len(expected), 60,
             "every committed interaction logged", worker)
    assert worker.proc.poll() is None
    # Exactly the committed ones: none of the aborted transaction, no keyless record.
    assert worker.health()["interactions_processed"] == len(expected)
    assert _stored(clean_dsn, topic_prefix) == sorted(expected)
    assert not any("-aborted-" in e for e in _stored(clean_dsn, topic_prefix))
    wait_for(lambda: worker.metric("driftline_dead_letters_published_total") == len(dead), 30,
             "every dead letter counted", worker)
    assert worker.proc.poll() is None
