"""The Faust app: topics, the monitor / retrain / logger agents, and ``/metrics``.

Read top-down in topic order:
  interactions + feedback + model-updates -> monitor agent -> drift-events | dead-letters
  drift-events -> retrain agent -> store (drift_events, decisions, jobs) + retrain-requests
  interactions -> logger agent -> store (interactions, sampled)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors import MonitorConfig
from streams.config import Settings
from streams.metrics import Metrics
from streams.processor import MonitorProcessor, Record, Reject

log = logging.getLogger("driftline")

# Dead-letter headers, modelled on Kafka Connect's ``__connect.errors.*``.
H_REASON = "driftline.error.reason"
H_MESSAGE = "driftline.error.message"
H_TOPIC = "driftline.source.topic"
H_PARTITION = "driftline.source.partition"
H_OFFSET = "driftline.source.offset"

# A handler for the retrain agent: takes drift events, returns (key, value) messages to
# publish on driftline.retrain-requests. It must be idempotent per drift_id.
RetrainHandler = Callable[[list[dict[str, Any]]], Awaitable[list[tuple[bytes, bytes]]]]
InteractionSink = Callable[[list[dict[str, Any]]], Awaitable[None]]
DeployHandler = Callable[[str, str], Awaitable[None]]


def dead_letter_headers(rej: Reject) -> list[tuple[str, bytes]]:
    return [
        (H_REASON, rej.reason.encode()),
        (H_MESSAGE, rej.message.encode()[:1000]),
        (H_TOPIC, rej.record.topic.encode()),
        (H_PARTITION, str(rej.record.partition).encode()),
        (H_OFFSET, str(rej.record.offset).encode()),
    ]


@dataclass
class Driftline:
    """The assembled worker: the Faust app and the collaborators its agents call."""

    app: faust.App
    settings: Settings
    metrics: Metrics
    processor: MonitorProcessor
    hooks: dict[str, Any] = field(default_factory=dict)


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    monitor_config: MonitorConfig | None = None,
    retrain_handler: RetrainHandler | None = None,
    interaction_sink: InteractionSink | None = None,
    deploy_handler: DeployHandler | None = None,
    retrain_tick: Callable[[], Awaitable[list[tuple[bytes, bytes]]]] | None = None,
    on_startup: Callable[[], Awaitable[list[tuple[bytes, bytes]]]] | None = None,
) -> Driftline:
    """Build the Faust app with every topic and agent of driftline."""
    metrics = metrics or Metrics(max_models=settings.max_model_labels)
    monitor_config = monitor_config or MonitorConfig(warmup=settings.warmup)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        key_serializer="raw",
        value_serializer="raw",
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        producer_linger_ms=5,
        table_cleanup_interval=3600.0,
    )

    def topic(name: str) -> Any:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)

    interactions = settings.topic("interactions")
    feedback = settings.topic("feedback")
    updates = settings.topic("model-updates")
    inputs = app.topic(interactions, feedback, updates, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    drift_topic = topic("drift-events")
    dead_letters = topic("dead-letters")
    retrain_requests = topic("retrain-requests")
    interactions_only = topic("interactions")

    # Per-model monitor state, one changelog record per model per batch. Written with
    # ``data[...]`` + ``send_changelog`` because ``table[k] = v`` is refused inside
    # ``take_events()`` (faust-streaming #497).
    state = app.Table("monitor-state", key_type=bytes, value_type=bytes,
                      partitions=settings.partitions)

    def load_state(model_id: str) -> bytes | None:
        value = state.data.get(model_id.encode())
        return value if isinstance(value, bytes | None) else None

    processor = MonitorProcessor(
        interactions_topic=interactions, feedback_topic=feedback, updates_topic=updates,
        monitor_config=monitor_config, metrics=metrics, load_state=load_state,
        max_payload_bytes=settings.max_payload_bytes,
    )
    dl = Driftline(app, settings, metrics, processor)

    @app.agent(inputs, name="monitor")
    async def monitor(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            t0 = time.perf_counter()
            records = [_record(e) for e in events]
            result = processor.process(records)
            for rej in result.rejects:
                await dead_letters.send(key=rej.record.key, value=rej.record.value,
                                        headers=dead_letter_headers(rej))
                metrics.dead_letters.labels(rej.reason, rej.record.topic).inc()
                log.warning("rejected %s[%d]@%d: %s: %s", rej.record.topic,
                            rej.record.partition, rej.record.offset, rej.reason, rej.message)
            for model_id, ev in result.drift_events:
                await drift_topic.send(key=model_id.encode(), value=orjson.dumps(ev))
                log.info("drift %s %s/%s on %s (severity %.2f)", ev["drift_id"], ev["kind"],
                         ev["signal"], model_id, ev["severity"])
            for model_id, partition in result.dirty.items():
                blob = processor.state_of(model_id)
                key = model_id.encode()
                state.data[key] = blob
                state.send_changelog(partition, key, blob)
            if deploy_handler is not None:
                for model_id, version in result.deployed:
                    await deploy_handler(model_id, version)
            _export_stats(metrics, processor, result.dirty)
            metrics.processing_seconds.observe(time.perf_counter() - t0)

    @app.agent(drift_topic, name="retrain")
    async def retrain(stream: Any) -> None:
        async for events in stream.take_events(100, 0.5):
            batch = []
            for e in events:
                try:
                    batch.append(orjson.loads(e.message.value))
                except orjson.JSONDecodeError:
                    log.error("undecodable drift event at offset %d", e.message.offset)
            if retrain_handler is None or not batch:
                continue
            for key, value in await retrain_handler(batch):
                await retrain_requests.send(key=key, value=value)

    if interaction_sink is not None:
        rate = settings.log_sample_rate

        @app.agent(interactions_only, name="logger")
        async def logger(stream: Any) -> None:
            rng = random.Random(0)
            async for events in stream.take_events(1000, 1.0):
                rows = []
                for e in events:
                    if rate < 1.0 and rng.random() >= rate:
                        continue
                    try:
                        rows.append(orjson.loads(e.message.value))
                    except orjson.JSONDecodeError:
                        continue  # the monitor agent dead-letters it
                if rows:
                    await interaction_sink(rows)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry),
                         headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "models": len(processor.models)})

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        processor.forget_partitions({tp.partition for tp in revoked
                                     if tp.topic in (interactions, feedback, updates)})

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    if on_startup is not None:
        @app.task
        async def _startup() -> None:
            # Recovery may re-issue requests of jobs that were never triggered.
            for key, value in await on_startup():
                await retrain_requests.send(key=key, value=value)

    if retrain_tick is not None:
        @app.timer(1.0)
        async def _retrain_tick() -> None:
            # Grouping windows close on time, not only when the next drift event comes.
            for key, value in await retrain_tick():
                await retrain_requests.send(key=key, value=value)
    return dl


def _record(event: Any) -> Record:
    msg = event.message
    return Record(topic=msg.topic, partition=msg.partition, offset=msg.offset,
                  key=msg.key, value=msg.value, timestamp=msg.timestamp)


def _export_stats(metrics: Metrics, processor: MonitorProcessor, models: Iterable[str]) -> None:
    for model_id in models:
        st = processor.models.get(model_id)
        stats_fn = getattr(st.monitor, "stats", None) if st else None
        if stats_fn is None:
            continue
        for signal, s in stats_fn().items():
            metrics.observe_signal(model_id, signal, statistic=s.statistic,
                                   threshold=s.threshold, baseline=s.baseline, current=s.current)


async def ensure_topics(settings: Settings, extra: Sequence[str] = ()) -> list[str]:
    """Create driftline's topics (idempotent) so the first worker subscribes to all of them."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from streams.config import TOPICS

    names = [settings.topic(t) for t in TOPICS] + list(extra)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([
                    NewTopic(n, num_partitions=settings.partitions,
                             replication_factor=settings.replication) for n in missing])
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if set(names) <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        return missing
    finally:
        await admin.close()
