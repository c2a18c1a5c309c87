"""Interaction logging: sample, batch, write — with a bounded buffer.

The logger never holds more than ``max_buffer`` rows: when the store is down the write
retries and :meth:`InteractionLogger.add` does not return, so the agent stops reading
Kafka (backpressure) instead of growing memory, and no offset moves past rows not stored.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from driftline.streams.store.base import Store


class InteractionLogger:
    """Keeps a ``sample_rate`` share of interactions and stores them in batches."""

    def __init__(self, store: Store, *, sample_rate: float = 1.0, batch_size: int = 500,
                 max_delay_s: float = 1.0, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("sample_rate must be within [0, 1]")
        self.store = store
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.max_buffer = batch_size
        self.max_delay_s = max_delay_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._buffer: list[dict[str, Any]] = []
        self._oldest: float | None = None
        self.seen = 0
        self.sampled = 0
        self.stored = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def keep(self, interaction: dict[str, Any]) -> bool:
        """The sampling decision (seeded by the injected rng)."""
        return self.sample_rate >= 1.0 or self._rng.random() < self.sample_rate

    async def add(self, interactions: Iterable[dict[str, Any]]) -> int:
        """Sample and buffer; write a batch whenever the buffer is full or too old.
        Returns once everything passed in is either dropped by sampling or stored/
        buffered within the bound."""
        for it in interactions:
            self.seen += 1
            if not self.keep(it):
                continue
            self.sampled += 1
            if not self._buffer:
                self._oldest = self._clock()
            self._buffer.append(it)
            if len(self._buffer) >= self.max_buffer:
                await self.flush()
        if self._oldest is not None and self._clock() - self._oldest >= self.max_delay_s:
            await self.flush()
        return self.buffered

    async def flush(self) -> int:
        """Write what is buffered (retrying while the store is down)."""
        if not self._buffer:
            return 0
        batch = self._buffer
        new = await self.store.write_interactions(batch)
        # only now forget the rows: a failure above leaves them buffered
        self._buffer = []
        self._oldest = None
        self.stored += len(batch)
        return new
