"""Priming: compile the kernels and compute the detector thresholds of a configuration
before the first real warm-up ends.

Thresholds are computed once per process and configuration; a throwaway monitor fed one
warm-up of every columnar signal's example values (from the catalogue) computes them at
start-up rather than in the middle of a batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from driftline.detectors import catalogue, kernels
from driftline.detectors.monitor import ModelMonitor, MonitorConfig


def prime(config: MonitorConfig) -> None:
    """Compile the threshold kernels; run a throwaway monitor through one warm-up of
    every columnar signal in the catalogue."""
    kernels.compile_all()
    n = config.warmup + 1
    rng = np.random.default_rng(0)
    columns: dict[str, Any] = {s.field: s.example(rng, n) for s in catalogue.SIGNALS if s.columnar}
    ModelMonitor("__calibration__", config).observe_columns(
        [str(i) for i in range(n)], np.arange(n, dtype=np.float64), **columns)
