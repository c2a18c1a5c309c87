"""The README's first command: ``driftline demo`` on its embedded defaults (a smaller stream).

It starts its own Kafka broker and embedded Postgres, so it needs neither fixture; it is
marked like the other broker-backed tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_demo_detects_every_injected_drift_and_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "driftline.streams.cli", "demo",
                          "--events", "3000"],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    text = out.stdout
    assert out.returncode == 0, text[-3000:] + out.stderr[-3000:]
    assert "detected 3/3 injected drifts" in text
    assert "false alarms: 0" in text
    rows = re.findall(r"^  (\S+)\s+(behavior|embedding|accuracy)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)",
                      text, re.M)
    assert {r[1] for r in rows} == {"behavior", "embedding", "accuracy"}
    for _model, _kind, injected, detected, delay in rows:
        assert int(detected) - int(injected) == int(delay) >= 0
        assert int(delay) < 1000
    assert re.search(r"retrain requests: 3; jobs: succeeded 3", text)
    assert re.search(r"store rows: drift_events 3, interactions 12,000", text)
    report = tmp_path / "home" / "demo" / "report.html"
    assert report.exists() and "<svg" in report.read_text()
    # Everything it started is gone: no broker left on its pid.
    pid_file = tmp_path / "home" / "demo" / "kafka" / "kafka.pid"
    assert not pid_file.exists()
