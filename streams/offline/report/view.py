"""What the renderers read of a report: its traces, its scores and the questions they ask
of it (:class:`ReportView`). :class:`~driftline.streams.offline.report.model.Report` is the
one implementation; ``scene``, ``html`` and ``png`` draw any ``ReportView``, so the report
can offer its own renderings (``to_html``, ``_repr_html_``, ``write``) without the renderers
importing it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Point = tuple[float, float]


@dataclass(frozen=True)
class Segment:
    """One reference of a signal: its band, in force from ``start`` to ``end``."""

    start: float
    end: float
    center: float
    low: float
    high: float


@dataclass
class SignalTrace:
    """One chart: a signal's values, its references and its warm-ups."""

    points: list[Point] = field(default_factory=list)
    baselines: list[Segment] = field(default_factory=list)
    warmups: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Score:
    """An injected drift against the first detection of the same signal (or kind) after
    its start; ``detection`` is None when it was missed."""

    injected: Mapping[str, Any]
    start: float
    detection: Mapping[str, Any] | None
    detected_x: float | None

    @property
    def delay(self) -> float | None:
        return None if self.detected_x is None else self.detected_x - self.start


class ReportView(Protocol):
    """A report as the renderers read it."""

    signals: dict[str, dict[str, SignalTrace]]
    detections: list[dict[str, Any]]
    injected: list[dict[str, Any]] | None
    title: str

    @property
    def timed(self) -> bool: ...

    def models(self) -> list[str]: ...

    def detections_of(self, model_id: str, signal: str | None = None
                      ) -> list[dict[str, Any]]: ...

    def injected_of(self, model_id: str, signal: str | None = None
                    ) -> list[dict[str, Any]]: ...

    def kind(self, model_id: str, signal: str) -> str: ...

    def x_of(self, d: Mapping[str, Any]) -> float | None: ...

    def x_max(self, model_id: str) -> float: ...

    def span(self, t: Mapping[str, Any], x_max: float) -> tuple[float, float] | None: ...

    def scores(self, model_id: str) -> list[Score]: ...

    def false_alarms(self, model_id: str) -> list[dict[str, Any]]: ...
