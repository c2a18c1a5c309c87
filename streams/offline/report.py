"""A drift report for people without Grafana: one self-contained HTML file (inline SVG, no
JavaScript, no external CSS), or a PNG of it rendered by headless Chromium.

One section per model, one chart per signal: the signal over time, its baseline band,
detections as red markers, injected drift (ground truth, when known) as shaded spans, and
a table scoring each injected drift against the first detection after it.

Usage (what ``driftline replay`` / ``demo`` call)::

    write_report("report.html", series, baselines, detections, injected)

``series[model_id][signal]``
    ``[(x, value), ...]`` in stream order; ``x`` is an epoch timestamp (seconds) or an
    interaction index — one convention for the whole report.
``baselines[model_id][signal]``
    ``center``, ``(low, high)`` or ``(center, low, high)`` in the signal's units; missing
    entries draw no band.
``detections``
    drift event dicts (schema v1: ``model_id``, ``signal``, ``kind``, ``detector``,
    ``severity``, ``detected_at``, ...). The marker goes at ``d["x"]`` when present, else at
    ``detected_at`` (RFC 3339 or epoch seconds) — so give ``x`` when series use indices.
``injected``
    ground-truth dicts (``driftline.streams.offline.simulate``: ``model_id``, ``signal``, ``kind``,
    ``start``, ``magnitude``, ...) or ``None``. The span runs from ``start_x`` (else ``start``) to
    ``end_x`` (else ``end``, else the end of the series), in the series' ``x`` units.
"""

from __future__ import annotations

import html
import math
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftline.streams.metrics import signal_kind

Point = tuple[float, float]
Baseline = float | tuple[float, float] | tuple[float, float, float]

