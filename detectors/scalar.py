"""Scalar behaviour signals (latency, output length): mean and spread CUSUMs on normal scores."""

from __future__ import annotations

import numpy as np
from driftline.detectors import calibration, state
from driftline.detectors.cusum import BY_RANK, BY_RANK_TIES, SCALE, Cusum, table_scan
from driftline.detectors.signal import (
    Alarm,
    NormalScores,
    Signal,
    mean_alarm,
    mean_shape,
    spread_alarm,
    spread_shape,
)


class ScalarSignal(Signal):
    """A non-negative measurement watched for shifts in level and in spread.

    Four one-sided CUSUMs on the value's normal score against the warm-up
    reference: mean up/down (design shift ``shift`` reference SDs) and spread
    up/down (design ratio ``spread_ratio``), each calibrated for a quarter of the
    signal's false-alarm budget, accounting for the warm-up's estimation error.
    """

    def __init__(self, name: str, fa_rate: float, warmup: int, shift: float = 0.5,
                 spread_ratio: float = 1.5) -> None:
        super().__init__(name, fa_rate)
        self.warmup = warmup
        self.shift = shift
        self.spread_ratio = spread_ratio
        self.shapes = {
            "cusum_mean_up": mean_shape(shift),
            "cusum_mean_down": mean_shape(-shift),
            "cusum_spread_up": spread_shape(spread_ratio),
            "cusum_spread_down": spread_shape(1.0 / spread_ratio),
        }
        self.scores: NormalScores | None = None
        self._tables = np.zeros((0, 0), dtype=np.int64)
        self._warm_reset()

    def _warm_reset(self) -> None:
        self._buf: list[np.ndarray] = []
        self._nbuf = 0
        self.scores = None

    def _warm_take(self, seg: np.ndarray) -> tuple[int, bool]:
        need = self.warmup - self._nbuf
        return min(need, seg.shape[0]), seg.shape[0] >= need

    def _warm_add(self, seg: np.ndarray) -> None:
        self._buf.append(np.array(seg, dtype=np.float64))
        self._nbuf += seg.shape[0]
        self._ewma_add(seg)

    def _fit(self) -> None:
        ref = np.concatenate(self._buf) if self._buf else np.zeros(0)
        self._buf = [ref]
        self.scores = NormalScores(ref)
        fa = self.fa_rate / len(self.shapes)
        self.dets = []
        tables = []
        for name, shape in self.shapes.items():
            h = calibration.normal_cusum_threshold(shape, fa, ref.shape[0])
            self.dets.append(Cusum(name, int(h * SCALE)))
            tables.append(self.scores.table(shape))
        self._tables = np.stack(tables)  # (detectors, reference positions)

    def _increments(self, seg: np.ndarray) -> np.ndarray:
        assert self.scores is not None
        return self._tables[:, self.scores.positions(seg)]

    def _scan(self, seg: np.ndarray) -> list[tuple[int, int, int]]:
        sc = self.scores
        assert sc is not None
        out = table_scan(self.dets, seg, self._tables, BY_RANK_TIES if sc.ties else BY_RANK,
                         sc.ext)
        return super()._scan(seg) if out is None else out

    def _track(self, seg: np.ndarray) -> None:
        self._ewma_add(seg)

    def _alarm(self, det: int, s: int, run: int, index: int) -> Alarm:
        assert self.scores is not None
        name = self.dets[det].name
        shape = self.shapes[name]
        if "mean" in name:
            base, cur, sev = mean_alarm(self.scores, self.shift,
                                        1.0 if name.endswith("up") else -1.0, s, run)
        else:
            base, cur, sev = spread_alarm(self.scores, shape, s, run)
        return Alarm(index, name, base, cur, sev)

    def _baseline(self) -> float:
        return self.scores.median() if self.scores is not None else float("nan")

    def _dump(self) -> dict[str, state.Value]:
        if len(self._buf) > 1:  # one block from here on: the next dump copies less
            self._buf = [np.concatenate(self._buf)]
        return {"buf": self._buf[0] if self._buf else np.zeros(0)}

    def _load(self, r: state.Reader) -> None:
        buf = r.array("buf")
        self._buf = [buf]
        self._nbuf = buf.shape[0]
