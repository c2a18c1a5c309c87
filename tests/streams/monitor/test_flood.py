"""Bounds under a flood of model ids: admission of new models, eviction of idle ones and
their return, and the on-disk spill that holds them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from driftline.detectors import MonitorConfig, state
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.admission import Admission
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.spill import StateSpill
from prometheus_client import CollectorRegistry

IT, FB, UP = "t.interactions", "t.feedback", "t.model-updates"
T0 = 1_767_225_600.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _processor(*, max_models: int = 0, admission: Admission | None = None,
               spill: StateSpill | None = None, registry: CollectorRegistry | None = None
               ) -> MonitorProcessor:
    spill = spill if spill is not None else StateSpill()
    proc = MonitorProcessor(
        interactions_topic=IT, feedback_topic=FB, updates_topic=UP,
        monitor_config=MonitorConfig(warmup=100),
        metrics=Metrics(registry if registry is not None else CollectorRegistry()),
        load_state=lambda m: (lambda got: None if got is None else got[1])(spill.take(m)),
        clock=lambda: T0 + 1e6, max_models=max_models, admission=admission)
    proc._test_spill = spill  # type: ignore[attr-defined]
    return proc


def _checkpoint(proc: MonitorProcessor, dirty: dict[str, int]) -> list[str]:
    """What the agent does at a checkpoint: flush, take every changed model's state, then
    evict past the cap into the spill. Returns the evicted ids."""
    proc.flush()
    for model_id in dirty:
        if model_id in proc.models:
            proc.state_records(model_id)
    evicted = proc.evict_idle()
    proc._test_spill.put_many(evicted)  # type: ignore[attr-defined]
    return [m for m, _, _ in evicted]


class Stream:
    """Interactions with offsets on one partition; latency x ``factor`` from ``shift_at``."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.offset = 0
        self.i = 0

    def records(self, models: list[str], factor: float = 1.0) -> list[Record]:
        out = []
        for m in models:
            doc: dict[str, Any] = {
                "event_id": f"{m}-{self.i}", "model_id": m, "ts": T0 + self.i,
                "latency_ms": round(float(self.rng.lognormal(math.log(500 * factor), 0.3)), 3),
                "output_tokens": int(self.rng.lognormal(math.log(150), 0.5)),
                "refusal": bool(self.rng.random() < 0.05)}
            out.append(Record(IT, 0, self.offset, m.encode(), orjson.dumps(doc)))
            self.offset += 1
            self.i += 1
        return out


def _value(registry: CollectorRegistry, name: str) -> float:
    return float(registry.get_sample_value(name) or 0.0)


def test_new_models_past_the_rate_are_dead_lettered_and_counted() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    proc = _processor(admission=Admission(per_s=10, burst=3, clock=clock), registry=registry)
    s = Stream()
    recs = s.records(["a", "b", "c", "d", "a", "e", "d"])
    out = proc.process(recs, drain=True)
    # Three tokens, taken busiest first: a and d (two records each), then b (the first of
    # the models seen once).
    assert sorted(proc.models) == ["a", "b", "d"]
    # Every record of a refused model is a dead letter with its reason, in stream order.
    assert [(r.record.offset, r.reason) for r in out.rejects] == [
        (2, "model_not_admitted"), (5, "model_not_admitted")]
    assert "DRIFTLINE_MODEL_ADMISSION_PER_S" in out.rejects[0].message
    assert _value(registry, "driftline_models_refused_total") == 2  # c and e
    assert registry.get_sample_value("driftline_invalid_messages_total",
                                     {"reason": "model_not_admitted", "topic": IT}) == 2
    # A known model is always admitted; the bucket refills at per_s.
    assert proc.process(s.records(["a", "b"]), drain=True).rejects == []
    assert [r.record.key for r in proc.process(s.records(["f"]), drain=True).rejects] == [b"f"]
    clock.now += 0.15  # one token and a half
    assert proc.process(s.records(["f", "g"]), drain=True).rejects[0].record.key == b"g"
    assert "f" in proc.models and "g" not in proc.models


def test_labels_and_deploys_of_a_refused_model_are_dead_lettered_too() -> None:
    proc = _processor(admission=Admission(per_s=1, burst=1, clock=Clock()))
    proc.process(Stream().records(["a"]), drain=True)  # takes the only token
    fb = Record(FB, 0, 0, b"x", orjson.dumps({"event_id": "x-1", "model_id": "x",
                                               "ts": T0, "correct": True}))
    up = Record(UP, 0, 0, b"y", orjson.dumps({"model_id": "y", "model_version": "v2",
                                               "ts": T0}))
    out = proc.process([fb, up], drain=True)
    assert [(r.record.topic, r.reason) for r in out.rejects] == [
        (FB, "model_not_admitted"), (UP, "model_not_admitted")]
    assert out.deployed == [] and sorted(proc.models) == ["a"]


