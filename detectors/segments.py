"""Segments: which keys split a model's traffic, and which of their values get a monitor.

A segment key is a field of the interaction: ``model_version`` or a ``metadata.<path>``
(``metadata.tenant``, ``metadata.region``, ``metadata.a.b`` for nested objects). Its values
come from producers, so they are untrusted: a key keeps monitors for at most
``max_values`` of them (the busiest, re-ranked every ``rank_every`` interactions -- the
first time after a tenth of it -- by counts that decay with a half-life of
:data:`HALF_LIFE_RANKINGS` rankings; at least :data:`MIN_ADMIT`), and pools the rest --
values too rare to rank, absent ones, anything but a short string, number or boolean -- in
one segment named :data:`OTHER`. Memory is bounded per key: ``max_values + 1`` monitors and
a table of at most :meth:`SegmentConfig.table_size` counted values (:class:`ValueTable`).

Ranking is by interaction count, never by batch, so where a stream is cut into batches
(the worker's runs, replay's chunks, a restart from a checkpoint) does not change which
value gets a monitor when.

**The false-alarm budget is shared** (:meth:`SegmentConfig.rates`). The model's budget is
``alpha`` false alarms per interaction per signal. The model-level monitor keeps a share
``w`` of it (``model_share``, 1/2 by default); the ``m`` keys split the rest evenly. A key's
segments partition the model's interactions (each lands in exactly one of its
``max_values + 1`` monitors), so when each of them runs at ``(1 - w) alpha / m`` false
alarms per interaction *of its own*, together they raise ``(1 - w) alpha / m`` per
interaction of the model, however many segments there are and however the traffic is
spread across them. Over the model level and the ``m`` keys: ``alpha``. This is Bonferroni
(a union bound) over the ``m + 1`` partitions of the traffic, not over the segment count:
twenty segments cost no more detection power than two.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MODEL_VERSION = "model_version"
METADATA = "metadata."
OTHER = "other"  # the pooled segment (a value literally "other" joins it)
MAX_VALUE_CHARS = 128  # longer values are pooled, not cut (a cut could merge two values)
MAX_KEY_CHARS = 128
HALF_LIFE_RANKINGS = 4  # counts halve every 4 rankings
MIN_ADMIT = 20.0  # interactions (decayed) a value needs for a monitor, whatever its share
EVICT_RATIO = 2.0  # a value replaces the weakest monitored one when twice as busy
_DECAY = 0.5 ** (1.0 / HALF_LIFE_RANKINGS)
_PATH_PART = re.compile(r"[A-Za-z0-9_\-]+")
_MODEL_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def check_key(key: str) -> str:
    """``key`` if it names a segment key, else ValueError saying what one looks like."""
    key = key.strip()
    if key == MODEL_VERSION:
        return key
    parts = key[len(METADATA):].split(".") if key.startswith(METADATA) else []
    if (not parts or len(key) > MAX_KEY_CHARS
            or not all(_PATH_PART.fullmatch(p) for p in parts)):
        raise ValueError(f"segment key {key!r}: expected model_version or metadata.<name>"
                         "[.<name>...] (names of letters, digits, _ and -)")
    return key


def value_text(v: Any) -> str | None:
    """A segment value's text: a short printable string as it is, a number or boolean as
    JSON writes it; None (pooled) for anything else."""
    if isinstance(v, str):
        return v if 0 < len(v) <= MAX_VALUE_CHARS and v.isprintable() else None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**18 else None
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else None
    return None


def value_of(model_version: str | None, metadata: Mapping[str, Any] | None,
             key: str) -> str | None:
    """The value of segment key ``key`` of one interaction (None: absent, pooled)."""
    if key == MODEL_VERSION:
        return value_text(model_version)
    v: Any = metadata
    for part in key[len(METADATA):].split("."):
        if not isinstance(v, Mapping):
            return None
        v = v.get(part)
    return value_text(v)


def values_of(records: Sequence[Any], key: str) -> list[str | None]:
    """The values of ``key`` of records with ``model_version`` and ``metadata``
    attributes (the decoder's interactions)."""
    if key == MODEL_VERSION:
        return [value_text(r.model_version) for r in records]
    path = key[len(METADATA):]
    if "." in path:
        return [value_of(None, r.metadata, key) if r.metadata is not None else None
                for r in records]
    # One level (the common case): each distinct value checked once.
    memo: dict[str, Any] = {}
    out: list[str | None] = []
    for r in records:
        meta = r.metadata
        v = meta.get(path) if type(meta) is dict else None  # (the decoder's: plain dicts)
        if v is None:
            out.append(None)
            continue
        if v.__class__ is not str:  # (True == 1: numbers and booleans unmemoised)
            out.append(value_text(v))
            continue
        t = memo.get(v, memo)
        if t is memo:
            t = memo[v] = value_text(v)
        out.append(t)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class SegmentConfig:
    """The segments of one model.

    ``keys`` split its traffic; each keeps a monitor for at most ``max_values`` values with
    at least ``min_share`` of its recent traffic (the rest pooled as :data:`OTHER`),
    re-ranked every ``rank_every`` interactions. ``model_share`` of the false-alarm budget
    stays with the model-level monitor (see the module). A segment's monitor is fed once
    ``feed_rows`` of its interactions are waiting (each feed has a fixed cost) or at
    :meth:`SegmentedMonitor.flush`; the findings do not depend on how the stream is cut.
    """

    keys: tuple[str, ...]
    max_values: int = 20
    model_share: float = 0.5
    min_share: float = 0.01
    rank_every: int = 1000
    feed_rows: int = 2048

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a segment configuration needs at least one key")
        for k in self.keys:
            check_key(k)
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"segment keys repeat: {list(self.keys)}")
        if not 1 <= self.max_values <= 1000:
            raise ValueError("max_values must be within 1-1000")
        if not 0.0 < self.model_share < 1.0:
            raise ValueError("model_share must be in (0, 1)")
        if not 0.0 < self.min_share < 1.0:
            raise ValueError("min_share must be in (0, 1)")
        if self.rank_every < 10 or self.feed_rows < 1:
            raise ValueError("rank_every must be >= 10 and feed_rows >= 1")

    def rates(self, alpha: float) -> tuple[float, float]:
        """(model-level, per-segment) target false alarms per interaction per signal for a
        model whose budget is ``alpha`` (see the module)."""
        return alpha * self.model_share, alpha * (1.0 - self.model_share) / len(self.keys)

    def table_size(self) -> int:
        """Values a key counts at most (the ranking's memory)."""
        return 4 * self.max_values + 16


