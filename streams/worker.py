"""``driftline worker``: the Faust worker with the store and the retrain loop attached."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from driftline.streams.app import Driftline, create_app, ensure_topics
from driftline.streams.config import Settings
from driftline.streams.metrics import Metrics
from driftline.streams.retrain import RetrainService
from driftline.streams.store import Store, open_store

log = logging.getLogger("driftline.worker")


def _messages(requests: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """Retrain requests as Kafka (key, value) pairs, keyed by model_id."""
    return [(r["model_id"].encode(), orjson.dumps(r)) for r in requests]


class StoreHooks:
    """The store-facing callbacks of the agents; the store is opened on worker start."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store: Store | None = None
        self._ready = asyncio.Event()
        self.service: RetrainService | None = None

    async def start(self) -> list[tuple[bytes, bytes]]:
        self.store = open_store(self.settings, metrics=self.metrics)
        await self.store.start()
        self.service = RetrainService.from_settings(self.settings, self.store,
                                                    metrics=self.metrics)
        requests = await self.service.recover()
        self._ready.set()
        log.info("store ready: %s", type(self.store).__name__)
        return _messages(requests)

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.close()
        if self.store is not None:
            await self.store.close()

    async def _service(self) -> RetrainService:
        """The retrain service on the started store; waits for startup (agents may run
        before it finishes)."""
        await self._ready.wait()
        assert self.service is not None
        return self.service

    async def retrain(self, events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
        return _messages(await (await self._service()).handle(events))

    async def tick(self) -> list[tuple[bytes, bytes]]:
        if not self._ready.is_set():
            return []
        return _messages(await (await self._service()).tick())

    async def deployed(self, model_id: str, model_version: str) -> None:
        await (await self._service()).on_deployed(model_id, model_version)

    async def log_interactions(self, rows: list[dict[str, Any]]) -> None:
        await (await self._service()).store.write_interactions(rows)


def build(settings: Settings, metrics: Metrics | None = None) -> tuple[Driftline, StoreHooks]:
    metrics = metrics or Metrics(max_models=settings.max_model_labels,
                                 max_segments=settings.max_segment_labels)
    hooks = StoreHooks(settings, metrics)
    dl = create_app(settings, metrics=metrics, retrain_handler=hooks.retrain,
                    interaction_sink=hooks.log_interactions, deploy_handler=hooks.deployed,
                    retrain_tick=hooks.tick, on_startup=hooks.start)
    return dl, hooks


def _worker_class() -> type:
    from faust.worker import Worker

    class QuietWorker(Worker):  # type: ignore[misc]
        """Faust's worker without its start-up spinner.

        At ``--loglevel warning`` or above, faust spins a terminal spinner on every log
        record: it sets the root logger to DEBUG and adds a handler at DEBUG, for the
        life of the process. Every ``log.debug`` of aiokafka (one per message sent, and
        several per fetch) then builds a LogRecord and looks up its caller, only for
        the console handler to drop it -- a cost comparable to the send itself.
        """

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            self.spinner = None

    return QuietWorker


def run(settings: Settings, loglevel: str = "info") -> None:
    """Create the topics, then run the worker until SIGTERM/SIGINT."""
    Worker = _worker_class()

    asyncio.run(ensure_topics(settings))
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    dl, hooks = build(settings)

    async def _stop(*_: Any, **__: Any) -> None:
        await hooks.stop()

    dl.app.on_before_shutdown.connect(_stop)  # type: ignore[arg-type]
    worker = Worker(dl.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