def test_admission_bucket() -> None:
    clock = Clock()
    bucket = Admission(per_s=2, burst=4, clock=clock)
    assert [bucket.admit() for _ in range(5)] == [True] * 4 + [False]
    clock.now += 1.0  # two tokens
    assert [bucket.admit() for _ in range(3)] == [True, True, False]
    clock.now += 100.0  # refills to the burst, not past it
    assert sum(bucket.admit() for _ in range(10)) == 4
    assert (bucket.admitted, bucket.refused) == (10, 8)
    assert all(Admission(per_s=0, burst=1, clock=clock).admit() for _ in range(100))
    with pytest.raises(ValueError, match="per_s >= 0 and burst >= 1"):
        Admission(per_s=-1, burst=1)


def test_eviction_is_invisible_to_detection() -> None:
    """A processor capped at 10 models, evicting at every checkpoint, publishes the same
    drift events (same ids) and ends in the same states as an uncapped one."""
    registry, free_registry = CollectorRegistry(), CollectorRegistry()
    capped = _processor(max_models=10, registry=registry)
    free = _processor(registry=free_registry)
    models = [f"m{k}" for k in range(25)]
    streams = (Stream(3), Stream(3))
    events: tuple[list[str], list[str]] = ([], [])
    evicted_total = 0
    for step in range(40):
        # Each round feeds 5 of the 25 models (so most are idle and evicted), 30 each;
        # from round 24 the latency of every model is x2.
        chosen = [models[(step * 5 + j) % 25] for j in range(5)]
        factor = 2.0 if step >= 24 else 1.0
        for side, proc in enumerate((capped, free)):
            out = proc.process(streams[side].records(chosen * 30, factor), drain=True)
            events[side].extend(ev["drift_id"] for _, ev in out.drift_events)
            events[side].extend(ev["drift_id"] for _, ev in proc.flush().drift_events)
            gone = _checkpoint(proc, out.dirty)
            if side == 0:
                evicted_total += len(gone)
                assert len(proc.models) <= 10
                assert not set(gone) & set(chosen[-1:])  # the model just seen stays
    assert evicted_total > 100  # the cap was exercised: models left and came back
    assert _value(registry, "driftline_models_evicted_total") == evicted_total
    assert len(events[1]) >= 20  # every model's shift was found ...
    assert events[0] == events[1]  # ... and eviction changed none of it
    for signal in ("latency", "output_length"):  # a warning once per reference, not per return
        labels = {"signal": signal}
        assert (registry.get_sample_value("driftline_reference_warnings_total", labels)
                == free_registry.get_sample_value("driftline_reference_warnings_total",
                                                  labels) == 25)
    for model_id in models:  # the same state, held or spilled
        a = capped.models.get(model_id)
        if a is None:
            capped.process(streams[0].records([]), drain=True)
            a = capped._model(model_id, 0)
        assert a is not None
        b = free.models[model_id]
        assert a.offsets == b.offsets
        assert state.encode(a.monitor.snapshot_fields()) == state.encode(
            b.monitor.snapshot_fields())


def test_evict_idle_refuses_with_interactions_pending() -> None:
    proc = _processor(max_models=1)
    proc.min_run, proc.max_delay_s = 10**6, 1e9  # runs wait
    proc.process(Stream().records(["a", "b", "c"]))
    with pytest.raises(RuntimeError, match="flush"):
        proc.evict_idle()


def test_spill_round_trip_and_partitions(tmp_path: Path) -> None:
    spill = StateSpill(tmp_path / "spill")
    assert len(spill) == 0 and spill.take("a") is None and spill.path is None
    spill.put_many([("a", 0, b"A"), ("b", 1, b"B"), ("c", 1, b"C")])
    spill.put_many([("a", 0, b"A2")])  # replaces
    assert len(spill) == 3 and "b" in spill and "z" not in spill
    assert spill.take("a") == (0, b"A2") and spill.take("a") is None
    assert spill.drop_partitions([1, 5]) == 2 and len(spill) == 0
    path = Path(str(spill.path))
    assert path.parent == tmp_path / "spill" and path.exists()
    spill.close()
    assert not path.exists()
