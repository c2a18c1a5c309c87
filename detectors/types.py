"""Value types shared by the detectors and their callers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("embedding", "behavior", "accuracy")


class InvalidValue(ValueError):
    """A value the detectors refuse; raised before any state changed."""


@dataclass(slots=True)
class Observation:
    """One validated interaction, as the monitor sees it (all signals optional)."""

    event_id: str
    ts: float
    model_version: str | None = None
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    refusal: bool | None = None
    feedback: int | None = None
    correct: bool | None = None
    embedding: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A detection: which signal of which kind moved, how far, and at which event."""

    kind: str
    signal: str
    detector: str
    baseline: float
    current: float
    severity: float
    event_id: str
    ts: float
    model_version: str | None
    # Where and what (see ``detectors.segments``); empty when there is nothing to add.
    window: int = 0  # values of the signal in the alarm's excursion (the detector's run)
    explanation: Mapping[str, Any] | None = None  # embedding: nearest centroid, exemplar
    segment: tuple[tuple[str, str], ...] = ()  # the segment's (key, value) pairs
    attribution: tuple[Mapping[str, Any], ...] = ()  # model level: the segments that moved


@dataclass(frozen=True, slots=True)
class SignalStats:
    """Live view of one signal, for metrics: the detector closest to an alarm.

    ``statistic`` and ``threshold`` are in log-likelihood-ratio units (the
    detector alarms when statistic >= threshold); ``baseline`` and ``current``
    are in the signal's native units (ms, tokens, rate, share of novel traffic).
    """

    kind: str
    phase: str
    detector: str
    statistic: float
    threshold: float
    baseline: float
    current: float
