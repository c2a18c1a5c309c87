"""``driftline worker``: the Faust worker with the store and the retrain loop attached."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from streams.app import Driftline, create_app, ensure_topics
from streams.config import Settings
from streams.metrics import Metrics
from streams.store import Store, open_store

log = logging.getLogger("driftline.worker")


class StoreHooks:
    """The store-facing callbacks of the agents; the store is opened on worker start."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store: Store | None = None
        self._ready = asyncio.Event()
        self.service: Any = None

    async def start(self) -> None:
        self.store = open_store(self.settings, metrics=self.metrics)
        await self.store.start()
        self.service = _DirectRetrain(self.store)
        self._ready.set()
        log.info("store ready: %s", type(self.store).__name__)

    async def stop(self) -> None:
        if self.store is not None:
            await self.store.close()

    async def _store(self) -> Store:
        await self._ready.wait()
        assert self.store is not None
        return self.store

    async def retrain(self, events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
        await self._store()
        requests = await self.service.handle(events)
        return [(r["model_id"].encode(), orjson.dumps(r)) for r in requests]

    async def deployed(self, model_id: str, model_version: str) -> None:
        await self._store()
        await self.service.on_deployed(model_id, model_version)

    async def log_interactions(self, rows: list[dict[str, Any]]) -> None:
        store = await self._store()
        await store.write_interactions(rows)


class _DirectRetrain:
    """One retrain request per new drift event (no policy yet)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from streams.events import action_id

        new = set(await self.store.write_drift_events(events))
        out = []
        for ev in events:
            if ev["drift_id"] not in new:
                continue
            action = {"embedding": "reindex"}.get(ev["kind"], "retrain")
            aid = action_id(ev["drift_id"])
            now = time.time()
            decision = {"decision_id": aid, "model_id": ev["model_id"],
                        "model_version": ev.get("model_version"), "action": action,
                        "outcome": "requested", "reason": f"{ev['kind']} drift",
                        "drift_ids": [ev["drift_id"]], "kinds": [ev["kind"]],
                        "max_severity": ev.get("severity"), "decided_at": now}
            job = {"job_id": aid, "decision_id": aid, "model_id": ev["model_id"],
                   "model_version": ev.get("model_version"), "action": action,
                   "drift_ids": [ev["drift_id"]], "requested_at": now}
            await self.store.write_decisions([decision])
            await self.store.write_jobs([job])
            out.append(job)
        return out

    async def on_deployed(self, model_id: str, model_version: str) -> None:
        await self.store.mark_deployed(model_id, model_version)


def build(settings: Settings, metrics: Metrics | None = None) -> tuple[Driftline, StoreHooks]:
    metrics = metrics or Metrics(max_models=settings.max_model_labels)
    hooks = StoreHooks(settings, metrics)
    dl = create_app(settings, metrics=metrics, retrain_handler=hooks.retrain,
                    interaction_sink=hooks.log_interactions, deploy_handler=hooks.deployed,
                    on_startup=hooks.start)
    return dl, hooks


def run(settings: Settings, loglevel: str = "info") -> None:
    """Create the topics, then run the worker until SIGTERM/SIGINT."""
    from faust.worker import Worker

    asyncio.run(ensure_topics(settings))
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    dl, hooks = build(settings)

    async def _stop(*_: Any, **__: Any) -> None:
        await hooks.stop()

    dl.app.on_before_shutdown.connect(_stop)  # type: ignore[arg-type]
    worker = Worker(dl.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
