"""The Faust app: topics, the monitor / retrain / logger agents, and ``/metrics``.

Read top-down in topic order:
  interactions + feedback + model-updates -> monitor agent -> drift-events | dead-letters
                                                              (+ monitor-state, compacted)
  drift-events -> retrain agent -> store (drift_events, decisions, jobs) + retrain-requests
  interactions -> logger agent -> store (interactions, sampled)
  model-updates -> deploy agent -> store (model versions; open jobs closed)

The monitor and logger agents take their topics in batches straight from aiokafka
(see ``driftline.streams.ingest.consumer`` for why); the retrain agent is a Faust
stream, and the worker, its web server (``/metrics``), timers and lifecycle are Faust's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from driftline.detectors import MonitorConfig, catalogue
from driftline.streams import kafka_clients
from driftline.streams.config import Settings
from driftline.streams.ingest.dead_letters import dead_letter_record
from driftline.streams.ingest.decoder import BatchDecoder
from driftline.streams.ingest.records import Record, Reject, count_rejects
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.admission import Admission
from driftline.streams.monitor.agent import STATE_RECORD_MAX_BYTES, MonitorAgent
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.retrain.deploy_agent import DeployAgent
from driftline.streams.store.errors import StoreError, StoreUnavailable
from driftline.streams.store.logger_agent import LoggerAgent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("driftline")

# A handler for the retrain agent: takes drift events, returns (key, value) messages to
# publish on driftline.retrain-requests. It must be idempotent per drift_id.
RetrainHandler = Callable[[list[dict[str, Any]]], Awaitable[list[tuple[bytes, bytes]]]]
InteractionSink = Callable[[list[dict[str, Any]]], Awaitable[None]]
DeployHandler = Callable[[str, str], Awaitable[None]]


@dataclass
class Driftline:
    """The assembled worker: the Faust app and the agents it hosts."""

    app: faust.App
    settings: Settings
    metrics: Metrics
    processor: MonitorProcessor
    monitor: MonitorAgent
    logger: LoggerAgent | None
    deploys: DeployAgent | None = None


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
    metrics = metrics or Metrics(max_models=settings.max_model_labels,
                                 max_segments=settings.max_segment_labels)
    monitor_config = monitor_config or settings.monitor_config()
    metrics.set_budget(monitor_config.target_false_alarm_rate, len(catalogue.SIGNALS))
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=kafka_clients.faust_credentials(settings),  # TLS / SASL
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
        # After a kill -9 the restarted worker's group waits out the dead member's session
        # (Faust's default is 60 s) before the monitor agent even starts.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        stream_wait_empty=False,
        producer_linger_ms=5,
        table_cleanup_interval=3600.0,
    )

    def topic(name: str) -> Any:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)

    drift_topic = topic("drift-events")
    retrain_requests = topic("retrain-requests")

    processor = MonitorProcessor(
        interactions_topic=settings.topic("interactions"),
        feedback_topic=settings.topic("feedback"),
        updates_topic=settings.topic("model-updates"),
        monitor_config=monitor_config, metrics=metrics,
        max_payload_bytes=settings.max_payload_bytes, min_run=settings.run_min,
        max_delay_s=min(settings.run_hold_s, settings.commit_interval_s),
        apart_bytes=settings.state_apart_bytes, segments=settings.segment_plan(),
        max_models=settings.max_models,
        admission=(Admission(settings.model_admission_per_s, settings.model_admission_burst)
                   if settings.model_admission_per_s else None),
    )
    # The monitor never waits for the store: deploy notices reach it through the deploy
    # agent's own consumer group (a store outage holds back only that group).
    monitor = MonitorAgent(settings, processor, metrics)
    app.service(monitor)  # type: ignore[arg-type]  # started and stopped with the app
    deploys = None
    if deploy_handler is not None:
        deploys = DeployAgent(settings, deploy_handler, metrics)
        app.service(deploys)  # type: ignore[arg-type]
    logger = None
    if interaction_sink is not None and settings.log_sample_rate > 0:
        logger = LoggerAgent(settings, interaction_sink, metrics)
        app.service(logger)  # type: ignore[arg-type]
    dl = Driftline(app, settings, metrics, processor, monitor, logger, deploys)

    dead_letters = topic("dead-letters")
    decoder = BatchDecoder(settings.max_payload_bytes)

    async def dead_letter(rejects: list[Reject]) -> None:
        for rej in rejects:
            log.error("dead-lettering drift event %s[%d]@%d: %s: %s", rej.record.topic,
                      rej.record.partition, rej.record.offset, rej.reason, rej.message)
            key, value, headers = dead_letter_record(rej)
            await dead_letters.send(key=key, value=value, headers=headers)
        count_rejects(metrics.dead_letters, rejects)

    async def retrain_each(docs: list[dict[str, Any]], recs: list[Record]
                           ) -> list[tuple[bytes, bytes]]:
        """The handler over a batch; if the store refuses it for good, event by event,
        each refused event a dead letter (a retry would fail the same way, forever)."""
        assert retrain_handler is not None
        try:
            return await retrain_handler(docs)
        except StoreUnavailable:
            raise
        except StoreError:
            if len(docs) == 1:
                raise
        out: list[tuple[bytes, bytes]] = []
        for doc, rec in zip(docs, recs, strict=True):
            try:
                out += await retrain_handler([doc])
            except StoreUnavailable:
                raise
            except StoreError as exc:
                await dead_letter([Reject(rec, "store_rejected", str(exc))])
        return out

    @app.agent(drift_topic, name="retrain")
    async def retrain(stream: Any) -> None:
        async for events in stream.take_events(100, 0.5):
            recs = [Record(e.message.topic, e.message.partition, e.message.offset,
                           e.message.key, e.message.value) for e in events]
            parsed, rejects = decoder.drift_events([r.value for r in recs],
                                                   [r.key for r in recs])
            if rejects:
                await dead_letter([Reject(recs[r.position], r.reason, r.message)
                                   for r in rejects])
            ok = [r for r, p in zip(recs, parsed, strict=True) if p is not None]
            if retrain_handler is None or not ok:
                continue
            docs = [orjson.loads(r.value) for r in ok]  # type: ignore[arg-type]
            try:
                requests = await retrain_each(docs, ok)
            except StoreError as exc:
                if isinstance(exc, StoreUnavailable):
                    raise
                await dead_letter([Reject(ok[0], "store_rejected", str(exc))])
                continue
            for key, value in requests:
                await retrain_requests.send(key=key, value=value)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry),
                         headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def health(web: Any, request: Any) -> Any:
        # Cheap to poll (unlike /metrics, which renders every series).
        doc = health_of(dl)
        return web.json(doc, status=200 if doc["status"] == "ok" else 503)

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


def health_of(dl: Driftline) -> dict[str, Any]:
    """What ``/healthz`` says: ``ok``, or ``failed`` with the reason once a checkpoint or a
    state restore failed (the worker is stopping: nothing past that point is committed)."""
    monitor = dl.monitor
    failed = monitor.consumer.failed or monitor.crash_reason
    doc: dict[str, Any] = {"status": "failed" if failed else "ok",
                           "models": len(dl.processor.models),
                           "interactions_processed": dl.processor.processed,
                           "records_consumed": monitor.consumer.records}
    if failed:
        doc["reason"] = f"{type(failed).__name__}: {failed}"
    return doc


async def ensure_topics(settings: Settings, extra: Sequence[str] = ()) -> list[str]:
    """Create driftline's topics (idempotent) so the first worker subscribes to all of them.

    The worker's first contact with the broker: a connection, authentication or
    authorization failure raises ``kafka_clients.KafkaAccessError`` (one line, no secret).
    """
    from aiokafka.admin import NewTopic
    from driftline.streams.config import TOPICS

    names = [settings.topic(t) for t in TOPICS] + list(extra)
    configs = {settings.topic("monitor-state"): {
        "cleanup.policy": "compact", "max.message.bytes": str(STATE_RECORD_MAX_BYTES)}}
    admin = kafka_clients.admin(settings)
    await kafka_clients.start(admin, settings)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            resp = await admin.create_topics([
                NewTopic(n, num_partitions=settings.partitions,
                         replication_factor=settings.replication,
                         topic_configs=configs.get(n, {})) for n in missing])
            _check_created(resp)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if set(names) <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        return missing
    finally:
        await admin.close()


def _check_created(response: Any) -> None:
    """Raise on a topic the broker refused to create (one that exists already is fine)."""
    from aiokafka import errors

    denied, failed = [], []
    for name, code, *message in response.topic_errors:
        error = errors.for_code(code)
        if error in (errors.NoError, errors.TopicAlreadyExistsError):
            continue
        if error in (errors.TopicAuthorizationFailedError,
                     errors.ClusterAuthorizationFailedError):
            denied.append(name)
        else:
            failed.append(f"{name}: {error.__name__}"
                          + (f" ({message[0]})" if message and message[0] else ""))
    if denied:
        raise kafka_clients.KafkaAccessError(
            f"not authorized to create the topics {', '.join(sorted(denied))}: grant the "
            "worker's principal Create on them, or create them as an admin "
            "(docs/security.md)")
    if failed:
        raise RuntimeError(f"the broker refused to create topics: {'; '.join(failed)}")
