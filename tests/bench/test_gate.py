"""The benchmarks' gate: figures beside targets, and a non-zero exit on any miss."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# The benchmarks run as scripts (``python bench/quality.py``): their folder is on the path.
sys.path.insert(0, str(BENCH))

import gate  # noqa: E402
import quality  # noqa: E402


def test_every_target_met_exits_zero_and_says_so() -> None:
    g = gate.Gate("t")
    assert g.check("rate", 210_000, ">=", 200_000, unit="/s")
    assert g.check("p99", 0.5, "<=", 1.0, unit="s")
    assert g.check("rows", 40, "==", 40)
    assert g.status() == 0
    lines = g.table().splitlines()
    assert lines[0] == "# gate: t"
    assert lines[2].split() == ["rate", "210,000", "/s", "≥", "200,000", "/s", "ok"]
    assert lines[-1] == "all 3 targets met"


@pytest.mark.parametrize(("value", "op", "target"), [
    (199_999, ">=", 200_000), (1.01, "<=", 1.0), (39, "==", 40),
    (None, "<=", 1.0), (math.nan, ">=", 0.0), (0.0, "<=", math.nan)])
def test_a_missed_or_unmeasured_figure_fails_the_run(value: float | None, op: str,
                                                     target: float) -> None:
    g = gate.Gate("t")
    g.check("fine", 1, "<=", 2)
    assert not g.check("figure", value, op, target)
    assert g.status() == 1
    assert [r.name for r in g.missed] == ["figure"]
    table = g.table()
    assert "figure" in table.splitlines()[3] and table.splitlines()[3].endswith("MISSED")
    assert table.splitlines()[-1] == "MISSED 1 of 2 targets (marked above)"


def test_unknown_comparison_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown comparison '<'"):
        gate.Gate("t").check("x", 1, "<", 2)


def _summaries(delay: float) -> dict[int, quality.Summary]:
    return {si: quality.Summary(30, delay, delay, 0, 0, 1_000_000)
            for si in range(len(quality.SCENARIOS))}


def test_quality_ci_gate_has_a_bound_for_every_scenario_and_signal() -> None:
    assert set(quality.CI_BOUNDS) == {s.name for s in quality.SCENARIOS}
    assert set(quality.CI_STATIONARY) == set(quality.STATIONARY)
    sel = list(range(len(quality.SCENARIOS)))
    quiet = {sig: (0, 3_000_000) for sig in quality.STATIONARY}
    assert quality.ci_gate(sel, _summaries(1.0), quiet).status() == 0


def test_quality_ci_gate_fails_on_a_slower_detection_or_an_extra_false_alarm() -> None:
    sel = list(range(len(quality.SCENARIOS)))
    quiet = {sig: (0, 3_000_000) for sig in quality.STATIONARY}
    g = quality.ci_gate(sel, _summaries(10_000.0), quiet)
    assert g.status() == 1
    assert len(g.missed) == 2 * len(quality.SCENARIOS)  # every median and p90
    noisy = {**quiet, "latency": (quality.CI_STATIONARY["latency"] + 1, 3_000_000)}
    g = quality.ci_gate(sel, _summaries(1.0), noisy)
    assert [r.name for r in g.missed] == ["latency: stationary false alarms"]


def test_quality_ci_bounds_never_loosen_a_product_target() -> None:
    """A CI bound above the README's target would let a run that misses it pass."""
    sel = [i for i, s in enumerate(quality.SCENARIOS) if s.median is not None]
    quiet = {sig: (0, 3_000_000) for sig in quality.STATIONARY}
    for si in sel:
        sc = quality.SCENARIOS[si]
        s = quality.Summary(30, sc.median + 1, None, 0, 0, 1_000_000)  # type: ignore[operator]
        row = next(r for r in quality.ci_gate([si], {si: s}, quiet).rows
                   if r.name == f"{sc.name}: median delay")
        assert row.target <= sc.median and not row.met
