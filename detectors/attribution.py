"""Which segments moved a model-level detector: its statistic split by segment.

A CUSUM's statistic at an alarm is the sum of its increments over the excursion that
raised it (the detector's run, ``Finding.window`` values of the signal). Every increment
belongs to one interaction, so to one segment of each key: a segment's contribution is the
sum of its interactions' increments, and its **share** is its contribution over the sum of
the positive contributions (segments that held the statistic back have none).

The increments are the detector's log-likelihood ratios against the model-level reference,
recomputed from the recent values kept here (the last :data:`RECENT` of each signal, with
their segments): a scalar signal's normal score against the reference sample (mean up or
down by ``mean_shift`` SDs, spread by ``spread_ratio``), a rate's Bernoulli ratio at its
design alternative, the embedding's novelty (beyond the held-out distance quantile of the
nearest reference centroid). They leave out the detector's time-of-day and autocorrelation
adjustments, so the shares are the detector's to within those. The recent values are
checkpointed with the model (:meth:`Recent.fields`), so an alarm after a restart inside an
excursion is attributed over the whole excursion, as without the restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from driftline.detectors import state
from driftline.detectors.embedding import EmbeddingSignal
from driftline.detectors.rate import RateSignal
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.signal import Signal
from scipy.special import ndtri

RECENT = 4096  # values of each signal kept for attribution
TOP = 3  # segments named per key


class Recent:
    """The last :data:`RECENT` values of one signal with each one's segment per key."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self.values = np.full(RECENT, np.nan)
        self.labels = np.full((len(self.keys), RECENT), None, dtype=object)
        self.n = 0  # values ever added (the ring position is n % RECENT)

    def add(self, values: np.ndarray, labels: Sequence[np.ndarray]) -> None:
        k = values.shape[0]
        if k > RECENT:
            values = values[-RECENT:]
            labels = [lab[-RECENT:] for lab in labels]
            self.n += k - RECENT
            k = RECENT
        at = (self.n + np.arange(k)) % RECENT
        self.values[at] = values
        for i, lab in enumerate(labels):
            self.labels[i, at] = lab
        self.n += k

    def fields(self, p: str) -> dict[str, state.Value]:
        """The values held, oldest first, under ``p``: ``n``, ``values`` and per key the
        distinct labels (JSON) and each value's label as 1 + its index among them (0: no
        label; one byte each while a key has fewer than 255 labels, as it does when its
        segments are capped that low)."""
        count = min(self.n, RECENT)
        at = (self.n - count + np.arange(count)) % RECENT
        out: dict[str, state.Value] = {p + "n": self.n, p + "values": self.values[at].copy()}
        for i, lab in enumerate(self.labels[:, at]):
            names = sorted({v for v in lab.tolist() if v is not None})
            index = {v: j for j, v in enumerate(names)}
            out[f"{p}{i}.names"] = orjson.dumps(names).decode()
            out[f"{p}{i}.codes"] = np.array(
                [0 if v is None else index[v] + 1 for v in lab.tolist()],
                dtype=np.uint8 if len(names) < 255 else np.int64)
        return out

    def load(self, r: state.Reader, p: str) -> None:
        """Take back :meth:`fields` (a checkpoint from before they were kept: none)."""
        if not r.has(p + "n"):
            return
        values = r.array(p + "values")
        count = values.shape[0]
        n = r.integer(p + "n")
        if count != min(n, RECENT):
            raise ValueError(f"snapshot field {p}values: {count} values for n={n}")
        at = (n - count + np.arange(count)) % RECENT
        self.values[at] = values
        for i in range(len(self.keys)):
            names = [None, *orjson.loads(str(r.text(f"{p}{i}.names")))]
            codes = r.array(f"{p}{i}.codes").astype(np.int64)
            if codes.shape != (count,) or (count and not 0 <= codes.min() <= codes.max()
                                           < len(names)):
                raise ValueError(f"snapshot field {p}{i}.codes does not match its names")
            self.labels[i, at] = np.array(names, dtype=object)[codes]
        self.n = n

    def last(self, count: int, upto: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` values (and labels) up to value number ``upto`` (exclusive)."""
        count = max(0, min(count, RECENT, upto, RECENT - (self.n - upto)))
        at = (upto - count + np.arange(count)) % RECENT
        return self.values[at], self.labels[:, at]


def increments(signal: Signal, detector: str, x: np.ndarray, mean_shift: float,
               spread_ratio: float, rate_ratio: float, rate_increase: float,
               rate_floor: float) -> np.ndarray | None:
    """Each value's increment of ``detector`` of the model-level ``signal`` (None: the
    signal has no reference to compare with)."""
    if isinstance(signal, ScalarSignal):
        ref = np.sort(signal.reference)
        if not ref.size:
            return None
        lo = np.searchsorted(ref, x, "left")
        hi = np.searchsorted(ref, x, "right")
        z = ndtri((lo + hi + 1.0) / (2.0 * (ref.size + 1.0)))
        if detector.startswith("cusum_mean"):
            d = mean_shift if detector.endswith("up") else -mean_shift
            return d * z - d * d / 2.0
        r = spread_ratio if detector.endswith("up") else 1.0 / spread_ratio
        return z * z * (1.0 - 1.0 / (r * r)) / 2.0 - math.log(r)
    if isinstance(signal, RateSignal | EmbeddingSignal):
        p0 = max(float(signal.p0), rate_floor)
        if not 0.0 < p0 < 1.0:
            return None
        if isinstance(signal, EmbeddingSignal):
            p1 = min(p0 + rate_increase, 0.5 + p0 / 2)
        else:
            p1 = min(p0 * rate_ratio, 0.999) if detector.endswith("up") else p0 / rate_ratio
        return np.where(x > 0.5, math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0)))
    return None


def attribute(inc: np.ndarray, x: np.ndarray, labels: np.ndarray, keys: Sequence[str],
              scalar: bool) -> list[dict[str, Any]]:
    """Per key, the :data:`TOP` segments with the largest positive contribution: segment,
    share, interactions in the window and their ``current`` value (a scalar signal's
    median, a rate's share)."""
    out: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        ok = ~np.isnan(inc) & (labels[i] != None)  # noqa: E711 - elementwise (delayed labels)
        names, inv = np.unique(labels[i][ok].astype(str), return_inverse=True)
        contrib = np.bincount(inv, weights=inc[ok], minlength=names.shape[0])
        counts = np.bincount(inv, minlength=names.shape[0])
        pos = np.maximum(contrib, 0.0)
        total = float(pos.sum())
        if total <= 0:
            continue
        for j in sorted(np.flatnonzero(pos > 0).tolist(),
                        key=lambda j: (-pos[j], names[j]))[:TOP]:
            vals = x[ok][inv == j]
            cur = float(np.median(vals)) if scalar else float(vals.mean())
            out.append({"segment": {key: str(names[j])},
                        "share": round(float(pos[j]) / total, 4),
                        "interactions": int(counts[j]), "current": cur})
    return out


def novelty(signal: EmbeddingSignal, x: np.ndarray) -> np.ndarray:
    """1.0 where a vector lies beyond the reference's held-out distance quantile (NaN while
    there is no reference): float32, enough for attribution."""
    if signal.centroids is None:
        return np.full(x.shape[0], np.nan)
    x32 = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x32, x32))
    sims = (x32 @ signal.centroids.T).max(axis=1) / np.maximum(norms, 1e-30)
    return ((1.0 - sims) > signal.tau).astype(np.float64)


def share_of(attribution: Sequence[Mapping[str, Any]], key: str, value: str) -> float:
    """The share the attribution gives one segment (0 when it is not named)."""
    return next((float(a["share"]) for a in attribution
                 if a["segment"].get(key) == value), 0.0)
