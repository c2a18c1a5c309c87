"""The parts of ``driftline seed`` that need no broker: a seed never replaces a worker's
state, the partition it goes to, and what it refuses (the run on the real broker and
Postgres: test_seed_kafka.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner
from driftline.detectors import ModelMonitor, MonitorConfig
from driftline.streams.config import Settings
from driftline.streams.monitor import seed as seeding
from driftline.streams.monitor.state_codec import (
    LatestStates,
    ModelState,
    checkpoint_records,
    decode_state,
    is_seed,
)
from driftline.streams.store import StoreError
from driftline.streams.store.rest import RestStore

DAY = 86_400.0


def _records(st: ModelState) -> list[tuple[bytes, bytes | None, int]]:
    return [(k, v, st.partition) for k, v in checkpoint_records(st, "m")]


def _worker_state(partition: int, n: int) -> ModelState:
    mon = ModelMonitor("m", MonitorConfig(warmup=100))
    rng = np.random.default_rng(n)
    ts = np.arange(n, dtype=np.float64)
    mon.observe_columns([f"e{i}" for i in range(n)], ts, latency_ms=rng.lognormal(6, 0.3, n))
    return ModelState(mon, {"interactions": n - 1}, partition)


def _seed_state(partition: int) -> ModelState:
    mon = ModelMonitor("m", MonitorConfig(warmup=100))
    ts = np.arange(0.0, 3 * DAY, 600.0)
    mon.learn_history(ts, latency_ms=np.exp(6 + 0.4 * np.sin(2 * np.pi * ts / DAY)))
    return ModelState(mon, {}, partition, seeded=True)


def _latest(*states: ModelState | None) -> ModelState | None:
    records: list[tuple[bytes, bytes | None, int]] = []
    for st in states:
        records += ([(b"m", None, 0)] if st is None else _records(st))
    got = LatestStates.of(records).get("m")
    return None if got is None else decode_state(got[1], got[0])


def test_a_seed_is_marked_and_never_replaces_a_workers_state() -> None:
    worker, seed = _worker_state(partition=0, n=50), _seed_state(partition=1)
    assert is_seed(_records(seed)[-1][1] or b"") and not is_seed(_records(worker)[-1][1] or b"")
    # Read after the worker's (another partition, read later): the worker's state stays.
    for order in ((worker, seed), (seed, worker)):
        st = _latest(*order)
        assert st is not None and st.offsets == {"interactions": 49} and st.partition == 0
    # A seed after a seed, or after the worker's state was deleted, counts.
    newer = _seed_state(partition=2)
    st = _latest(seed, newer)
    assert st is not None and st.partition == 2
    st = _latest(worker, None, seed)
    assert st is not None and st.partition == 1 and st.offsets == {}
    assert st.monitor.seasons["latency"].known == 24  # type: ignore[union-attr]
    # What a worker restores from a seed is its own from then on: no longer a seed.
    assert not st.seeded and not is_seed(_records(st)[-1][1] or b"")


@pytest.mark.parametrize("key", ["chat", "m1", "tenant/model-7", "é", "x" * 300])
@pytest.mark.parametrize("partitions", [1, 4, 12])
def test_the_seed_goes_to_the_partition_the_default_partitioner_gives(
        key: str, partitions: int) -> None:
    parts = list(range(partitions))
    assert seeding.partition_of(key, partitions) == DefaultPartitioner()(key.encode(), parts,
                                                                          parts)


def test_without_a_seasonal_profile_there_is_nothing_to_seed() -> None:
    settings = Settings.from_env({"DRIFTLINE_SEASON_PERIOD_S": "0"})
    with pytest.raises(seeding.SeedRefused, match="no seasonal profile"):
        asyncio.run(seeding.seed(settings, RestStore("http://127.0.0.1:9", "k")))


def test_the_rest_store_says_history_needs_sql() -> None:
    store = RestStore("http://127.0.0.1:9", "secret-key")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for call in (store.history_models(when, when), store.history("m", when, when)):
        with pytest.raises(StoreError, match="DATABASE_URL") as info:
            asyncio.run(call)
        assert "secret-key" not in str(info.value)
