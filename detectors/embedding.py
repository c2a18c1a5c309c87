"""Embedding drift: distance to the nearest of k reference centroids, vectorised per batch.

A new topic shows up as traffic far from every reference centroid, even when
the overall centroid barely moves. The warm-up is split: the first ``fit``
vectors train a seeded spherical k-means, the next ``hold`` vectors give a
held-out distribution of ``1 - max cosine``. Two detectors watch it:

* ``novelty_cusum``: a Bernoulli CUSUM on "distance beyond the held-out
  ``quantile``". Distribution-free: the exceedance rate of an empirical
  quantile is Beta-distributed, and the threshold accounts for it (and for how
  far that rate moved across windows of the held-out stretch).
* ``distance_cusum_up``: a mean CUSUM on the distance's normal score, for a
  whole-distribution move (on its autoregression's residuals when the topic mix
  persists from one interaction to the next, see ``ScoreChain``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from driftline.detectors import calibration, state
from driftline.detectors.cusum import SCALE, Cusum, bernoulli_design
from driftline.detectors.kernels import scan_many
from driftline.detectors.rate import Windows
from driftline.detectors.scores import ScoreChain, mean_alarm, mean_shape
from driftline.detectors.signal import Alarm, Signal
from driftline.detectors.types import InvalidValue

FIT_BUFFER_BYTES = 800_000  # 1000 vectors of 384-d; fewer for wider embeddings
NOVEL_KEPT = 32  # the last interactions outside every centroid, for an alarm's explanation
MAX_HELD = 8192  # held-out distances a reference keeps as it learns from false alarms


def spherical_kmeans(x: np.ndarray, k: int, seed: int, iters: int = 25) -> np.ndarray:
    """Unit-norm centroids of unit-norm rows ``x`` (k-means++ init, cosine)."""
    n = x.shape[0]
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    idx = [int(rng.integers(n))]
    dist = 1.0 - x @ x[idx[0]]
    for _ in range(1, k):
        w = np.clip(dist.astype(np.float64), 0.0, None) ** 2
        total = w.sum()
        j = int(rng.choice(n, p=w / total)) if total > 0 else int(rng.integers(n))
        idx.append(j)
        dist = np.minimum(dist, 1.0 - x @ x[j])
    c = x[idx].copy()
    for _ in range(iters):
        lab = (x @ c.T).argmax(axis=1)
        onehot = np.zeros((k, n), dtype=x.dtype)
        onehot[lab, np.arange(n)] = 1.0
        sums = onehot @ x
        norms = np.linalg.norm(sums, axis=1)
        keep = norms > 0
        new = c.copy()
        new[keep] = sums[keep] / norms[keep, None]
        if np.array_equal(new, c):
            break
        c = new
    return c


def unit_rows(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows scaled to unit norm; a zero vector stays zero (distance 1 to all).

    Norms are taken in float64 so that huge (valid float32) components do not
    overflow, and tiny ones do not underflow, on the way to unit length.
    """
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))[:, None]
    return (x64 / np.maximum(norms, 1e-300)).astype(dtype, copy=False)


