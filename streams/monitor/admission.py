"""How fast models this worker has never seen may join it.

Model ids come from producers. Each new one costs a monitor in memory, a state record at
every checkpoint until it goes quiet and a series of its own; a producer that writes a
fresh id per record (a bug, or an attack) would otherwise take the worker's memory and
its rate with it. Known models (held, restored or evicted) are always admitted; new ones
take a token of a bucket that refills at ``per_s`` up to ``burst``. A record of a model
refused here goes to the dead-letter topic (``model_not_admitted``), so a legitimate
fleet that arrived faster than the limit can be replayed from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Admission"]


class Admission:
    """A token bucket for new models: ``per_s`` a second, at most ``burst`` at once;
    ``per_s`` 0 admits every model."""

    def __init__(self, per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_s < 0 or burst < 1:
            raise ValueError("admission needs per_s >= 0 and burst >= 1")
        self.per_s = per_s
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self.admitted = 0
        self.refused = 0

    def admit(self) -> bool:
        """Take a token for one new model, if there is one."""
        if self.per_s == 0:
            self.admitted += 1
            return True
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.admitted += 1
            return True
        self.refused += 1
        return False