@dataclass(frozen=True)
class SegmentPlan:
    """Which models are segmented by which keys: ``default`` for every model, ``per_model``
    overrides (an empty tuple: that model is not segmented).

    >>> plan = SegmentPlan.parse("metadata.tenant; search=; chat=metadata.region,model_version")
    >>> plan.for_model("any").keys, plan.for_model("search"), plan.for_model("chat").keys
    (('metadata.tenant',), None, ('metadata.region', 'model_version'))
    """

    default: tuple[str, ...] = ()
    per_model: tuple[tuple[str, tuple[str, ...]], ...] = ()
    max_values: int = 20
    model_share: float = 0.5
    _configs: dict[str, SegmentConfig | None] = field(default_factory=dict, compare=False,
                                                      repr=False)

    @classmethod
    def parse(cls, text: str, max_values: int = 20, model_share: float = 0.5) -> SegmentPlan:
        """From ``"KEY[,KEY...]; MODEL=KEY[,KEY...]; MODEL="`` (``DRIFTLINE_SEGMENTS``): an
        entry without ``=`` applies to every model, ``MODEL=`` to one (empty: none)."""
        default: tuple[str, ...] | None = None
        per: dict[str, tuple[str, ...]] = {}
        for entry in (e.strip() for e in text.split(";")):
            if not entry:
                continue
            model, sep, keys = entry.rpartition("=") if "=" in entry else ("", "", entry)
            parsed = tuple(check_key(k) for k in keys.split(",") if k.strip())
            if sep:
                model = model.strip()
                if not _MODEL_ID.fullmatch(model):
                    raise ValueError(f"segments: {model!r} is not a model id")
                if model in per:
                    raise ValueError(f"segments: model {model!r} is configured twice")
                per[model] = parsed
            elif default is not None:
                raise ValueError("segments: more than one entry for every model (without "
                                 "MODEL=)")
            else:
                default = parsed
        plan = cls(default or (), tuple(sorted(per.items())), max_values, model_share)
        for model_id in [None, *per]:  # validate each configuration now
            plan.for_model(model_id or "")
        return plan

    def for_model(self, model_id: str) -> SegmentConfig | None:
        """The model's segment configuration, None when it is not segmented."""
        if model_id in self._configs:
            return self._configs[model_id]
        keys = dict(self.per_model).get(model_id, self.default)
        cfg = (SegmentConfig(keys, self.max_values, self.model_share) if keys else None)
        if len(self._configs) < 100_000:  # (model ids are untrusted: a bounded memo)
            self._configs[model_id] = cfg
        return cfg

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key some model is segmented by."""
        out = dict.fromkeys(self.default)
        for _, keys in self.per_model:
            out.update(dict.fromkeys(keys))
        return tuple(out)

    def __bool__(self) -> bool:
        return bool(self.keys)


class ValueTable:
    """A key's value counts: decayed over rankings, at most ``size`` values (the busiest),
    plus the counts of the ranking period in progress (at most ``size`` values; the rest
    are counted as overflow and never ranked)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.decayed: dict[str, float] = {}
        self.total = 0.0  # decayed count of every interaction (absent values included)
        self.period: dict[str, int] = {}
        self.period_n = 0  # interactions counted since the last ranking
        self.overflow = 0

    def add(self, values: Iterable[str | None], n: int) -> None:
        """Count ``n`` interactions' values."""
        self.period_n += n
        period = self.period
        for v, c in Counter(values).items():
            if v is None:
                continue
            if v in period or len(period) < self.size:
                period[v] = period.get(v, 0) + c
            else:
                self.overflow += c

    def close_period(self, keep: Iterable[str]) -> None:
        """Fold the period into the decayed counts; keep the busiest ``size`` values (and
        every value of ``keep``, the monitored ones)."""
        decayed = {v: c * _DECAY for v, c in self.decayed.items()}
        for v, c in self.period.items():
            decayed[v] = decayed.get(v, 0.0) + c
        self.total = self.total * _DECAY + self.period_n
        keep = set(keep)
        ranked = sorted(decayed, key=lambda v: (-decayed[v], v))
        kept = set(ranked[: self.size]) | (keep & set(decayed))
        self.decayed = {v: decayed[v] for v in ranked if v in kept}
        self.period = {}
        self.period_n = 0
        self.overflow = 0

    def rank(self, monitored: Sequence[str], max_values: int, min_share: float
             ) -> tuple[list[str], list[str]]:
        """(values to evict, values to admit), in that order, for at most ``max_values``
        monitored values: a value admitted needs ``min_share`` of the traffic (and
        :data:`MIN_ADMIT` interactions) and, when no
        slot is free, twice the count of the value it replaces; a monitored value below a
        quarter of ``min_share`` goes (its slot is free again)."""
        d = self.decayed
        floor = min_share * self.total
        evict = [v for v in monitored if d.get(v, 0.0) < floor / 4]
        kept = [v for v in monitored if v not in evict]
        admit: list[str] = []
        need = max(floor, MIN_ADMIT)
        cands = [v for v in sorted(d, key=lambda v: (-d[v], v))
                 if v not in monitored and v != OTHER and d[v] >= need]
        for v in cands:
            if len(kept) + len(admit) < max_values:
                admit.append(v)
                continue
            weakest = min(kept, key=lambda u: (d.get(u, 0.0), u), default=None)
            if weakest is None or d[v] <= EVICT_RATIO * d.get(weakest, 0.0):
                break  # (candidates come busiest first: none after it qualifies either)
            kept.remove(weakest)
            evict.append(weakest)
            admit.append(v)
        return evict, admit

    def entries(self) -> int:
        return len(self.decayed) + len(self.period)
