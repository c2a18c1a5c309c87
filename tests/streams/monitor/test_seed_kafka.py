"""``driftline seed`` on the real broker and the real Postgres: a model's daily cycle
learned from the store's history before the worker first sees it.

Three days of a model's stored interactions (latency and output length follow the time of
day) are seeded; the live interactions already on the topic start where the seed's
history must end (nothing learned twice); a model with a state is left alone; a running
worker makes the seed refuse; and the worker, restoring the seed, knows the whole cycle
after an hour of live traffic instead of after two days.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import numpy as np
import orjson
import pytest
from driftline.streams.config import Settings
from driftline.streams.monitor import seed as seeding
from driftline.streams.monitor.state_codec import LatestStates, decode_state, is_seed
from driftline.streams.store.postgres import PostgresStore

from tests.fixtures_kafka import produce, wait_for
from tests.fixtures_postgres import truncate_all
from tests.streams.monitor.test_durability_kafka import (
    _drained,
    _env,
    _partition_of,
    _read_all,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

DAY = 86_400.0
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC
STEP = 120.0  # one stored interaction every two minutes: 30 per hour-bin and day
CUT = T0 + 3 * DAY  # where the live interactions on the topic begin


def _cycle(ts: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latency and output tokens that follow the time of day (+-0.4 in log units)."""
    rng = np.random.default_rng(seed)
    day = 0.4 * np.sin(2 * np.pi * (ts % DAY) / DAY)
    latency = np.exp(6.0 + day + rng.normal(0, 0.2, ts.size))
    tokens = np.round(np.exp(5.0 + day + rng.normal(0, 0.3, ts.size)))
    return latency, tokens


def _rows(model: str, start: float, end: float, seed: int) -> list[dict[str, Any]]:
    ts = np.arange(start, end, STEP)
    latency, tokens = _cycle(ts, seed)
    return [{"event_id": f"{model}-{int(t)}", "model_id": model, "ts": float(t),
             "latency_ms": float(lat), "output_tokens": int(tok)}
            for t, lat, tok in zip(ts, latency, tokens, strict=True)]


def _settings(bootstrap: str, prefix: str, dsn: str) -> Settings:
    return Settings.from_env({"DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
                              "DRIFTLINE_TOPIC_PREFIX": prefix,
                              "DRIFTLINE_APP_ID": f"{prefix}-app", "DATABASE_URL": dsn})


async def _store_history(dsn: str, rows: list[dict[str, Any]]) -> None:
    store = PostgresStore(dsn)
    await store.start()
    try:
        await store.write_interactions(rows)
    finally:
        await store.close()


async def _seed(settings: Settings, **kw: Any) -> seeding.SeedReport:
    store = PostgresStore(settings.database_url.get())  # type: ignore[union-attr]
    await store.start()
    try:
        return await seeding.seed(settings, store, **kw)
    finally:
        await store.close()


def _state_records(bootstrap: str, prefix: str) -> list[tuple[bytes, bytes | None, int]]:
    return [(m.key, m.value, m.partition)
            for m in _read_all(bootstrap, f"{prefix}.monitor-state")]


def test_seed_learns_the_cycle_from_the_store_and_the_worker_starts_with_it(
        kafka_bootstrap: str, topic_prefix: str, postgres_dsn: str, run_worker: Any) -> None:
    asyncio.run(truncate_all(postgres_dsn))
    model, other = f"{topic_prefix}-cyc", f"{topic_prefix}-other"
    settings = _settings(kafka_bootstrap, topic_prefix, postgres_dsn)
    # Three days of history, and an hour past the cut that the topic holds as well: the
    # seed must stop at the cut (the worker reads that hour itself).
    history = _rows(model, T0, CUT + 3600, seed=1)
    live = [r for r in history if r["ts"] >= CUT]
    asyncio.run(_store_history(postgres_dsn, history + _rows(other, T0, CUT, seed=2)))
    produce(kafka_bootstrap, [(f"{topic_prefix}.interactions", model.encode(),
                               orjson.dumps(r)) for r in live])

    # `other` first, alone (--model): it then has a state, and the full run skips it.
    first = asyncio.run(_seed(settings, models=[other]))
    assert [s.model_id for s in first.seeded] == [other]
    report = asyncio.run(_seed(settings))
    assert report.cut == CUT  # the earliest event time on the interactions topic
    assert report.since == CUT - 3 * DAY
    assert report.skipped == [other] and report.empty == []
    [seeded] = report.seeded
    stored_before_cut = sum(1 for r in history if r["ts"] < CUT)
    assert (seeded.model_id, seeded.rows) == (model, stored_before_cut)
    assert seeded.partition == _partition_of(model)
    assert seeded.known == {"latency": 24, "output_length": 24}

    records = _state_records(kafka_bootstrap, topic_prefix)
    mine = [(v, part) for k, v, part in records if k == model.encode()]
    [(value, part)] = mine
    assert value is not None and is_seed(value) and part == seeded.partition
    st = decode_state(LatestStates.of(records)[model][1], part)
    profile = st.monitor.seasons["latency"]  # type: ignore[union-attr]
    assert profile.known == 24 and profile.weight() > 0.5
    assert st.monitor.phase == "warmup" and st.offsets == {}
    # The profile is the cycle's: the bin at 06:00 sits ~0.4 above the one at 18:00.
    table = profile.table()
    assert 0.6 < table[6] - table[18] < 1.0

    # Again, from the command line: every model has a state now; nothing is written.
    env = {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "DRIFTLINE_TOPIC_PREFIX": topic_prefix, "DRIFTLINE_APP_ID": f"{topic_prefix}-app",
           "DATABASE_URL": postgres_dsn}
    out = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "seed"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"skipped {model}: it has a state already" in out.stdout
    assert "0 model(s) seeded, 2 skipped" in out.stdout
    assert len(_state_records(kafka_bootstrap, topic_prefix)) == len(records)

    out = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "seed", "--dry-run",
                          "--model", "nobody"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipped nobody: no stored interactions in the history" in out.stdout

    # A running worker: the seed refuses (exit 8), and the worker starts from the seed.
    worker = run_worker(_env(postgres_dsn, warmup=1000))
    wait_for(lambda: _drained(kafka_bootstrap, topic_prefix), 90, "the live hour", worker)
    out = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "seed", "--model",
                          model], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 8, (out.stdout, out.stderr)
    assert "stop the workers first" in out.stderr
    wait_for(lambda: not is_seed(_latest(kafka_bootstrap, topic_prefix, model)), 60,
             "the worker's checkpoint of the seeded model", worker)
    latest = _latest(kafka_bootstrap, topic_prefix, model)
    st = decode_state(latest, seeded.partition)
    assert st.monitor.seasons["latency"].known == 24  # type: ignore[union-attr]
    assert st.monitor.signals["latency"].seen == len(live)  # type: ignore[union-attr]


def _latest(bootstrap: str, prefix: str, model: str) -> bytes:
    return LatestStates.of(_state_records(bootstrap, prefix))[model][1]