class EmbeddingSignal(Signal):
    """Embedding vectors of one fixed dimension, watched for novel regions."""

    kind = "embedding"

    def __init__(self, name: str, fa_rate: float, fit: int, hold: int, clusters: int = 32,
                 quantile: float = 0.97, rate_increase: float = 0.05, seed: int = 0,
                 max_order: int = 5, lrv: bool = True, dispersion: bool = True,
                 relearn: bool = True) -> None:
        super().__init__(name, fa_rate, relearn)
        self._fit_cfg = fit
        self.fit_n = fit
        self.hold_n = hold
        self.clusters = clusters
        self.quantile = quantile
        self.rate_increase = rate_increase
        self.seed = seed
        self.max_order = max_order
        self.lrv = lrv
        self.use_dispersion = dispersion
        self.dim = 0
        self.centroids: np.ndarray | None = None  # the reference in force
        self.chain: ScoreChain | None = None
        self.held = np.zeros(0)  # its held-out distances, in arrival order
        self.tau = math.nan
        self.p0 = math.nan
        self.cv = 0.0
        self._design = (1, 1.0)
        self._last_d = np.zeros(0)
        self._values: np.ndarray | None = None  # the vectors of the update() running
        self._base = 0  # values seen before them
        # The last NOVEL_KEPT values outside every centroid: index (in values seen),
        # nearest reference centroid, distance.
        self.novel = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
        self.novel_ids: list[str] = []  # their event ids, when the caller names its rows
        self.names: Sequence[str] | None = None  # event ids of the update() running's rows
        self._warm_reset()

    def check(self, x: np.ndarray) -> None:
        """Reject a batch of the wrong shape or with non-finite values."""
        if x.ndim != 2 or not 8 <= x.shape[1] <= 4096:
            raise InvalidValue(f"embedding: expected vectors of dimension 8-4096, got {x.shape}")
        if self.dim and x.shape[1] != self.dim:
            raise InvalidValue(f"embedding: dimension {x.shape[1]}, this model's is {self.dim}")
        if not np.isfinite(x).all():
            raise InvalidValue("embedding: NaN or Infinity in a vector")

    @staticmethod
    def distances_to(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
        """1 - max cosine similarity to the centroids, the same whatever the batch size.

        BLAS picks kernels by matrix shape, so a row's float32 product can differ in the
        last bit between batch sizes. In float64, rounded to float32, the result depends on
        the row alone (short of a ~1e-9 chance of straddling a float32 rounding boundary):
        restore-and-continue equals never stopping.
        """
        sims = unit_rows(x, np.float64) @ centroids.T.astype(np.float64)
        return (1.0 - sims.max(axis=1)).astype(np.float32).astype(np.float64)

    def distances(self, x: np.ndarray) -> np.ndarray:
        assert self.centroids is not None
        return self.distances_to(self.centroids, x)

    def update(self, values: np.ndarray, ts: np.ndarray) -> list[Alarm]:
        if values.shape[0] and not self.dim:
            self.dim = int(values.shape[1])
            self._cap_fit()
        self._values, self._base = values, self.seen
        try:
            return super().update(values, ts)
        finally:
            self._values = None

    def _cap_fit(self) -> None:
        """Bound the k-means buffer (float16) so a warming snapshot stays under ~0.8 MB."""
        cap = max(2 * self.clusters, FIT_BUFFER_BYTES // (2 * self.dim))
        self.fit_n = min(self._fit_cfg, cap)

    # -- warm-up (and candidate) ------------------------------------------------------------
    def _warm_reset(self) -> None:
        self._vecs: list[np.ndarray] = []
        self._nvecs = 0
        self._cand: np.ndarray | None = None  # the candidate's centroids once fitted
        self._held: list[np.ndarray] = []
        self._nheld = 0
        # The candidate's distances to the reference in force (see _relearned).
        self._cand_ref: list[np.ndarray] = []

    def _warm_take(self, seg: np.ndarray) -> tuple[int, bool]:
        if self._nvecs < self.fit_n:
            return min(self.fit_n - self._nvecs, seg.shape[0]), False
        need = self.hold_n - self._nheld
        return min(need, seg.shape[0]), seg.shape[0] >= need

    def _warm_add(self, seg: np.ndarray, ts: np.ndarray) -> None:
        if self._nvecs < self.fit_n:
            # Unit rows in float16 keep the warm-up buffer (and its snapshot) small;
            # k-means only needs directions, and unit components fit float16.
            self._vecs.append(unit_rows(seg).astype(np.float16))
            self._nvecs += seg.shape[0]
            if self._nvecs >= self.fit_n:
                self._fit_centroids()
            return
        assert self._cand is not None
        d = self.distances_to(self._cand, seg)
        self._held.append(d)
        self._nheld += d.shape[0]

    def _fit_centroids(self) -> None:
        x = unit_rows(np.concatenate(self._vecs).astype(np.float32))
        # Held in float16 precision (exactly what a snapshot stores): half the state.
        c = spherical_kmeans(x, self.clusters, self.seed)
        self._cand = c.astype(np.float16).astype(np.float32)
        self._vecs = []  # the centroids are the state from here on

    def _fit(self) -> None:
        assert self._cand is not None
        held = np.concatenate(self._held) if self._held else np.zeros(1)
        self.novel = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
        self.novel_ids = []
        self._install(self._cand, held)
        self._warm_reset()

    def _install(self, centroids: np.ndarray, held: np.ndarray) -> None:
        self.centroids = centroids
        self.held = held
        n = held.shape[0]
        fa = self.fa_rate / 2
        self.chain = ScoreChain(held, [mean_shape(0.5)], fa, self.max_order, self.lrv)
        ref = self.chain.marginal.ref
        # Exceed the k-th largest held-out distance: P ~ Beta(k, n + 1 - k).
        k = max(1, min(n, math.ceil((1.0 - self.quantile) * (n + 1))))
        self.tau = float(ref[n - k])
        self.p0 = k / (n + 1)
        counts = Windows()
        counts.add((held > self.tau).astype(np.float64))
        self.cv = counts.dispersion(self.p0) if self.use_dispersion else 0.0
        p1 = min(self.p0 + self.rate_increase, 0.5 + self.p0 / 2)
        a, unit = bernoulli_design(self.p0, p1 / self.p0)
        h = calibration.bernoulli_threshold(a, unit, self.p0, float(k), fa, True, self.cv)
        self._design = (a, unit)
        self.dets = [Cusum("novelty_cusum", h),
                     Cusum("distance_cusum_up", int(self.chain.h[0] * SCALE))]

    # -- monitoring -------------------------------------------------------------------------
    def _scan(self, seg: np.ndarray, ts: np.ndarray) -> list[tuple[int, int, int]]:
        chain = self.chain
        assert chain is not None
        d = self.distances(seg)
        self._last_d = d
        a = self._design[0]
        x = chain.scan_values(d)
        scanned = chain.scanned
        return scan_many(self.dets, [np.where(d > self.tau, a, -1),
                                     chain.tables[0][scanned.positions(x)]])

    def _track(self, seg: np.ndarray, ts: np.ndarray) -> None:
        assert self.chain is not None
        k = seg.shape[0]
        if self.relearning:
            self._cand_ref.append(self._last_d[:k].copy())
        outside = self._last_d[:k] > self.tau
        self._ewma_add(outside.astype(np.float64))
        self.chain.advance(k)
        if outside.any() and self._values is not None and self.centroids is not None:
            self._keep_novel(seg, np.flatnonzero(outside))

    def _relearned(self) -> None:
        """A candidate that showed no change (the alarm was false): the topic mix moves more
        than the held-out stretch showed (a stretch of one warm-up cannot see shares that
        wander over longer than that). The candidate's distances to the reference join its
        held-out ones (the newest :data:`MAX_HELD`), and the quantile, the dispersion of
        the rate beyond it, the dependence and the thresholds are estimated again; the
        centroids stay."""
        if not self.persisted and self._cand_ref and self.centroids is not None:
            grown = np.concatenate([self.held, *self._cand_ref])[-MAX_HELD:]
            self._install(self.centroids, grown)
        super()._relearned()

    def _keep_novel(self, seg: np.ndarray, rows: np.ndarray) -> None:
        """Remember the newest of ``seg[rows]`` (outside every centroid) for explanations.
        ``seg`` is a slice of the values passed to :meth:`update`, which gives its place."""
        assert self._values is not None and self.centroids is not None
        rows = rows[-NOVEL_KEPT:]
        start = ((seg.__array_interface__["data"][0]
                  - self._values.__array_interface__["data"][0]) // self._values.strides[0])
        sims = unit_rows(seg[rows], np.float64) @ self.centroids.T.astype(np.float64)
        at, near, dist = self.novel
        names = self.names
        got = ([names[i] for i in (start + rows).tolist()] if names is not None
               else [""] * rows.shape[0])
        self.novel_ids = (self.novel_ids + got)[-NOVEL_KEPT:]
        self.novel = (np.concatenate([at, self._base + start + rows])[-NOVEL_KEPT:],
                      np.concatenate([near, sims.argmax(axis=1)])[-NOVEL_KEPT:],
                      np.concatenate([dist, self._last_d[rows]])[-NOVEL_KEPT:])

    def _det_scale(self, det: Cusum) -> float:
        return 1.0 / self._design[1] if det is self.dets[0] else float(SCALE)

    def _alarm(self, det: int, s: int, run: int, index: int) -> Alarm:
        assert self.chain is not None
        name = self.dets[det].name
        if det == 0:
            a = self._design[0]
            run = max(run, 1)
            cur = min(max((s + run) / (a + 1) / run, 0.0), 1.0)
            sd = math.sqrt(self.p0 * (1.0 - self.p0))
            return Alarm(index, name, self.p0, cur, abs(cur - self.p0) / sd,
                         explanation=self._explain(det, s, run, index))
        base, cur, sev = mean_alarm(self.chain, 0.5, 1.0, s, run)
        return Alarm(index, name, base, cur, sev,
                     explanation=self._explain(det, s, run, index))

    def _explain(self, det: int, s: int, run: int, index: int) -> dict[str, Any]:
        """An alarm's excursion (the ``run`` values up to it) in the reference's terms: how
        many of its interactions fell outside every reference centroid (beyond the held-out
        quantile of the distance), the reference centroid nearest to most of them and their
        median distance, and an exemplar of the new region (``exemplar_index``, into the
        values passed to :meth:`update`; ``exemplar_event_id`` when the caller named the
        rows, :attr:`names`): the one of them at their median distance, else the interaction
        that raised the alarm.

        Exact whatever the batches: the novelty detector's count follows from its statistic
        (each value outside adds ``a``, each inside takes 1), the distance detector's from
        the last :data:`NOVEL_KEPT` values outside (``at_least`` when they do not reach back
        to the excursion's start); the centroid from those too (checkpointed with the
        signal)."""
        run = max(run, 1)
        at = self._base + index
        began = at - run + 1
        kept_at, near, dist = self.novel
        inside = (kept_at >= began) & (kept_at <= at)
        out: dict[str, Any] = {"distance_threshold": self.tau, "of_interactions": run}
        if det == 0:  # s = a k - (run - k)
            out["outside_centroids"] = round((s + run) / (self._design[0] + 1))
        else:
            out["outside_centroids"] = int(inside.sum())
            if kept_at.shape[0] == NOVEL_KEPT and kept_at[0] > began:
                out["at_least"] = True
        if inside.any():
            counts = np.bincount(near[inside])
            out["nearest_centroid"] = int(counts.argmax())
            out["nearest_centroid_distance"] = float(np.median(dist[inside]))
        # A typical member of the new region: of the interactions outside every centroid in
        # this update, the one at the median distance (the in-distribution tail just
        # beyond the quantile is nearer); else the trigger.
        ids = self.novel_ids if len(self.novel_ids) == kept_at.shape[0] else []
        named = np.array([bool(i) for i in ids], dtype=bool).reshape(-1)
        mine = np.flatnonzero(inside & named) if ids else np.zeros(0, dtype=np.int64)
        if mine.shape[0]:
            d = dist[mine]
            out["exemplar_event_id"] = ids[int(mine[np.argmin(np.abs(d - np.median(d)))])]
        else:
            out["exemplar_index"] = index
        return out

    def _baseline(self) -> float:
        return self.p0

    # -- state ------------------------------------------------------------------------------
    def _dump(self) -> dict[str, state.Value]:
        empty = np.zeros((0, max(self.dim, 1)), dtype=np.float16)
        if len(self._vecs) > 1:  # one block from here on: the next dump copies less
            self._vecs = [np.concatenate(self._vecs)]
        if len(self._held) > 1:
            self._held = [np.concatenate(self._held)]
        if len(self._cand_ref) > 1:
            self._cand_ref = [np.concatenate(self._cand_ref)]
        return {
            "dim": self.dim, "nvecs": self._nvecs,
            "vecs": self._vecs[0] if self._vecs else empty,
            "cand": self._cand.astype(np.float16) if self._cand is not None else empty,
            "held": self._held[0] if self._held else np.zeros(0),
            # (float32 values: distances_to rounds them)
            "cand_ref": (self._cand_ref[0] if self._cand_ref else np.zeros(0)).astype(np.float32),
            "centroids": (self.centroids.astype(np.float16) if self.centroids is not None
                          else empty),
            "ref_held": self.held.astype(np.float32),
            "filter": self.chain.state.copy() if self.chain is not None else np.zeros(0),
            "novel_at": self.novel[0], "novel_c": self.novel[1],
            # (distances are float32 values: distances_to rounds them)
            "novel_d": self.novel[2].astype(np.float32),
            "novel_ids": orjson.dumps(self.novel_ids).decode(),
        }

    def _load(self, r: state.Reader) -> None:
        if r.has("novel_at"):
            self.novel = (r.array("novel_at"), r.array("novel_c"),
                          r.array("novel_d").astype(np.float64))
        if r.has("novel_ids"):
            self.novel_ids = [str(i) for i in orjson.loads(str(r.text("novel_ids")))]
        self.dim = r.integer("dim")
        if self.dim:
            self._cap_fit()
        vecs = r.array("vecs")
        held = r.array("held")
        self._vecs = [vecs] if vecs.shape[0] else []
        self._nvecs = r.integer("nvecs")
        self._held = [held] if held.shape[0] else []
        self._nheld = held.shape[0]
        if r.has("cand_ref"):  # (an earlier build did not keep them)
            cand_ref = r.array("cand_ref").astype(np.float64)
            self._cand_ref = [cand_ref] if cand_ref.shape[0] else []
        if r.has("cand"):
            cand = r.array("cand")
            self._cand = cand.astype(np.float32) if cand.shape[0] else None
        else:  # an earlier build: the warm-up's centroids were the reference's
            c = r.array("centroids")
            self._cand = c.astype(np.float32) if c.shape[0] else None

    def _restore_reference(self, r: state.Reader) -> None:
        if r.has("ref_held"):
            c = r.array("centroids").astype(np.float32)
            vecs, nvecs, cand, held, nheld, cand_ref = (
                self._vecs, self._nvecs, self._cand, self._held, self._nheld, self._cand_ref)
            self._install(c, r.array("ref_held").astype(np.float64))
            self._vecs, self._nvecs, self._cand, self._held, self._nheld, self._cand_ref = (
                vecs, nvecs, cand, held, nheld, cand_ref)
            if self.chain is not None:
                self.chain.state = r.array("filter")
        else:  # an earlier build: the warm-up's held distances were the reference
            self._fit()
