"""The report as one self-contained HTML page: inline SVG charts, no JavaScript, no external
resources (opens from a file, an e-mail attachment or a CI artifact)."""

from __future__ import annotations

import html

from driftline.streams.offline.report import scene
from driftline.streams.offline.report.scene import Item, Line, Polygon, Polyline, Rect, Text
from driftline.streams.offline.report.view import ReportView

_CSS = """
.dl-report{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;
color:#1d2430;background:#fff}
.dl-report h1{font-size:22px;margin:0 0 4px}.dl-report h2{font-size:18px;margin:28px 0 6px;
border-bottom:1px solid #d8dde6;padding-bottom:4px}.dl-report h3{font-size:14px;
margin:12px 0 2px;color:#3a4454}.dl-report .meta{color:#5b6576}
.dl-report .legend span{margin-right:14px;white-space:nowrap}
.dl-report .sw{display:inline-block;width:18px;height:10px;margin-right:4px;
vertical-align:middle}
.dl-report table{border-collapse:collapse;margin:6px 0 4px}.dl-report td,.dl-report th{
border:1px solid #d8dde6;padding:3px 8px;text-align:left;font-size:13px}
.dl-report th{background:#f3f5f9}.dl-report .miss{color:#b3261e;font-weight:600}
.dl-report .hit{color:#1b6e3a;font-weight:600}.dl-report svg{display:block}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render(report: ReportView) -> str:
    """The whole page."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(report.title)}</title><style>body{{margin:24px}}</style></head>"
            f"<body>{render_body(report)}</body></html>")


def render_body(report: ReportView) -> str:
    """The report as one ``<div>`` with its own styles (also a notebook's inline view)."""
    n_points = sum(len(t.points) for sigs in report.signals.values() for t in sigs.values())
    known = report.injected is not None
    parts = [
        f"<div class='dl-report'><style>{_CSS}</style>",
        f"<h1>{_e(report.title)}</h1>",
        f"<p class='meta'>{len(report.signals)} model(s), {n_points:,} points, "
        f"{len(report.detections)} detection(s)"
        + (f", {len(report.injected or [])} injected drift(s) (ground truth)" if known else "")
        + f". x axis: {'time (UTC)' if report.timed else 'interaction index'}.</p>",
        "<p class='legend'>" + "".join(
            f"<span><i class='sw' style='background:{color}'></i>{_e(label)}</span>"
            for color, label in legend(known)) + "</p>",
    ]
    for model_id in report.models():
        parts.append(f"<section><h2>{_e(model_id)}</h2>")
        if known or report.detections_of(model_id):
            parts.append(_score_table(report, model_id))
        for signal in sorted(report.signals[model_id]):
            parts.append(f"<h3>{_e(signal)} · {_e(report.kind(model_id, signal))}</h3>")
            items = scene.chart(report, model_id, signal)
            parts.append(svg(items) if items is not None else "<p class='meta'>no data</p>")
        parts.append("</section>")
    parts.append("</div>")
    return "".join(parts)


def legend(known: bool) -> list[tuple[str, str]]:
    """(colour, label) of the legend, shared with the PNG."""
    out = [(scene.SIGNAL, "signal"),
           (scene.BAND, "baseline band (99.7% of the signal while its reference holds)"),
           (scene.WARMUP, "warm-up (learning the reference)"),
           (scene.DETECTION, "detection")]
    if known:
        out.append((scene.INJECTED, "injected drift"))
    return out


