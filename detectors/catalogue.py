"""The signal catalogue: every monitored signal, once.

A :class:`SignalSpec` names a signal, the interaction field it reads, its drift kind and
units, how its values are checked and turned into what its detector watches, and the
factory of that detector. The monitor builds its signals from :data:`SIGNALS`; the worker
reads its columns, the metrics their labels, calibration priming its example values and
the report its units from here. Adding a signal is one module (its ``Signal``) and one
entry here (:func:`register` for a signal of your own). :class:`MonitorConfig`, the
settings those factories build with, lives here too: it names the catalogue's signals
(``detectors``) and the catalogue builds from it, one concept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from driftline.detectors.embedding import EmbeddingSignal
from driftline.detectors.rate import RateSignal
from driftline.detectors.scalar import ScalarSignal
from driftline.detectors.season import SeasonalProfile
from driftline.detectors.signal import Signal

# How a column's values are checked before any state changes (and what is refused).
NONNEG = "a finite number >= 0"
BOOL = "true or false"
FEEDBACK = "-1, 0 or 1"


@dataclass(frozen=True)
class SignalSpec:
    """One monitored signal: what it reads and how it is watched.

    ``field`` is the interaction's field (``embedding`` for the vectors); ``values``
    turns the checked column into what the detector sees (e.g. ``correct`` into errors);
    ``build(config, fa_rate, season)`` makes its detector; ``example(rng, n)`` draws
    plausible values (to compile and calibrate before the first real warm-up ends).
    """

    name: str
    field: str
    kind: str
    units: str
    check: str
    build: Callable[[MonitorConfig, float, SeasonalProfile | None], Signal]
    example: Callable[[np.random.Generator, int], np.ndarray]
    values: Callable[[np.ndarray], np.ndarray] = dataclasses.field(default=lambda v: v)
    seasonal: bool = False  # values follow the clock (a profile by time of day applies)

    @property
    def columnar(self) -> bool:
        """Read from a float column (NaN where absent); embeddings come as a matrix."""
        return self.field != "embedding"


def _scalar(name: str) -> Callable[[MonitorConfig, float, SeasonalProfile | None], Signal]:
    def build(c: MonitorConfig, fa: float, season: SeasonalProfile | None) -> Signal:
        args = (name, fa, c.warmup, c.mean_shift, c.spread_ratio,
                c.max_ar_order if c.dependence == "ar" else 0, c.dependence == "ar", season,
                c.relearn)
        kind = c.detector_of(name)
        if kind != "cusum":
            from driftline.detectors.river_detectors import RiverSignal

            return RiverSignal(kind, *args)
        return ScalarSignal(*args)
    return build


def _rate(name: str, down: bool, kind: str = "behavior"
          ) -> Callable[[MonitorConfig, float, SeasonalProfile | None], Signal]:
    def build(c: MonitorConfig, fa: float, season: SeasonalProfile | None) -> Signal:
        return RateSignal(name, fa, c.warmup, c.rate_min_events, c.rate_ratio, down,
                          c.rate_floor, kind, c.dependence == "ar", c.relearn)
    return build


def _embedding(c: MonitorConfig, fa: float, season: SeasonalProfile | None) -> Signal:
    return EmbeddingSignal("embedding", fa, max(c.warmup // 2, 8), c.warmup,
                           c.embedding_clusters, c.embedding_quantile,
                           c.embedding_rate_increase, c.seed,
                           c.max_ar_order if c.dependence == "ar" else 0,
                           c.dependence == "ar", c.dependence == "ar", c.relearn)


SIGNALS: list[SignalSpec] = [
    SignalSpec("latency", "latency_ms", "behavior", "ms", NONNEG, _scalar("latency"),
               lambda rng, n: rng.lognormal(6.0, 0.3, n), seasonal=True),
    SignalSpec("output_length", "output_tokens", "behavior", "tokens", NONNEG,
               _scalar("output_length"),
               lambda rng, n: np.round(rng.lognormal(5.0, 0.5, n)), seasonal=True),
    SignalSpec("refusal_rate", "refusal", "behavior", "share", BOOL,
               _rate("refusal_rate", True),
               lambda rng, n: (rng.random(n) < 0.05).astype(np.float64)),
    SignalSpec("negative_feedback_rate", "feedback", "behavior", "share", FEEDBACK,
               _rate("negative_feedback_rate", True),
               lambda rng, n: rng.choice([-1.0, 0.0, 1.0], n),
               values=lambda v: (v < -0.5).astype(np.float64)),
    SignalSpec("error_rate", "correct", "accuracy", "share", BOOL,
               _rate("error_rate", False, "accuracy"),
               lambda rng, n: (rng.random(n) < 0.9).astype(np.float64),
               values=lambda v: 1.0 - v),
    SignalSpec("embedding", "embedding", "embedding", "share of novel traffic", "",
               _embedding, lambda rng, n: rng.standard_normal((n, 16)).astype(np.float32)),
]


def register(spec: SignalSpec) -> None:
    """Monitor one more signal from now on (models created after this call)."""
    if any(s.name == spec.name for s in SIGNALS):
        raise ValueError(f"a signal named {spec.name!r} is already in the catalogue")
    SIGNALS.insert(len(SIGNALS) - 1 if SIGNALS[-1].field == "embedding" else len(SIGNALS),
                   spec)


def unregister(name: str) -> None:
    """Stop monitoring a registered signal (tests register toy signals)."""
    SIGNALS[:] = [s for s in SIGNALS if s.name != name]


def by_name(name: str) -> SignalSpec:
    return next(s for s in SIGNALS if s.name == name)


def columns() -> list[str]:
    """The interaction fields the monitor reads as float columns, in catalogue order."""
    return [s.field for s in SIGNALS if s.columnar]


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Tunables of a model's monitor.

    ``warmup`` values of each signal form its reference (rates also wait for
    ``rate_min_events`` events; embeddings use ``warmup // 2`` vectors for k-means and the
    next ``warmup`` for held-out distances). Thresholds hold at most
    ``target_false_alarm_rate`` false alarms per event per signal (one false alarm per
    ``1 / target_false_alarm_rate`` events of a signal).

    ``dependence`` ``"ar"`` learns the traffic's dependence in the warm-up (an
    autoregression of order up to ``max_ar_order``, each detector's long-run variance, a
    rate's dispersion across windows) and prices it into the thresholds; ``"off"``
    calibrates for independent draws. ``season_period_s`` > 0 learns a profile of
    latency and output length by time of period (``season_bins`` bins; 86,400 s and 24:
    by hour of day; 604,800 and 168: by hour of week). ``relearn`` keeps the reference
    that alarmed watching while a new one is learned (``False``: the signal warms up
    afresh, unwatched, after every alarm). ``detectors`` chooses river's detectors for
    scalar signals instead of the CUSUMs, ``"latency=adwin,output_length=page_hinkley"``
    (see :mod:`driftline.detectors.river_detectors`), calibrated to the same budget.
    """

    warmup: int = 2000
    target_false_alarm_rate: float = 1e-6
    mean_shift: float = 0.5
    spread_ratio: float = 1.5
    rate_ratio: float = 2.0
    rate_min_events: int = 200
    rate_floor: float = 1e-3
    embedding_clusters: int = 32
    embedding_quantile: float = 0.97
    embedding_rate_increase: float = 0.05
    seed: int = 0
    dependence: str = "ar"
    max_ar_order: int = 5
    season_period_s: float = 86_400.0
    season_bins: int = 24
    relearn: bool = True
    detectors: str = ""

    def __post_init__(self) -> None:
        if self.warmup < 20:
            raise ValueError("warmup must be at least 20 events")
        if not 0 < self.target_false_alarm_rate < 0.1:
            raise ValueError("target_false_alarm_rate must be in (0, 0.1)")
        if self.dependence not in ("ar", "off"):
            raise ValueError("dependence must be 'ar' or 'off'")
        if not 0 <= self.max_ar_order <= 20:
            raise ValueError("max_ar_order must be within 0-20")
        if self.season_period_s < 0 or (self.season_period_s and self.season_bins < 1):
            raise ValueError("season_period_s must be >= 0 (0: off) with season_bins >= 1")
        self.detector_choices()  # (raises on a bad choice)

    def detector_choices(self) -> dict[str, str]:
        """``detectors`` as {signal: detector}."""
        from driftline.detectors.river_detectors import KINDS

        out: dict[str, str] = {}
        for item in filter(None, (x.strip() for x in self.detectors.split(","))):
            name, sep, kind = item.partition("=")
            name, kind = name.strip(), kind.strip()
            scalar = {s.name for s in SIGNALS if s.seasonal}
            if not sep or name not in scalar or kind not in KINDS:
                raise ValueError(f"detectors: {item!r} is not <signal>=<detector> with a "
                                 f"signal of {sorted(scalar)} and a detector of {list(KINDS)}")
            out[name] = kind
        return out

    def detector_of(self, signal: str) -> str:
        return self.detector_choices().get(signal, "cusum")

    @classmethod
    def independent(cls, **kw: object) -> MonitorConfig:
        """The calibration for independent draws, with no seasonal profile and a fresh
        warm-up after every alarm: how driftline's detectors worked before they learned
        dependence (kept to compare against)."""
        return cls(**{"dependence": "off", "season_period_s": 0.0, "relearn": False,
                      **kw})  # type: ignore[arg-type]
