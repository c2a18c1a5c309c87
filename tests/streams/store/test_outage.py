"""The store goes away mid-run (a real PostgreSQL stopped and restarted): writers wait
and retry, memory stays bounded, offsets never pass unstored drift events, nothing is
lost, and the pipeline resumes by itself."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
from driftline.streams.metrics import Metrics
from driftline.streams.retrain import PolicyConfig, RetrainPolicy, RetrainService
from driftline.streams.store.base import RetryPolicy
from driftline.streams.store.embedded import EmbeddedPostgres
from driftline.streams.store.logger import InteractionLogger
from driftline.streams.store.postgres import PostgresStore
from prometheus_client import CollectorRegistry

from tests.streams.store.events import drift_event, interactions

pytestmark = pytest.mark.postgres

RETRY = RetryPolicy(initial_s=0.02, max_s=0.25, attempts=None, timeout_s=5.0)


async def until(cond: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``cond`` until true, failing at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


@pytest.fixture
async def own_pg(tmp_path) -> AsyncIterator[EmbeddedPostgres]:  # type: ignore[no-untyped-def]
    server = EmbeddedPostgres(tmp_path / "pg")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.close)


async def test_store_stopped_and_restarted_loses_nothing(own_pg: EmbeddedPostgres) -> None:
    metrics = Metrics(CollectorRegistry())
    store = PostgresStore(own_pg.dsn, retry=RETRY, rng=random.Random(2), metrics=metrics)
    await store.start()
    svc = RetrainService(store, RetrainPolicy(PolicyConfig(group_window_s=0, cooldown_s=0)))
    log = InteractionLogger(store, batch_size=50, rng=random.Random(0))
    errors = lambda: sum(  # noqa: E731
        metrics.registry.get_sample_value("driftline_store_errors_total", {"table": t}) or 0
        for t in ("drift_events", "interactions", "retrain_decisions", "retrain_jobs"))

    committed = -1  # the consumer's committed offset: only after handle() returned
    requests: list[dict] = []
    max_buffer = 0

    async def consume() -> None:
        nonlocal committed, max_buffer
        for offset in range(40):
            requests.extend(await svc.handle(
                [drift_event(offset, model_id=f"m{offset % 4}")], now=float(offset)))
            await log.add(interactions(20, dim=64, start=offset * 20))
            max_buffer = max(max_buffer, log.buffered)
            committed = offset

    task = asyncio.create_task(consume())
    await until(lambda: committed >= 10)
    await asyncio.to_thread(own_pg.stop)
    assert not own_pg.is_running()
    await until(lambda: errors() >= 3)          # writers are retrying against nothing
    frozen = committed
    await until(lambda: errors() >= 6)
    assert committed == frozen and not task.done()  # no progress, no commit while down
    await asyncio.to_thread(own_pg.start)
    await asyncio.wait_for(task, 60)
    await log.flush()
    await svc.drain()

    assert committed == 39 and max_buffer <= log.max_buffer
    counts = await store.counts()
    assert counts["drift_events"] == 40
    assert counts["retrain_decisions"] == 40 and counts["retrain_jobs"] == 40
    assert counts["interactions"] == 800
    assert len(requests) == 40 and len({r["action_id"] for r in requests}) == 40
    assert {j["state"] for j in await store.jobs()} == {"running"}
    # a replay of everything after recovery changes nothing
    for offset in range(40):
        assert await svc.handle([drift_event(offset, model_id=f"m{offset % 4}")],
                                now=100.0 + offset) == []
    assert (await store.counts())["retrain_jobs"] == 40
    await store.close()


async def test_start_waits_for_the_store(own_pg: EmbeddedPostgres) -> None:
    await asyncio.to_thread(own_pg.stop)
    store = PostgresStore(own_pg.dsn, retry=RETRY, rng=random.Random(3))
    starting = asyncio.create_task(store.start())
    restart = asyncio.create_task(asyncio.to_thread(own_pg.start))
    await asyncio.wait_for(asyncio.gather(starting, restart), 60)
    assert (await store.counts())["drift_events"] == 0
    await store.close()


async def test_logger_samples_deterministically(pg_store: PostgresStore) -> None:
    store = pg_store
    log = InteractionLogger(store, sample_rate=0.25, batch_size=100, rng=random.Random(42))
    await log.add(interactions(1000, dim=8))
    await log.flush()
    ref = random.Random(42)
    expected = sum(ref.random() < 0.25 for _ in range(1000))
    assert log.sampled == expected == (await store.counts())["interactions"]
    with pytest.raises(ValueError, match=r"sample_rate must be within \[0, 1\]"):
        InteractionLogger(store, sample_rate=1.5)
