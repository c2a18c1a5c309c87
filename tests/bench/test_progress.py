"""The benchmarks' one progress line: on stderr, every tenth task and the last in a log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the benchmarks run as scripts: their folder is on the path

import progress  # noqa: E402
import quality  # noqa: E402
import real_traffic  # noqa: E402


def test_a_log_gets_every_tenth_task_and_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    for done in range(1, 24):
        progress.progress(done, 23, t0)
    out, err = capsys.readouterr()
    assert out == ""
    assert [line.split()[0] for line in err.splitlines()] == [
        f"[{d}/23]" for d in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 23)]
    assert all(line.endswith(" s") and float(line.split()[1]) < 60 for line in err.splitlines())


def test_both_benchmarks_use_the_one_progress() -> None:
    assert quality.progress is progress.progress
    assert real_traffic.progress is progress.progress
