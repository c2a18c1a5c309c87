"""The store: Supabase's schema behind one interface, three ways to reach it.

``open_store(settings)`` picks the backend: ``DATABASE_URL`` → direct Postgres,
``SUPABASE_URL`` + ``SUPABASE_SERVICE_ROLE_KEY`` → Supabase REST, neither → an embedded
PostgreSQL under ``settings.data_dir / "pg"``.
"""

from __future__ import annotations

import random

from driftline.streams.config import Settings
from driftline.streams.metrics import Metrics
from driftline.streams.store.base import RetryPolicy, Store
from driftline.streams.store.errors import StoreError, StoreUnavailable

__all__ = ["RetryPolicy", "Store", "StoreError", "StoreUnavailable", "open_store"]


def open_store(settings: Settings, *, metrics: Metrics | None = None,
               retry: RetryPolicy | None = None, rng: random.Random | None = None) -> Store:
    """The configured store, not yet started (``await store.start()``)."""
    if settings.database_url:
        from driftline.streams.store.postgres import PostgresStore

        return PostgresStore(settings.database_url.get(), retry=retry, rng=rng,
                             metrics=metrics, batch_size=settings.store_batch_size)
    if settings.supabase_url and settings.supabase_key:
        from driftline.streams.store.rest import RestStore

        return RestStore(settings.supabase_url, settings.supabase_key.get(), retry=retry,
                         rng=rng, metrics=metrics, batch_size=settings.store_batch_size)
    if settings.supabase_url:
        raise StoreError("SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY is not")
    from driftline.streams.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.data_dir / "pg", retry=retry, rng=rng, metrics=metrics,
                         batch_size=settings.store_batch_size)
