"""Session fixtures for a real Apache Kafka broker (KRaft, the project's pinned version).

The broker is started once per test session by the same code as ``driftline kafka up``,
on free ports under a temporary directory, and stopped at the end. Set
``DRIFTLINE_TEST_BOOTSTRAP`` to use an already running broker instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from driftline.streams.config import Settings
from driftline.streams.tooling.local_kafka import LocalKafka, free_port, free_ports

__all__ = [
    "WorkerProcess",
    "consume",
    "kafka_bootstrap",
    "produce",
    "run_worker",
    "topic_prefix",
]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("DRIFTLINE_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    port, controller_port = free_ports(2)
    kafka = LocalKafka(home=tmp_path_factory.mktemp("kafka"), port=port,
                       controller_port=controller_port)
    kafka.start(timeout=180, tied=True)  # no broker left behind if pytest is killed
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic namespace per test: no test sees another's records or offsets."""
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    settings: Settings
    log: Path
    web_port: int

    def metrics(self) -> str | None:
        import urllib.request

        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.web_port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def health(self) -> dict[str, object]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/healthz",
                                    timeout=2) as r:
            return dict(orjson.loads(r.read()))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` matching ``labels`` (0 when absent)."""
        text = self.metrics() or ""
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head != name and not head.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self, sig: int = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(cond: Any, timeout: float, what: str, worker: WorkerProcess | None = None,
             interval: float = 0.2) -> Any:
    """Poll ``cond`` until truthy, failing with ``what`` (and the worker log) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited ({worker.proc.returncode}) while waiting for "
                                 f"{what}:\n{worker.tail()}")
        time.sleep(interval)
    extra = f"\nworker log:\n{worker.tail()}" if worker else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


@pytest.fixture
def run_worker(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Any]:
    """Start ``driftline worker`` subprocesses (the real command) for this test."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str] | None = None, name: str = "w") -> WorkerProcess:
        port = free_port()
        full = {**os.environ,
                "DRIFTLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "DRIFTLINE_TOPIC_PREFIX": topic_prefix,
                "DRIFTLINE_APP_ID": f"{topic_prefix}-app",
                "DRIFTLINE_DATA_DIR": str(tmp_path / f"data-{name}"),
                "DRIFTLINE_WEB_PORT": str(port),
                "DRIFTLINE_BATCH_WITHIN_S": "0.05",
                **(env or {})}
        log = tmp_path / f"worker-{name}-{len(started)}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "driftline.streams.cli", "worker"],
                                    env=full,
                                    stdout=fh, stderr=subprocess.STDOUT)
        w = WorkerProcess(proc, Settings.from_env(full), log, port)
        started.append(w)
        wait_for(lambda: _port_open(port), 90, "the worker's web port", w)
        return w

    yield start
    for w in started:
        w.stop()


async def _produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]]
                   ) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """Publish with a plain aiokafka producer (not driftline's code)."""
    asyncio.run(_produce(bootstrap, records))


async def _consume(bootstrap: str, topic: str, until: Any, within: float) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not until(out):
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend(msgs)
    finally:
        await consumer.stop()
    return out


def consume(bootstrap: str, topic: str, until: Any, timeout: float = 60.0) -> list[Any]:
    """Read ``topic`` from the beginning with a plain consumer until ``until(records)``."""
    return asyncio.run(_consume(bootstrap, topic, until, timeout))
