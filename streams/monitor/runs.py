"""Runs: a model's interactions waiting for its monitor, and the grouping of a decoded
batch by model that makes them.

The detectors have a fixed cost per call, so the processor feeds each model its
interactions as columns, many at a time. A batch is grouped by model in a few C calls (a
code per model id, a stable sort, the cuts) and its columns are cut once, while the batch
is in the CPU's cache; a run keeps slices of the batches it came in rather than copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
from driftline.streams.ingest.decoder import FastInteraction
from driftline.streams.ingest.records import RecordLike


@dataclass(slots=True)
class Slice:
    """One model's share of a decoded batch: the batch's records and decoded
    interactions, the positions of this model's, and its columns (one row per column
    name, one column per interaction)."""

    records: list[RecordLike]
    decoded: list[Any]
    positions: np.ndarray
    columns: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.shape[0])


class Run:
    """A model's interactions waiting for its monitor, in stream order."""

    __slots__ = ("n", "parts", "since")

    def __init__(self, since: float) -> None:
        self.parts: list[Slice] = []
        self.n = 0
        self.since = since  # when its first interaction arrived (monotonic)

    def __len__(self) -> int:
        return self.n

    def add(self, part: Slice) -> None:
        self.parts.append(part)
        self.n += len(part)

    def records(self) -> list[RecordLike]:
        return [p.records[i] for p in self.parts for i in p.positions.tolist()]

    def interactions(self) -> list[FastInteraction]:
        return [p.decoded[i] for p in self.parts for i in p.positions.tolist()]

    def columns(self) -> np.ndarray:
        if len(self.parts) == 1:
            return self.parts[0].columns
        return np.concatenate([p.columns for p in self.parts], axis=1)


class EventIds(Sequence[str]):
    """The event ids of a run, looked up only for the rows that raised an alarm."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def __len__(self) -> int:
        return self.run.n

    def __getitem__(self, row: Any) -> Any:
        if not isinstance(row, int) or not 0 <= row < self.run.n:
            raise IndexError(row)
        for part in self.run.parts:
            if row < len(part):
                return part.decoded[int(part.positions[row])].event_id
            row -= len(part)
        raise IndexError(row)  # pragma: no cover - the bounds were checked


class Grouper:
    """Groups a batch's records by model id, models in order of their first record.

    Keeps a memo of model ids and their codes (cleared when it holds ``memo`` ids, so a
    flood of distinct ids cannot grow it without bound).
    """

    def __init__(self, memo: int = 100_000) -> None:
        self.memo = memo
        self._codes: dict[str | None, int] = {None: -1}

    def group(self, ids: Sequence[str | None]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """``order`` (positions sorted by model, rejected records — id None — left
        out) and each model's ``(start, end)`` in it, in order of first appearance."""
        n = len(ids)
        codes = self._codes
        if len(codes) > self.memo:
            codes.clear()
            codes[None] = -1
        code = np.fromiter(map(codes.get, ids, repeat(-2)), dtype=np.int64, count=n)
        for i in np.flatnonzero(code == -2).tolist():  # model ids new to the memo
            code[i] = codes.setdefault(ids[i], len(codes))
        order = np.argsort(code, kind="stable")
        code = code[order]
        skip = int(np.searchsorted(code, 0))  # the rejected (-1) sort first
        order, code = order[skip:], code[skip:]
        m = order.shape[0]
        starts = (np.flatnonzero(code[1:] != code[:-1]) + 1).tolist()
        bounds = list(zip([0, *starts], [*starts, m], strict=True)) if m else []
        if len(bounds) > 1:  # models in order of their first record (stable: order[start])
            bounds.sort(key=lambda se: int(order[se[0]]))
        return order, bounds
