"""The report as a PNG, drawn with Pillow: no browser.

The charts are the same primitives as the HTML's SVG (``scene``), drawn at twice the size
and scaled down (Pillow's lines are not anti-aliased); the page around them (headings,
legend, score tables) is laid out here in the HTML's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from driftline.streams.offline.report import scene
from driftline.streams.offline.report.html import legend, score_rows
from driftline.streams.offline.report.scene import Group, Item, Line, Polygon, Polyline, Rect, Text
from driftline.streams.offline.report.view import ReportView
from PIL import Image, ImageDraw, ImageFont

MARGIN = 30
PAGE_WIDTH = scene.WIDTH + 2 * MARGIN
SCALE = 2  # charts are drawn at this scale, then reduced
INK = "#1d2430"
HEADING = "#3a4454"


def _font(size: int) -> Any:
    """Pillow's own scalable font: the same picture on every machine."""
    return ImageFont.load_default(size=size)


def _glyphs(text: str) -> str:
    return text.replace("×", "x")  # not in Pillow's font


def _rgba(color: str, opacity: float = 1.0) -> tuple[int, int, int, int]:
    c = color.lstrip("#")
    return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), round(255 * opacity))


def render_png(report: ReportView, path: str | Path) -> Path:
    """Write the report to ``path`` as a PNG."""
    path = Path(path)
    height = _layout(report, None)
    page = Image.new("RGB", (PAGE_WIDTH, height), "white")
    _layout(report, page)
    page.save(path, optimize=True)
    return path


def chart_image(items: list[Item]) -> Image.Image:
    """One chart, anti-aliased."""
    big = Image.new("RGB", (scene.WIDTH * SCALE, scene.HEIGHT * SCALE), "white")
    draw = ImageDraw.Draw(big, "RGBA")
    for item in items:
        _draw(draw, item)
    return big.resize((scene.WIDTH, scene.HEIGHT), Image.Resampling.LANCZOS)


def _draw(draw: ImageDraw.ImageDraw, i: Item) -> None:
    s = SCALE
    if isinstance(i, Rect):
        box = (i.x * s, i.y * s, (i.x + i.w) * s, (i.y + i.h) * s)
        draw.rectangle(box, fill=_rgba(i.fill, i.opacity),
                       outline=_rgba(i.stroke) if i.stroke else None, width=s if i.stroke else 0)
    elif isinstance(i, Line):
        width = max(1, round(i.width * s))
        if i.dash is None:
            draw.line((i.x1 * s, i.y1 * s, i.x2 * s, i.y2 * s), fill=_rgba(i.stroke), width=width)
            return
        on, off = i.dash[0] * s, i.dash[1] * s
        length = max(abs(i.x2 - i.x1), abs(i.y2 - i.y1)) * s
        dx, dy = ((i.x2 - i.x1) * s / length, (i.y2 - i.y1) * s / length) if length else (0, 0)
        pos = 0.0
        while pos < length:
            end = min(pos + on, length)
            draw.line((i.x1 * s + dx * pos, i.y1 * s + dy * pos, i.x1 * s + dx * end,
                       i.y1 * s + dy * end), fill=_rgba(i.stroke), width=width)
            pos += on + off
    elif isinstance(i, Polyline):
        draw.line([(x * s, y * s) for x, y in i.points], fill=_rgba(i.stroke),
                  width=max(1, round(i.width * s)), joint="curve")
    elif isinstance(i, Polygon):
        draw.polygon([(x * s, y * s) for x, y in i.points], fill=_rgba(i.fill))
    elif isinstance(i, Text):
        anchor = {"start": "ls", "middle": "ms", "end": "rs"}[i.anchor]
        draw.text((i.x * s, i.y * s), _glyphs(i.text), fill=_rgba(i.fill), font=_font(i.size * s),
                  anchor=anchor)
    elif isinstance(i, Group):
        for j in i.items:
            _draw(draw, j)


def _layout(report: ReportView, page: Image.Image | None) -> int:
    """Lay the page out (and draw it when ``page`` is given); return its height."""
    draw = ImageDraw.Draw(page, "RGBA") if page is not None else None
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    y = 24

    def text(x: float, yy: float, s: str, size: int, fill: str = INK) -> float:
        """Draw ``s`` with its top at ``yy``; return its width."""
        font = _font(size)
        if draw is not None:
            draw.text((x, yy), _glyphs(s), fill=fill, font=font)
        return float(measure.textlength(_glyphs(s), font=font))

    text(MARGIN, y, report.title, 22)
    y += 34
    n_points = sum(len(t.points) for sigs in report.signals.values() for t in sigs.values())
    known = report.injected is not None
    meta = (f"{len(report.signals)} model(s), {n_points:,} points, "
            f"{len(report.detections)} detection(s)"
            + (f", {len(report.injected or [])} injected drift(s) (ground truth)" if known else "")
            + f". x axis: {'time (UTC)' if report.timed else 'interaction index'}.")
    text(MARGIN, y, meta, 13, scene.TEXT)
    y += 26
    x = float(MARGIN)
    for color, label in legend(known):
        width = 18 + 4 + measure.textlength(label, font=_font(13)) + 14
        if x + width > PAGE_WIDTH - MARGIN:
            x, y = float(MARGIN), y + 20
        if draw is not None:
            draw.rectangle((x, y + 4, x + 18, y + 14), fill=_rgba(color))
        text(x + 22, y, label, 13)
        x += width
    y += 24
    for model_id in report.models():
        y += 18
        text(MARGIN, y, model_id, 18)
        y += 26
        if draw is not None:
            draw.line((MARGIN, y, PAGE_WIDTH - MARGIN, y), fill=_rgba(scene.GRID))
        y += 8
        if known or report.detections_of(model_id):
            y = _table(report, model_id, y, draw, measure) + 6
        for signal in sorted(report.signals[model_id]):
            y += 8
            text(MARGIN, y, f"{signal} · {report.kind(model_id, signal)}", 14, HEADING)
            y += 22
            items = scene.chart(report, model_id, signal)
            if items is None:
                text(MARGIN, y, "no data", 13, scene.TEXT)
                y += 20
                continue
            if page is not None:
                page.paste(chart_image(items), (MARGIN, y))
            y += scene.HEIGHT + 4
    return y + 24


def _table(report: ReportView, model_id: str, y: int, draw: ImageDraw.ImageDraw | None,
           measure: ImageDraw.ImageDraw) -> int:
    rows = score_rows(report, model_id)
    font = _font(13)
    widths = [0.0] * 5
    for cells, _ in rows:
        if len(cells) == 5:
            for k, c in enumerate(cells):
                widths[k] = max(widths[k], measure.textlength(_glyphs(c), font=font) + 16)
    total = sum(widths)
    for cells, _ in rows:
        if len(cells) == 1:
            total = max(total, measure.textlength(_glyphs(cells[0]), font=font) + 16)
    row_h = 22
    for cells, status in rows:
        if draw is not None:
            x = float(MARGIN)
            fill = _rgba("#f3f5f9") if status == "head" else None
            spans = [total] if len(cells) == 1 else widths
            for k, c in enumerate(cells):
                w = spans[k]
                draw.rectangle((x, y, x + w, y + row_h), fill=fill, outline=_rgba(scene.GRID))
                color = {"hit": "#1b6e3a", "miss": "#b3261e"}.get(status, INK) if k == 2 \
                    else INK
                draw.text((x + 8, y + 4), _glyphs(c), fill=_rgba(color), font=font)
                x += w
        y += row_h
    return y