WIDTH, HEIGHT = 900, 210
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 18, 28
MAX_POINTS = 1200
_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1d2430;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid
#d8dde6;padding-bottom:4px}h3{font-size:14px;margin:12px 0 2px;color:#3a4454}
.meta{color:#5b6576}.legend span{margin-right:14px;white-space:nowrap}
.sw{display:inline-block;width:18px;height:10px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;margin:6px 0 4px}td,th{border:1px solid #d8dde6;padding:3px 8px;
text-align:left;font-size:13px}th{background:#f3f5f9}.miss{color:#b3261e;font-weight:600}
.hit{color:#1b6e3a;font-weight:600}svg{display:block}
"""


def write_report(
    path: str | Path,
    series: Mapping[str, Mapping[str, Sequence[Point]]],
    baselines: Mapping[str, Mapping[str, Baseline]],
    detections: Sequence[Mapping[str, Any]],
    injected: Sequence[Mapping[str, Any]] | None = None,
    *,
    title: str = "driftline drift report",
) -> Path:
    """Write the report to ``path``: HTML, or PNG when ``path`` ends in ``.png``."""
    path = Path(path)
    doc = render_html(series, baselines, detections, injected, title=title)
    if path.suffix.lower() == ".png":
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "report.html"
            page.write_text(doc, encoding="utf-8")
            render_png(page, path, height=_page_height(series, injected))
    else:
        path.write_text(doc, encoding="utf-8")
    return path


def render_html(
    series: Mapping[str, Mapping[str, Sequence[Point]]],
    baselines: Mapping[str, Mapping[str, Baseline]],
    detections: Sequence[Mapping[str, Any]],
    injected: Sequence[Mapping[str, Any]] | None = None,
    *,
    title: str = "driftline drift report",
) -> str:
    """The report as one HTML string."""
    timed = _is_time(series)
    n_points = sum(len(pts) for sigs in series.values() for pts in sigs.values())
    truth = list(injected or [])
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>{len(series)} model(s), {n_points:,} points, "
        f"{len(detections)} detection(s)"
        + (f", {len(truth)} injected drift(s) (ground truth)" if injected is not None else "")
        + f". x axis: {'time (UTC)' if timed else 'interaction index'}.</p>",
        "<p class='legend'><span><i class='sw' style='background:#2f6fdf'></i>signal</span>"
        "<span><i class='sw' style='background:#cfe8d6'></i>baseline band</span>"
        "<span><i class='sw' style='background:#d62728'></i>detection</span>"
        + ("<span><i class='sw' style='background:#fbe3c4'></i>injected drift</span>"
           if injected is not None else "") + "</p>",
    ]
    for model_id in sorted(series):
        signals = series[model_id]
        dets = [d for d in detections if d.get("model_id") == model_id]
        inj = [t for t in truth if t.get("model_id") == model_id]
        parts.append(f"<section><h2>{_e(model_id)}</h2>")
        if injected is not None or dets:
            parts.append(_score_table(model_id, signals, dets, inj, injected is not None, timed))
        for signal in sorted(signals):
            pts = signals[signal]
            s_dets = [d for d in dets if d.get("signal") == signal]
            kind = next((str(d["kind"]) for d in s_dets if d.get("kind")), signal_kind(signal))
            # Ground truth names the signal it changed (e.g. ``correct``), the monitor the
            # signal it watches (e.g. ``error_rate``): match by name, else by kind.
            s_inj = [t for t in inj if t.get("signal") == signal or t.get("signal") is None
                     or (t.get("signal") not in signals and t.get("kind") == kind)]
            base = baselines.get(model_id, {}).get(signal)
            parts.append(f"<h3>{_e(signal)} · {_e(kind)}</h3>")
            parts.append(_chart(pts, base, s_dets, s_inj, timed))
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def render_png(html_path: Path, png_path: str | Path, width: int = WIDTH + 60,
               height: int = 1200) -> Path:
    """Screenshot ``html_path`` with headless Chromium (``chromium`` on PATH)."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        raise RuntimeError("PNG reports need headless Chromium (apt-get install chromium)")
    png_path = Path(png_path).resolve()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={png_path}", html_path.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-500:]}")
    return png_path


# --- pieces ------------------------------------------------------------------------------

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _is_time(series: Mapping[str, Mapping[str, Sequence[Point]]]) -> bool:
    firsts = [pts[0][0] for sigs in series.values() for pts in sigs.values() if pts]
    return bool(firsts) and min(firsts) > 1e8  # epoch seconds, not an index


def _page_height(series: Mapping[str, Mapping[str, Sequence[Point]]],
                 injected: Sequence[Mapping[str, Any]] | None) -> int:
    charts = sum(len(sigs) for sigs in series.values())
    tables = len(series) * (60 + 26 * (1 + len(injected or [])))
    return 140 + len(series) * 60 + charts * (HEIGHT + 34) + tables


def _x_of_detection(d: Mapping[str, Any], timed: bool) -> float | None:
    if d.get("x") is not None:
        return float(d["x"])
    if not timed:
        return None
    at = d.get("detected_at")
    if isinstance(at, int | float):
        return float(at)
    if isinstance(at, str):
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    return None


def _span(t: Mapping[str, Any], x_max: float) -> tuple[float, float] | None:
    start = t.get("start_x", t.get("start"))
    if start is None:
        return None
    end = t.get("end_x", t.get("end"))
    return float(start), float(end) if end is not None else x_max


def _band(base: Baseline | None) -> tuple[float | None, float | None, float | None]:
    if base is None:
        return None, None, None
    if isinstance(base, int | float):
        return float(base), None, None
    if len(base) == 2:
        low, high = float(base[0]), float(base[1])
        return (low + high) / 2, low, high
    return float(base[0]), float(base[1]), float(base[2])


def _downsample(pts: Sequence[Point]) -> list[Point]:
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


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e6 or (0 < a < 1e-3):
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _fmt_tick(v: float, step: float) -> str:
    """A tick label with just enough decimals to tell neighbouring ticks apart."""
    if step <= 0 or abs(v) >= 1e6:
        return _fmt(v)
    decimals = max(0, min(6, 1 - math.floor(math.log10(step))))
    return f"{v:,.{decimals}f}"


def _fmt_x(x: float, timed: bool) -> str:
    if timed:
        return datetime.fromtimestamp(x, UTC).strftime("%H:%M:%S")
    return f"{x:,.0f}"


def _chart(pts: Sequence[Point], base: Baseline | None, dets: Sequence[Mapping[str, Any]],
           inj: Sequence[Mapping[str, Any]], timed: bool) -> str:
    clean = [(float(x), float(y)) for x, y in pts if math.isfinite(float(y))]
    if not clean:
        return "<p class='meta'>no data</p>"
    center, low, high = _band(base)
    xs = [p[0] for p in clean]
    x0, x1 = min(xs), max(xs)
    ys = [p[1] for p in clean] + [v for v in (center, low, high) if v is not None]
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    margin = (y1 - y0) * 0.06
    y0, y1 = y0 - margin, y1 + margin
    pw, ph = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return PAD_T + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
           f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img' class='chart'>",
           f"<rect x='{PAD_L}' y='{PAD_T}' width='{pw}' height='{ph}' fill='#fafbfd' "
           "stroke='#d8dde6'/>"]
    for t in inj:
        span = _span(t, x1)
        if span is None:
            continue
        a, b = max(span[0], x0), min(span[1], x1)
        if b < a:
            continue
        label = f"injected {t.get('signal', '')} drift ×{t.get('magnitude', '?')} from {span[0]:g}"
        out.append(f"<rect class='injected' x='{sx(a):.1f}' y='{PAD_T}' "
                   f"width='{max(sx(b) - sx(a), 1.5):.1f}' height='{ph}' fill='#fbe3c4' "
                   f"fill-opacity='0.8'><title>{_e(label)}</title></rect>")
        out.append(f"<text x='{sx(a) + 4:.1f}' y='{PAD_T + 12}' font-size='11' "
                   "fill='#a05a00'>injected</text>")
    if low is not None and high is not None:
        out.append(f"<rect class='baseline-band' x='{PAD_L}' y='{sy(high):.1f}' width='{pw}' "
                   f"height='{max(sy(low) - sy(high), 1):.1f}' fill='#cfe8d6' "
                   f"fill-opacity='0.75'><title>baseline {_fmt(low)} – {_fmt(high)}</title>"
                   "</rect>")
    if center is not None:
        out.append(f"<line class='baseline' x1='{PAD_L}' x2='{PAD_L + pw}' y1='{sy(center):.1f}' "
                   f"y2='{sy(center):.1f}' stroke='#1b6e3a' stroke-dasharray='5 4'/>")
    # Axes: four y ticks, five x ticks.
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        out.append(f"<line x1='{PAD_L - 4}' x2='{PAD_L}' y1='{sy(yv):.1f}' y2='{sy(yv):.1f}' "
                   f"stroke='#8a93a3'/><text x='{PAD_L - 7}' y='{sy(yv) + 4:.1f}' "
                   f"font-size='11' text-anchor='end' fill='#5b6576'>"
                   f"{_e(_fmt_tick(yv, (y1 - y0) / 4))}</text>")
        xv = x0 + (x1 - x0) * i / 4
        anchor = ("start", "middle", "middle", "middle", "end")[i]
        out.append(f"<text x='{sx(xv):.1f}' y='{HEIGHT - 9}' font-size='11' "
                   f"text-anchor='{anchor}' fill='#5b6576'>{_e(_fmt_x(xv, timed))}</text>")
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in _downsample(clean))
    out.append(f"<polyline class='signal' points='{line}' fill='none' stroke='#2f6fdf' "
               "stroke-width='1' stroke-linejoin='round'/>")
    for d in dets:
        x = _x_of_detection(d, timed)
        if x is None or not x0 <= x <= x1:
            continue
        tip = (f"{d.get('kind', '')} drift by {d.get('detector', '?')} at {_fmt_x(x, timed)}; "
               f"baseline {_fmt(float(d.get('baseline', math.nan)))}, "
               f"current {_fmt(float(d.get('current', math.nan)))}, "
               f"severity {_fmt(float(d.get('severity', math.nan)))}")
        px = sx(x)
        out.append(f"<g class='detection'><title>{_e(tip)}</title>"
                   f"<line x1='{px:.1f}' x2='{px:.1f}' y1='{PAD_T}' y2='{PAD_T + ph}' "
                   f"stroke='#d62728' stroke-width='1.5'/>"
                   f"<path d='M{px - 6:.1f},{PAD_T - 1} L{px + 6:.1f},{PAD_T - 1} "
                   f"L{px:.1f},{PAD_T + 9}Z' fill='#d62728'/></g>")
    out.append("</svg>")
    return "".join(out)