def score_rows(report: ReportView, model_id: str) -> list[tuple[list[str], str]]:
    """The score table's rows: (cells, status), status "hit", "miss" or "" (shared with the
    PNG); the first row is the header."""
    timed = report.timed
    rows: list[tuple[list[str], str]] = [
        (["injected", "from", "first detection", "delay", "detector"], "head")]
    scores = report.scores(model_id)
    if report.injected is not None and not scores:
        rows.append((["no injected drift"], ""))
    for s in scores:
        t = s.injected
        what = f"{t.get('kind', '')}/{t.get('signal', '')} ×{t.get('magnitude', '?')}"
        start = scene.fmt_x(s.start, timed)
        if s.detection is not None and s.detected_x is not None and s.delay is not None:
            delay = f"{s.delay:,.0f}" + (" s" if timed else " events")
            rows.append(([what, start, scene.fmt_x(s.detected_x, timed), delay,
                          str(s.detection.get("detector", ""))], "hit"))
        else:
            rows.append(([what, start, "missed", "–", "–"], "miss"))
    fas = report.false_alarms(model_id)
    dets = report.detections_of(model_id)
    if report.injected is not None or fas:
        rows.append(([f"{len(dets)} detection(s); {len(fas)} before any injected drift"
                      + (" (false alarms)" if report.injected is not None else "")], ""))
    return rows


def _score_table(report: ReportView, model_id: str) -> str:
    out = ["<table>"]
    for cells, status in score_rows(report, model_id):
        if status == "head":
            out.append("<tr>" + "".join(f"<th>{_e(c)}</th>" for c in cells) + "</tr>")
        elif len(cells) == 1:
            out.append(f"<tr><td colspan='5'>{_e(cells[0])}</td></tr>")
        else:
            tds = [f"<td>{_e(c)}</td>" for c in cells]
            tds[2] = f"<td class='{status}'>{_e(cells[2])}</td>"
            out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "".join(out)


# -- SVG --------------------------------------------------------------------------------------

def svg(items: list[Item]) -> str:
    w, h = scene.WIDTH, scene.HEIGHT
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' "
            f"viewBox='0 0 {w} {h}' role='img' class='chart'>"
            + "".join(_svg(i) for i in items) + "</svg>")


def _title(text: str) -> str:
    return f"<title>{_e(text)}</title>" if text else ""


def _cls(cls: str) -> str:
    return f" class='{cls}'" if cls else ""


def _svg(i: Item) -> str:
    if isinstance(i, Rect):
        attrs = (f"x='{i.x:.1f}' y='{i.y:.1f}' width='{i.w:.1f}' height='{i.h:.1f}' "
                 f"fill='{i.fill}'")
        if i.opacity < 1:
            attrs += f" fill-opacity='{i.opacity:g}'"
        if i.stroke:
            attrs += f" stroke='{i.stroke}'"
        return (f"<rect{_cls(i.cls)} {attrs}>{_title(i.title)}</rect>" if i.title
                else f"<rect{_cls(i.cls)} {attrs}/>")
    if isinstance(i, Line):
        dash = f" stroke-dasharray='{i.dash[0]} {i.dash[1]}'" if i.dash else ""
        width = f" stroke-width='{i.width:g}'" if i.width != 1 else ""
        return (f"<line{_cls(i.cls)} x1='{i.x1:.1f}' x2='{i.x2:.1f}' y1='{i.y1:.1f}' "
                f"y2='{i.y2:.1f}' stroke='{i.stroke}'{width}{dash}/>")
    if isinstance(i, Polyline):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in i.points)
        return (f"<polyline{_cls(i.cls)} points='{pts}' fill='none' stroke='{i.stroke}' "
                f"stroke-width='{i.width:g}' stroke-linejoin='round'/>")
    if isinstance(i, Polygon):
        (x0, y0), *rest = i.points
        d = f"M{x0:.1f},{y0:.1f} " + " ".join(f"L{x:.1f},{y:.1f}" for x, y in rest) + "Z"
        return f"<path d='{d}' fill='{i.fill}'/>"
    if isinstance(i, Text):
        return (f"<text x='{i.x:.1f}' y='{i.y:.1f}' font-size='{i.size}' "
                f"text-anchor='{i.anchor}' fill='{i.fill}'>{_e(i.text)}</text>")
    return (f"<g{_cls(i.cls)}>{_title(i.title)}" + "".join(_svg(j) for j in i.items) + "</g>")
