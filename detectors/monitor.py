"""Per-model monitor: learns a reference from a warm-up, then watches every signal."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

from river import drift

from detectors.types import Finding, Observation

_SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Tunables of a model's monitor."""

    warmup: int = 500
    adwin_delta: float = 0.002


class ModelMonitor:
    """All detectors of one model.

    >>> m = ModelMonitor("m1", MonitorConfig(warmup=50))
    >>> out = [m.observe(Observation(f"e{i}", float(i), latency_ms=100.0 + i % 7)) for i in range(60)]
    >>> m.phase
    'monitoring'
    """

    def __init__(self, model_id: str, config: MonitorConfig | None = None,
                 model_version: str | None = None) -> None:
        self.model_id = model_id
        self.config = config or MonitorConfig()
        self.model_version = model_version
        self._reset_reference()

    def _reset_reference(self) -> None:
        self._n = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._mean = 0.0
        self._std = 1.0
        self._adwin = drift.ADWIN(delta=self.config.adwin_delta)

    @property
    def phase(self) -> str:
        return "warmup" if self._n < self.config.warmup else "monitoring"

    def deploy(self, model_version: str | None) -> None:
        """Start a fresh reference for a newly deployed version."""
        self.model_version = model_version
        self._reset_reference()

    def observe(self, obs: Observation) -> list[Finding]:
        if obs.model_version is not None and self.model_version is None:
            self.model_version = obs.model_version
        if obs.latency_ms is None:
            return []
        x = math.log1p(obs.latency_ms)
        if self._n < self.config.warmup:
            self._n += 1
            self._sum += x
            self._sumsq += x * x
            if self._n == self.config.warmup:
                self._mean = self._sum / self._n
                var = max(self._sumsq / self._n - self._mean**2, 1e-12)
                self._std = math.sqrt(var)
            return []
        z = (x - self._mean) / self._std
        self._adwin.update(z)
        if not self._adwin.drift_detected:
            return []
        current = self._adwin.estimation
        finding = Finding(
            kind="behavior", signal="latency", detector="adwin",
            baseline=math.expm1(self._mean), current=math.expm1(self._mean + current * self._std),
            severity=abs(current), event_id=obs.event_id, ts=obs.ts,
            model_version=self.model_version,
        )
        self._adwin = drift.ADWIN(delta=self.config.adwin_delta)
        return [finding]

    def observe_many(self, batch: list[Observation]) -> list[Finding]:
        out: list[Finding] = []
        for obs in batch:
            out.extend(self.observe(obs))
        return out

    def observe_label(self, event_id: str, ts: float, correct: bool | None = None,
                      feedback: int | None = None) -> list[Finding]:
        return []

    def snapshot(self) -> bytes:
        return bytes([_SNAPSHOT_VERSION]) + pickle.dumps(self.__dict__)

    @classmethod
    def restore(cls, data: bytes) -> ModelMonitor:
        if not data or data[0] != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported monitor snapshot version {data[:1]!r}")
        self = cls.__new__(cls)
        self.__dict__.update(pickle.loads(data[1:]))
        return self
