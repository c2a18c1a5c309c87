"""The drift report as people see it: the HTML's structure, the PNG's pixels, the HTML
rendered by a real headless Chromium (Debian's ``chromium``, installed by
scripts/system-deps.sh), the notebook view and the JSON summary."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import orjson
import pytest
from driftline.streams.offline.report import (
    Report,
    Segment,
    SignalTrace,
    from_constant_baselines,
    scene,
)
from PIL import Image

T0 = 1_767_225_600.0


def small_report() -> Report:
    rng = np.random.default_rng(3)
    lat = [(T0 + i, float(200 + 20 * rng.standard_normal() + (150 if i >= 300 else 0)))
           for i in range(600)]
    acc = [(T0 + i, float(0.9 + 0.02 * rng.standard_normal())) for i in range(600)]
    series = {"chat-a": {"latency_ms": lat, "accuracy": acc},
              "chat-b": {"latency_ms": [(T0 + i, 100.0) for i in range(50)]}}
    baselines = {"chat-a": {"latency_ms": (200.0, 160.0, 240.0), "accuracy": (0.86, 0.94)}}
    detections = [
        {"schema_version": 1, "drift_id": "d1", "model_id": "chat-a", "kind": "behavior",
         "signal": "latency_ms", "detector": "adwin", "detected_at": "2026-01-01T00:05:31Z",
         "baseline": 200.0, "current": 350.0, "severity": 7.5},
        {"schema_version": 1, "drift_id": "d2", "model_id": "chat-a", "kind": "accuracy",
         "signal": "accuracy", "detector": "cusum", "detected_at": T0 + 100,
         "baseline": 0.9, "current": 0.8, "severity": 2.0},
    ]
    injected = [{"model_id": "chat-a", "signal": "latency_ms", "kind": "behavior",
                 "start": T0 + 300, "magnitude": 1.75}]
    return from_constant_baselines(series, baselines, detections, injected)


def test_html_report_structure() -> None:
    doc = small_report().to_html()
    assert doc.startswith("<!DOCTYPE html>")
    # Self-contained: no scripts, no external resources.
    assert "<script" not in doc and not re.search(r"(src|href)=['\"]?(https?:)?//", doc)
    assert re.findall(r"<section><h2>([^<]+)</h2>", doc) == ["chat-a", "chat-b"]
    svgs = re.findall(r"<svg.*?</svg>", doc, re.S)
    assert len(svgs) == 3  # a chart per signal
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    chat_a_latency = svgs[1]  # sorted: accuracy, latency_ms
    assert chat_a_latency.count("class='detection'") == 1
    assert chat_a_latency.count("class='injected'") == 1
    assert "class='baseline-band'" in chat_a_latency and "class='baseline'" in chat_a_latency
    assert svgs[0].count("class='detection'") == 1 and "class='injected'" not in svgs[0]
    assert "class='detection'" not in svgs[2] and "baseline-band" not in svgs[2]
    # The score table: injected at 00:05:00, first detection 31 s later.
    assert "<td class='hit'>00:05:31</td><td>31 s</td><td>adwin</td>" in doc
    assert "2 detection(s); 1 before any injected drift (false alarms)" in doc


def test_index_axis_detection_needs_x_and_long_series_are_downsampled() -> None:
    pts = [(float(i), float(i % 7)) for i in range(50_000)]
    doc = from_constant_baselines({"m": {"latency_ms": pts}}, {}, [
        {"model_id": "m", "signal": "latency_ms", "kind": "behavior", "x": 25_000},
        {"model_id": "m", "signal": "latency_ms", "kind": "behavior",
         "detected_at": "2026-01-01T00:00:00Z"},  # no x on an index axis: not drawn
    ], None).to_html()
    assert doc.count("class='detection'") == 1
    (points,) = re.findall(r"class='signal' points='([^']+)'", doc)
    assert len(points.split()) <= 1_300
    assert "interaction index" in doc and "injected" not in doc.split("</p>", 2)[1]


def test_text_is_escaped() -> None:
    doc = from_constant_baselines({"<m>": {"a&b": [(0.0, 1.0), (1.0, 2.0)]}}, {}, [],
                                  None).to_html()
    assert "<m>" not in doc.replace("<meta", "") and "&lt;m&gt;" in doc and "a&amp;b" in doc


# -- what a person sees: one chart with two references and a warm-up after the drift ----------

def two_references() -> Report:
    """Latency at ~100 until x=500, then ~200: a warm-up [0, 200], the first reference over
    [200, 520], the detection at 520, a second warm-up [520, 700], the re-learned reference
    (at the new level) over [700, 1000]."""
    rng = np.random.default_rng(5)
    pts = [(float(x), float((100 if x < 500 else 200) + 2 * rng.standard_normal()))
           for x in range(0, 1001, 10)]
    trace = SignalTrace(points=pts, warmups=[(0.0, 200.0), (520.0, 700.0)],
                        baselines=[Segment(200, 520, 100, 94, 106),
                                   Segment(700, 1000, 200, 194, 206)])
    det = {"model_id": "m", "signal": "latency", "kind": "behavior", "detector": "cusum_mean_up",
           "x": 520.0, "baseline": 100.0, "current": 200.0, "severity": 9.0}
    truth = [{"model_id": "m", "signal": "latency", "kind": "behavior", "start": 500,
              "magnitude": 2.0}]
    return Report({"m": {"latency": trace}}, [det], truth, title="two references")


def _band_mask(a: np.ndarray) -> np.ndarray:
    r, g, b = (a[..., k].astype(int) for k in range(3))  # scene.BAND under some opacity
    return (r > 170) & (g - r >= 10) & (g - b >= 6)


def _warmup_mask(a: np.ndarray) -> np.ndarray:
    r, g, b = (a[..., k].astype(int) for k in range(3))  # scene.WARMUP, #e6e8ee
    return (r >= 224) & (r <= 236) & (g - r >= 0) & (g - r <= 4) & (b - r >= 4) & (b - r <= 11)


def check_picture(img: Image.Image) -> None:
    """Find the plot by its first warm-up (which starts at its left edge and spans its
    height) and read the columns a person would look at."""
    a = np.asarray(img.convert("RGB"))
    warm, band = _warmup_mask(a), _band_mask(a)
    tall = np.flatnonzero(warm.sum(axis=0) > 100)
    assert tall.size, "no warm-up shading on the page"
    left = int(tall[0])
    rows = np.flatnonzero(warm[:, left + 5])
    top, bottom = int(rows.min()), int(rows.max())
    assert bottom - top > 100
    pw = scene.WIDTH - scene.PAD_L - scene.PAD_R

    def col(x_data: float) -> int:
        return round(left + x_data / 1000 * pw)

    def band_rows(x_data: float) -> set[int]:
        return set(np.flatnonzero(band[top:bottom + 1, col(x_data)]).tolist())

    for x_data in (100, 610):  # warm-ups: shaded, no band
        assert warm[top:bottom + 1, col(x_data)].sum() > 100, x_data
        assert not band_rows(x_data), x_data
    first, second = band_rows(350), band_rows(850)
    assert len(first) > 5 and len(second) > 5
    # The re-learned reference sits higher (smaller y) than the first; neither is drawn
    # where it was not in force.
    assert max(second) < min(first)
    assert not band_rows(560) and not band_rows(150)
    assert not warm[top + 3:bottom - 2, col(350)].any()  # (inside the plot border)


def test_png_without_a_browser(tmp_path: Path) -> None:
    path = two_references().write(tmp_path / "report.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(path)
    assert img.width == scene.WIDTH + 60
    check_picture(img)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1"]


def chromium() -> str:
    found = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                  if shutil.which(b)), None)
    assert found, "headless Chromium is missing: scripts/system-deps.sh installs it"
    return found


def test_html_in_a_real_browser(tmp_path: Path) -> None:
    page = two_references().write(tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1000,700", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), proc.stderr[-2000:]
    check_picture(Image.open(shot))
    dom = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
        check=False).stdout
    assert "two references" in dom and "cusum_mean_up" in dom and "20 events" in dom
    assert dom.count("class=\"baseline-band\"") == 2 and dom.count("class=\"warmup\"") == 2


def test_notebook_view_and_json_summary(tmp_path: Path) -> None:
    report = two_references()
    inline = report._repr_html_()
    assert inline.startswith("<div class='dl-report'>") and "<html" not in inline
    assert inline.count("<svg") == 1
    path = report.write(tmp_path / "summary.json")
    summary = orjson.loads(path.read_bytes())
    assert summary["drift_found"] is True and summary["ground_truth"] is True
    assert summary["totals"] == {"models": 1, "detections": 1, "injected": 1, "detected": 1,
                                 "missed": 0, "false_alarms": 0}
    latency = summary["models"]["m"]["signals"]["latency"]
    assert latency["warmups"] == [[0, 200], [520, 700]]
    assert [(b["from"], b["to"], b["center"]) for b in latency["baselines"]] == [
        (200, 520, 100), (700, 1000, 200)]
    (inj,) = summary["models"]["m"]["injected"]
    assert (inj["detected"], inj["delay"], inj["detector"]) == (True, 20, "cusum_mean_up")


@pytest.mark.parametrize("suffix", [".html", ".png", ".json"])
def test_a_report_with_no_data_still_renders(tmp_path: Path, suffix: str) -> None:
    report = Report({"m": {"latency": SignalTrace(points=[(0.0, float("nan"))])}}, [], None)
    assert report.write(tmp_path / f"r{suffix}").stat().st_size > 0
