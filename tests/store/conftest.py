"""Store fixtures: a clean schema per test on the session's real PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from streams.store.base import RetryPolicy
from streams.store.postgres import PostgresStore
from tests.fixtures_postgres import *  # noqa: F403
from tests.fixtures_postgres import truncate_all

FAST_RETRY = RetryPolicy(initial_s=0.02, max_s=0.2, attempts=None, timeout_s=10.0)


@pytest.fixture
async def clean_dsn(postgres_dsn: str) -> str:
    await truncate_all(postgres_dsn)
    return postgres_dsn


@pytest.fixture
async def pg_store(clean_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(clean_dsn, retry=FAST_RETRY, rng=random.Random(7))
    await store.start()
    try:
        yield store
    finally:
        await store.close()
