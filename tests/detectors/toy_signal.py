"""A toy signal, added the way the catalogue says a signal is added: this one module (the
signal's catalogue entry and its detector factory) and one :func:`catalogue.register`
call. It watches ``input_tokens``, a field of the contract that no built-in signal reads,
as the prompt length, with the scalar detectors (mean, spread and shape shifts)."""

from __future__ import annotations

import numpy as np
from driftline.detectors import catalogue
from driftline.detectors.monitor import MonitorConfig
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.season import SeasonalProfile
from driftline.detectors.signal import Signal


def _build(c: MonitorConfig, fa: float, season: SeasonalProfile | None) -> Signal:
    return ScalarSignal("input_length", fa, c.warmup, c.mean_shift, c.spread_ratio,
                        c.max_ar_order if c.dependence == "ar" else 0, c.dependence == "ar",
                        season, c.relearn)


INPUT_LENGTH = catalogue.SignalSpec(
    "input_length", "input_tokens", "behavior", "tokens", catalogue.NONNEG, _build,
    lambda rng, n: np.round(rng.lognormal(6.0, 0.4, n)))