def _score_table(model_id: str, signals: Mapping[str, Sequence[Point]],
                 dets: Sequence[Mapping[str, Any]], inj: Sequence[Mapping[str, Any]],
                 known: bool, timed: bool) -> str:
    """Injected drift vs the first detection of the same signal (or kind) after it."""
    x_max = max((pts[-1][0] for pts in signals.values() if pts), default=0.0)
    rows = ["<table><tr><th>injected</th><th>from</th><th>first detection</th>"
            "<th>delay</th><th>detector</th></tr>"]
    if not inj:
        rows.append("<tr><td colspan='5'>no injected drift</td></tr>")
    for t in inj:
        span = _span(t, x_max)
        after = sorted(
            (x, d) for d in dets
            if (d.get("signal") == t.get("signal") or d.get("kind") == t.get("kind"))
            and (x := _x_of_detection(d, timed)) is not None and span and x >= span[0])
        what = f"{t.get('kind', '')}/{t.get('signal', '')} ×{t.get('magnitude', '?')}"
        start = _fmt_x(span[0], timed) if span else "?"
        if after and span:
            x, d = after[0]
            delay = f"{x - span[0]:,.0f}" + (" s" if timed else " events")
            rows.append(f"<tr><td>{_e(what)}</td><td>{_e(start)}</td>"
                        f"<td class='hit'>{_e(_fmt_x(x, timed))}</td><td>{_e(delay)}</td>"
                        f"<td>{_e(d.get('detector', ''))}</td></tr>")
        else:
            rows.append(f"<tr><td>{_e(what)}</td><td>{_e(start)}</td>"
                        "<td class='miss'>missed</td><td>–</td><td>–</td></tr>")
    starts = [s[0] for t in inj if (s := _span(t, x_max))]
    false_alarms = [d for d in dets
                    if (x := _x_of_detection(d, timed)) is not None
                    and not any(x >= s for s in starts)]
    if known or false_alarms:
        rows.append(f"<tr><td colspan='5'>{len(dets)} detection(s); "
                    f"{len(false_alarms)} before any injected drift"
                    f"{' (false alarms)' if known else ''}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


class SeriesRecorder:
    """Collects what ``write_report`` draws while monitors run.

    ``sample`` records each signal's current value against the model's interaction index
    (call it after feeding a model a run of interactions); ``detection`` records a drift
    event at the index of its triggering interaction.
    """

    def __init__(self) -> None:
        self.series: dict[str, dict[str, list[Point]]] = {}
        self.baselines: dict[str, dict[str, Baseline]] = {}
        self.detections: list[dict[str, Any]] = []

    def sample(self, model_id: str, index: int, stats: Mapping[str, Any]) -> None:
        sigs = self.series.setdefault(model_id, {})
        for signal, s in stats.items():
            current, baseline = float(s.current), float(s.baseline)
            if math.isfinite(current):
                sigs.setdefault(signal, []).append((float(index), current))
            if math.isfinite(baseline):
                self.baselines.setdefault(model_id, {})[signal] = baseline

    def detection(self, event: Mapping[str, Any], index: int) -> None:
        self.detections.append({**event, "x": float(index)})

    def write(self, path: str | Path, injected: Sequence[Mapping[str, Any]] | None = None,
              *, title: str = "driftline drift report") -> Path:
        return write_report(path, self.series, self.baselines, self.detections, injected,
                            title=title)
