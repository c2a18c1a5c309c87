"""One chart as drawing primitives in pixels, so that the HTML (SVG) and the PNG show the
same picture: laid out once here, serialised by ``html`` and rasterised by ``png``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from driftline.streams.offline.report.view import Point, ReportView, SignalTrace

WIDTH, HEIGHT = 900, 210
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 18, 28
MAX_POINTS = 1200

# Colours, shared with the legend.
SIGNAL = "#2f6fdf"
BAND = "#cfe8d6"
BASELINE = "#1b6e3a"
WARMUP = "#e6e8ee"
DETECTION = "#d62728"
INJECTED = "#f4b56a"
INJECTED_LINE = "#a05a00"
INJECTED_BAR = 7
PLOT_BG = "#fafbfd"
GRID = "#d8dde6"
TEXT = "#5b6576"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    cls: str = ""
    opacity: float = 1.0
    stroke: str | None = None
    title: str = ""


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str
    width: float = 1.0
    dash: tuple[int, int] | None = None
    cls: str = ""


@dataclass(frozen=True)
class Polyline:
    points: tuple[Point, ...]
    stroke: str
    width: float = 1.0
    cls: str = ""


@dataclass(frozen=True)
class Polygon:
    points: tuple[Point, ...]
    fill: str


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline
    text: str
    size: int = 11
    fill: str = TEXT
    anchor: str = "start"  # start | middle | end


@dataclass(frozen=True)
class Group:
    """Primitives that belong together (a detection marker), with a tooltip."""

    items: tuple[Rect | Line | Polygon, ...]
    cls: str
    title: str = ""


Item = Rect | Line | Polyline | Polygon | Text | Group


def fmt(v: float) -> str:
    a = abs(v)
    if not math.isfinite(v):
        return "–"
    if a >= 1e6 or (0 < a < 1e-3):
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def fmt_tick(v: float, step: float) -> str:
    """A tick label with just enough decimals to tell neighbouring ticks apart."""
    if step <= 0 or abs(v) >= 1e6:
        return fmt(v)
    decimals = max(0, min(6, 1 - math.floor(math.log10(step))))
    return f"{v:,.{decimals}f}"


def fmt_x(x: float, timed: bool) -> str:
    if timed:
        return datetime.fromtimestamp(x, UTC).strftime("%H:%M:%S")
    return f"{x:,.0f}"


def downsample(pts: Sequence[Point]) -> list[Point]:
    """At most ~MAX_POINTS points, keeping each bucket's min and max (the envelope)."""
    if len(pts) <= MAX_POINTS:
        return list(pts)
    step = math.ceil(len(pts) / (MAX_POINTS // 2))
    out: list[Point] = []
    for i in range(0, len(pts), step):
        bucket = pts[i:i + step]
        lo = min(bucket, key=lambda p: p[1])
        hi = max(bucket, key=lambda p: p[1])
        out.extend(sorted({lo, hi}))
    return out


def chart(report: ReportView, model_id: str, signal: str) -> list[Item] | None:
    """The chart of one signal, or None when it has no finite value to draw."""
    trace: SignalTrace = report.signals[model_id][signal]
    timed = report.timed
    clean = [(x, y) for x, y in trace.points if math.isfinite(y)]
    if not clean:
        return None
    dets = report.detections_of(model_id, signal)
    inj = report.injected_of(model_id, signal)
    xs = [p[0] for p in clean] + [a for s in trace.warmups for a in s]
    x0, x1 = min(xs), max(xs)
    ys = [p[1] for p in clean] + [v for s in trace.baselines for v in (s.low, s.high)
                                  if math.isfinite(v)]
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    margin = (y1 - y0) * 0.06
    y0, y1 = y0 - margin, y1 + margin
    pw, ph = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (min(max(x, x0), x1) - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return PAD_T + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * ph

    out: list[Item] = [Rect(PAD_L, PAD_T, pw, ph, PLOT_BG, "plot", stroke=GRID)]
    for a, b in trace.warmups:
        out.append(Rect(sx(a), PAD_T, max(sx(b) - sx(a), 1.0), ph, WARMUP, "warmup",
                        title=f"warm-up {fmt_x(a, timed)} – {fmt_x(b, timed)}: the reference "
                        "is being learned"))
    for t in inj:
        span = report.span(t, x1)
        if span is None or span[1] < x0 or span[0] > x1:
            continue
        # A bar along the bottom and a line at its start: the warm-up shading and the
        # bands stay visible where the drift overlaps them.
        a, b = sx(span[0]), sx(span[1])
        out.append(Rect(a, PAD_T + ph - INJECTED_BAR, max(b - a, 1.5), INJECTED_BAR, INJECTED,
                        "injected", title=f"injected {t.get('signal', '')} drift "
                        f"×{t.get('magnitude', '?')} from {fmt_x(span[0], timed)}"))
        out.append(Line(a, PAD_T, a, PAD_T + ph, INJECTED_LINE, width=1.5, dash=(3, 3)))
        out.append(Text(a + 4, PAD_T + ph - INJECTED_BAR - 4, "injected", fill=INJECTED_LINE))
    for s in trace.baselines:
        a, b = sx(s.start), sx(s.end)
        if s.high > s.low:
            out.append(Rect(a, sy(s.high), max(b - a, 1.0), max(sy(s.low) - sy(s.high), 1.0),
                            BAND, "baseline-band", opacity=0.75,
                            title=f"baseline {fmt(s.low)} – {fmt(s.high)} (reference mean "
                            f"{fmt(s.center)}), in force {fmt_x(s.start, timed)} – "
                            f"{fmt_x(s.end, timed)}"))
        out.append(Line(a, sy(s.center), b, sy(s.center), BASELINE, dash=(5, 4),
                        cls="baseline"))
    for i in range(5):  # axes: five y ticks, five x ticks
        yv = y0 + (y1 - y0) * i / 4
        out.append(Line(PAD_L - 4, sy(yv), PAD_L, sy(yv), "#8a93a3"))
        out.append(Text(PAD_L - 7, sy(yv) + 4, fmt_tick(yv, (y1 - y0) / 4), anchor="end"))
        xv = x0 + (x1 - x0) * i / 4
        out.append(Text(sx(xv), HEIGHT - 9, fmt_x(xv, timed),
                        anchor=("start", "middle", "middle", "middle", "end")[i]))
    out.append(Polyline(tuple((sx(x), sy(y)) for x, y in downsample(clean)), SIGNAL,
                        cls="signal"))
    for d in dets:
        x = report.x_of(d)
        if x is None or not x0 <= x <= x1:
            continue
        px = sx(x)
        out.append(Group((
            Line(px, PAD_T, px, PAD_T + ph, DETECTION, width=1.5),
            Polygon(((px - 6, PAD_T - 1), (px + 6, PAD_T - 1), (px, PAD_T + 9)), DETECTION),
        ), "detection", _tip(d, x, timed)))
    return out


def _tip(d: Mapping[str, Any], x: float, timed: bool) -> str:
    def num(key: str) -> str:
        v = d.get(key)
        return fmt(float(v)) if isinstance(v, int | float) else "–"

    return (f"{d.get('kind', '')} drift by {d.get('detector', '?')} at {fmt_x(x, timed)}; "
            f"baseline {num('baseline')}, current {num('current')}, "
            f"severity {num('severity')}")
