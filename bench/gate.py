"""A benchmark's targets: each figure printed beside its target, and the exit status they owe.

Every script in ``bench/`` ends the same way: it checks each figure against its target,
prints one table of them, and exits non-zero when any target was missed, so a person
(or CI, for the deterministic ones) can run it as a check::

    gate = Gate("replay throughput")
    gate.check("scalar replay/s (CPU)", 212_000, ">=", 200_000)
    gate.check("p99 produce -> drift event", 0.50, "<=", 1.0, unit="s")
    print(gate.table())
    return gate.status()  # 0: every target met; 1: at least one missed

A figure that could not be measured (``None``, NaN) misses its target: a benchmark that
skipped its work must not pass for having found nothing wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OPS = {"<=": "≤", ">=": "≥", "==": "="}


@dataclass(frozen=True, slots=True)
class Row:
    """One figure and its target."""

    name: str
    value: float | None
    op: str  # "<=", ">=" or "=="
    target: float
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool:
        v = self.value
        if v is None or math.isnan(v):
            return False
        if self.op == "<=":
            return v <= self.target
        if self.op == ">=":
            return v >= self.target
        return v == self.target


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "unset" if math.isnan(x) else str(x)
    if x == int(x) and abs(x) >= 10:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


class Gate:
    """The targets of one benchmark run, in the order they were checked."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[Row] = []

    def check(self, name: str, value: float | None, op: str, target: float, *,
              unit: str = "", note: str = "") -> bool:
        """Record ``value`` against ``op target``; return whether it is met."""
        if op not in OPS:
            raise ValueError(f"unknown comparison {op!r}: use one of {', '.join(OPS)}")
        row = Row(name, None if value is None else float(value), op, float(target), unit, note)
        self.rows.append(row)
        return row.met

    @property
    def missed(self) -> list[Row]:
        return [r for r in self.rows if not r.met]

    def table(self) -> str:
        """The figures beside their targets, one line each, and a verdict line."""
        width = max([len(r.name) for r in self.rows] + [6])
        lines = [f"# gate: {self.title}",
                 f"{'figure':<{width}}  {'measured':>12}  {'target':>12}  result"]
        for r in self.rows:
            unit = f" {r.unit}" if r.unit else ""
            measured = "–" if r.value is None or math.isnan(r.value) else _num(r.value) + unit
            target = f"{OPS[r.op]} {_num(r.target)}{unit}"
            verdict = "ok" if r.met else "MISSED"
            note = f"  ({r.note})" if r.note else ""
            lines.append(f"{r.name:<{width}}  {measured:>12}  {target:>12}  {verdict}{note}")
        missed = self.missed
        if not self.rows:
            lines.append("no targets checked")
        elif missed:
            lines.append(f"MISSED {len(missed)} of {len(self.rows)} targets (marked above)")
        else:
            lines.append(f"all {len(self.rows)} targets met")
        return "\n".join(lines)

    def status(self) -> int:
        """The process exit status the run owes: 0 when every target was met, else 1."""
        return 1 if self.missed else 0
