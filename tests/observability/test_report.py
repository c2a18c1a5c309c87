"""The HTML/PNG drift report: structure of a small seeded report, and a real PNG render."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from driftline.streams.offline.report import render_html, write_report

T0 = 1_767_225_600.0


def small_report_inputs() -> tuple[dict, dict, list, list]:
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
    return series, baselines, detections, injected


def test_html_report_structure(tmp_path: Path) -> None:
    series, baselines, detections, injected = small_report_inputs()
    path = write_report(tmp_path / "report.html", series, baselines, detections, injected)
    doc = path.read_text()
    assert doc.startswith("<!DOCTYPE html>")
    # Self-contained: no scripts, no external resources.
    assert "<script" not in doc and not re.search(r"(src|href)=['\"]?(https?:)?//", doc)
    sections = re.findall(r"<section><h2>([^<]+)</h2>", doc)
    assert sections == ["chat-a", "chat-b"]
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
    doc = render_html({"m": {"latency_ms": pts}}, {}, [
        {"model_id": "m", "signal": "latency_ms", "kind": "behavior", "x": 25_000},
        {"model_id": "m", "signal": "latency_ms", "kind": "behavior",
         "detected_at": "2026-01-01T00:00:00Z"},  # no x on an index axis: not drawn
    ], None)
    assert doc.count("class='detection'") == 1
    (points,) = re.findall(r"class='signal' points='([^']+)'", doc)
    assert len(points.split()) <= 1_300
    assert "interaction index" in doc and "injected" not in doc.split("</p>", 2)[1]


def test_text_is_escaped() -> None:
    doc = render_html({"<m>": {"a&b": [(0.0, 1.0), (1.0, 2.0)]}}, {}, [], None)
    assert "<m>" not in doc.replace("<meta", "") and "&lt;m&gt;" in doc and "a&amp;b" in doc


def test_png_report(tmp_path: Path) -> None:
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("headless Chromium not installed (apt-get install -y chromium)")
    series, baselines, detections, injected = small_report_inputs()
    path = write_report(tmp_path / "report.png", series, baselines, detections, injected)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 900 and height >= 700
