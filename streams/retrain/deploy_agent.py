"""The deploy agent: ``deployed`` model updates into the retrain service and the store.

The monitor reads ``driftline.model-updates`` for its baselines and never waits for the
store; recording a deploy (the model's version, its open retrain jobs closed as
succeeded, its open drift group superseded) is this agent's job, in a consumer group of
its own. A store outage therefore holds back only the deploy notices: the handler
retries with the store's backoff and blocks, the offsets are committed after it
returned, and Kafka keeps the backlog until the store is back — while detection goes on.
A crash before the commit hands the notices over again; recording one twice changes
nothing (the version is stored once, a closed job stays closed).

Invalid records are the monitor's to dead-letter (it reads the same ones). A valid
notice the store refuses for good (``StoreError``) is dead-lettered here with reason
``store_rejected``: a retry would fail the same way at every start.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from driftline.streams.config import Settings
from driftline.streams.ingest.records import RecordLike, Reject
from driftline.streams.metrics import Metrics
from driftline.streams.store.errors import StoreError, StoreUnavailable
from driftline.streams.store.feed import StoreFeed

DeployHandler = Callable[[str, str], Awaitable[Any]]


class DeployAgent(StoreFeed):
    """Consumes deploy notices and hands each valid one to ``handler(model_id, version)``."""

    store_log = logging.getLogger("driftline.deploys")

    def __init__(self, settings: Settings, handler: DeployHandler, metrics: Metrics,
                 **kwargs: Any) -> None:
        super().__init__(settings, metrics, group="deploys", topic="model-updates",
                         max_records=500, **kwargs)
        self.handler = handler
        self.recorded = 0

    async def handle(self, records: list[RecordLike]) -> None:
        """Record each valid deploy notice, in order (blocks while the store is down)."""
        updates, _ = self.decoder.model_updates([r.value for r in records],
                                                [r.key for r in records])
        refused: list[Reject] = []
        for rec, upd in zip(records, updates, strict=True):
            if upd is None:
                continue  # the monitor dead-letters it
            try:
                await self.handler(upd.model_id, upd.model_version)
            except StoreUnavailable:
                raise  # the store is down (a retry budget ran out): not the record's fault
            except StoreError as exc:
                refused.append(Reject(rec, "store_rejected", str(exc)))
                continue
            self.recorded += 1
        if refused:
            await self.dead_letter(refused, "the deploy notice ")
