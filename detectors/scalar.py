"""Scalar behaviour signals (latency, output length): mean and spread CUSUMs on normal scores."""

from __future__ import annotations

import math

import numpy as np
from driftline.detectors import state
from driftline.detectors.cusum import Cusum
from driftline.detectors.dependence import BatchMeans
from driftline.detectors.kernels import table_scan
from driftline.detectors.scores import (
    ScoreChain,
    mean_alarm,
    mean_shape,
    spread_alarm,
    spread_shape,
)
from driftline.detectors.season import SeasonalProfile
from driftline.detectors.signal import Alarm, Signal

MIN_EFFECTIVE = 200  # a warm-up worth fewer independent values than this says so
GROWTH = 3  # the first history window is this many references long; each next one as long
# as the history before it


class ScalarSignal(Signal):
    """A non-negative measurement watched for shifts in level and in spread.

    Four one-sided CUSUMs on the value's normal score against the warm-up reference (or on
    the normal score of its autoregression's residual, see :class:`ScoreChain`): mean
    up/down (design shift ``shift`` reference SDs) and spread up/down (design ratio
    ``spread_ratio``), each calibrated for a quarter of the signal's false-alarm budget,
    for the long-run variance of its own increments and the warm-up's estimation error.
    With a ``season``, values are compared after taking out their time of day's offset.
    """

    def __init__(self, name: str, fa_rate: float, warmup: int, shift: float = 0.5,
                 spread_ratio: float = 1.5, max_order: int = 5, lrv: bool = True,
                 season: SeasonalProfile | None = None, relearn: bool = True) -> None:
        super().__init__(name, fa_rate, relearn)
        self.warmup = warmup
        self.shift = shift
        self.spread_ratio = spread_ratio
        self.max_order = max_order
        self.lrv = lrv
        self.season = season
        self.shapes = {
            "cusum_mean_up": mean_shape(shift),
            "cusum_mean_down": mean_shape(-shift),
            "cusum_spread_up": spread_shape(spread_ratio),
            "cusum_spread_down": spread_shape(1.0 / spread_ratio),
        }
        self.chain: ScoreChain | None = None
        self.reference = np.zeros(0)  # the reference's values (raw), in arrival order
        self.reference_phases = np.zeros(0, dtype=np.uint8)  # their bins (with a season)
        self._profile_version = -1  # the profile the chain's ranks were taken with
        # The history of the scanned scores (and their squares) in batch means, for a
        # long-run variance a warm-up is too short to show; the window being filled joins
        # it if the detectors stayed quiet over it.
        self.history = (BatchMeans(), BatchMeans())
        self._window = (BatchMeans(), BatchMeans())
        self._wn = 0
        # The window that led up to an alarm and the candidate's scores, until the
        # candidate's verdict (see _relearned).
        self._held = (BatchMeans(), BatchMeans())
        self._warm_reset()

    # -- warm-up ----------------------------------------------------------------------------
    def _warm_reset(self) -> None:
        self._buf: list[np.ndarray] = []
        self._tbuf: list[np.ndarray] = []
        self._nbuf = 0
        self._cand = (BatchMeans(), BatchMeans())

    def _warm_take(self, seg: np.ndarray) -> tuple[int, bool]:
        need = self.warmup - self._nbuf
        return min(need, seg.shape[0]), seg.shape[0] >= need

    def _warm_add(self, seg: np.ndarray, ts: np.ndarray) -> None:
        self._buf.append(np.array(seg, dtype=np.float64))
        if self.season is not None:
            self._tbuf.append(self.season.phases(ts))
        self._nbuf += seg.shape[0]
        if not self.dets:  # a warm-up: nothing else watches these values
            self._ewma_add(seg)
            if self.season is not None:
                self._learn_season(seg, ts)

    def _fit(self) -> None:
        self._held = (BatchMeans(), BatchMeans())
        raw = np.concatenate(self._buf) if self._buf else np.zeros(0)
        phases = (np.concatenate(self._tbuf) if self._tbuf
                  else np.zeros(0, dtype=np.uint8))
        self._install(raw, phases)
        self._warm_reset()

    def _install(self, raw: np.ndarray, phases: np.ndarray) -> None:
        """Reference values in arrival order, with their seasonal bins (with a season)."""
        self.reference, self.reference_phases = raw, phases
        ref = self._reference_adjusted()
        fa = self.fa_rate / len(self.shapes)
        self.chain = ScoreChain(ref, list(self.shapes.values()), fa, self.max_order, self.lrv)
        self._profile_version = self.season.version if self.season is not None else -1
        self.dets = [Cusum(name, int(h * (1 << 24)))
                     for name, h in zip(self.shapes, self.chain.h, strict=True)]

    # -- monitoring -------------------------------------------------------------------------
    def _reference_adjusted(self) -> np.ndarray:
        if self.season is None or self.reference_phases.shape != self.reference.shape:
            return self.reference
        return self.season.adjust_phases(self.reference, self.reference_phases)

    def _adjusted(self, seg: np.ndarray, ts: np.ndarray) -> np.ndarray:
        if self.season is None or ts.shape != seg.shape:  # (no season; an old snapshot)
            return seg
        return self.season.adjust(seg, ts)

    def _window_size(self) -> int:
        """Values of the history window being filled."""
        assert self.chain is not None
        return max(GROWTH * self.chain.n_ref, int(self.history[0].values))

    def _due(self) -> int:
        """Values until the history window is complete (at least 1)."""
        return max(self._window_size() - self._wn, 1)

    def _step(self, values: np.ndarray, ts: np.ndarray) -> int:
        n = int(values.shape[0]) if self.season is None else self.season.until_next_bin(ts)
        return n if self.relearning or not self.lrv else min(n, self._due())

    def _stepped(self, n: int) -> None:
        if not self.lrv or self._wn < self._window_size():
            return
        chain = self.chain
        assert chain is not None
        if all(4 * d.s < d.h for d in self.dets):  # quiet: the window joins the history
            self._learn(self._window)
        self._window = (BatchMeans(), BatchMeans())
        self._wn = 0

    def _learn(self, *windows: tuple[BatchMeans, BatchMeans]) -> None:
        """Windows join the history; the thresholds follow its long-run variance."""
        chain = self.chain
        assert chain is not None
        for w in windows:
            self.history[0].merge(w[0])
            self.history[1].merge(w[1])
        hs = chain.recalibrate(self.history[0].lrv(1.0), self.history[1].lrv(2.0))
        for d, h in zip(self.dets, hs, strict=True):
            d.h = int(h * (1 << 24))
            d.s = min(d.s, d.h - 1)

    def _alarmed(self) -> None:
        # What led up to the alarm waits for the candidate's verdict (an alarm of a change
        # already persisting adds nothing to it).
        if self.relearning and not self.persisted:
            self._held[0].merge(self._window[0])
            self._held[1].merge(self._window[1])
        self._window = (BatchMeans(), BatchMeans())
        self._wn = 0

    def _relearned(self) -> None:
        """A candidate that showed no change (the alarm was false): the window that led up
        to the alarm and the candidate's scores join the history, whose long-run variance
        sets the thresholds. Only quiet windows joined it before, which kept out the very
        stretches where the dependence shows (a warm-up of a strongly autocorrelated series
        is worth few independent values, and its fit is rough)."""
        if (not self.persisted and self.lrv and self.chain is not None
                and len(self.dets) == len(self.shapes)):  # (a river bank keeps no history)
            self._learn(self._held, self._cand)
        self._held = (BatchMeans(), BatchMeans())
        super()._relearned()

    def _scan(self, seg: np.ndarray, ts: np.ndarray) -> list[tuple[int, int, int]]:
        chain = self.chain
        assert chain is not None
        if self.season is not None:
            self.season.begin(ts)
            if self.season.version != self._profile_version:  # it learned a bin more
                chain.rerank(self._reference_adjusted())
                self._profile_version = self.season.version
        x = chain.scan_values(self._adjusted(seg, ts))
        return table_scan(self.dets, x, chain.tables, chain.mode, chain.scanned.ext)

    def _track(self, seg: np.ndarray, ts: np.ndarray) -> None:
        assert self.chain is not None
        self._ewma_add(seg)
        if self.lrv:
            r = self.chain.scores(seg.shape[0])
            window = self._cand if self.relearning else self._window
            window[0].add(r)
            window[1].add(r * r)
            if not self.relearning:
                self._wn += seg.shape[0]
        self.chain.advance(seg.shape[0])
        if self.season is not None:
            self.season.take(seg)

    def _learn_season(self, seg: np.ndarray, ts: np.ndarray) -> None:
        assert self.season is not None
        self.season.learn(seg, ts)

    def _alarm(self, det: int, s: int, run: int, index: int) -> Alarm:
        assert self.chain is not None
        name = self.dets[det].name
        shape = self.shapes[name]
        if "mean" in name:
            base, cur, sev = mean_alarm(self.chain, self.shift,
                                        1.0 if name.endswith("up") else -1.0, s, run)
        else:
            base, cur, sev = spread_alarm(self.chain, shape, s, run)
        return Alarm(index, name, base, cur, sev)

    def _baseline(self) -> float:
        return self.chain.marginal.median() if self.chain is not None else math.nan

    def warnings(self) -> list[str]:
        chain = self.chain
        if chain is None or chain.ar.n_eff >= MIN_EFFECTIVE:
            return []
        return [f"{self.name}: the warm-up's {chain.ar.n} values are worth "
                f"{chain.ar.n_eff:.0f} independent ones (autocorrelation "
                f"{sum(chain.ar.phi):.2f}): its reference level is uncertain"]

    # -- state ------------------------------------------------------------------------------
    def _dump(self) -> dict[str, state.Value]:
        if len(self._buf) > 1:  # one block from here on: the next dump copies less
            self._buf = [np.concatenate(self._buf)]
            if self._tbuf:
                self._tbuf = [np.concatenate(self._tbuf)]
        out: dict[str, state.Value] = {
            "buf": self._buf[0] if self._buf else np.zeros(0),
            "ref": self.reference,
        }
        if self.season is not None:
            out["ref_phase"] = self.reference_phases
        if self.season is not None:
            out["tbuf"] = self._tbuf[0] if self._tbuf else np.zeros(0, dtype=np.uint8)
            out.update(self.season.dump("season"))
        if self.chain is not None:
            out["filter"] = self.chain.state.copy()
        for name, bm in self._batch_means():
            if name.startswith(("held", "cand")) and not self.relearning:
                continue  # (empty outside a relearning)
            out[f"{name}.stats"] = bm.stats.copy()
            out[f"{name}.open"] = bm.open.copy()
        out["wn"] = self._wn
        return out

    def _batch_means(self) -> tuple[tuple[str, BatchMeans], ...]:
        return (("hist_r", self.history[0]), ("hist_r2", self.history[1]),
                ("win_r", self._window[0]), ("win_r2", self._window[1]),
                ("held_r", self._held[0]), ("held_r2", self._held[1]),
                ("cand_r", self._cand[0]), ("cand_r2", self._cand[1]))

    def _load(self, r: state.Reader) -> None:
        for name, bm in self._batch_means():
            if r.has(f"{name}.stats"):  # (earlier builds kept fewer)
                bm.load(r.array(f"{name}.stats"), r.array(f"{name}.open"))
        self._wn = r.integer("wn") if r.has("wn") else 0
        buf = r.array("buf")
        self._buf = [buf] if buf.shape[0] else []
        self._nbuf = buf.shape[0]
        if self.season is not None:
            if r.has("season.sum"):
                self.season.load(r.sub("season"))
            tbuf = r.array("tbuf") if r.has("tbuf") else np.zeros(0, dtype=np.uint8)
            self._tbuf = [tbuf] if tbuf.shape[0] else []

    def _restore_reference(self, r: state.Reader) -> None:
        if r.has("ref"):
            buf, tbuf = self._buf, self._tbuf
            nbuf = self._nbuf
            self._install(r.array("ref"), r.array("ref_phase") if r.has("ref_phase")
                          else np.zeros(0, dtype=np.uint8))
            self._buf, self._tbuf, self._nbuf = buf, tbuf, nbuf
            if self.chain is not None and r.has("filter"):
                self.chain.state = r.array("filter")
            if self.chain is not None and self.lrv and len(self.dets) == len(self.shapes):
                hs = self.chain.recalibrate(self.history[0].lrv(1.0), self.history[1].lrv(2.0))
                for d, h in zip(self.dets, hs, strict=True):
                    d.h = int(h * (1 << 24))
        else:  # a snapshot of an earlier build: the warm-up buffer was the reference
            self._fit()
