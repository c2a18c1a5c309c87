"""Segmented monitors: busiest values per key, memory bounded, the shared false-alarm
budget, where and what a drift event says, state and batch cuts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from driftline.detectors import ModelMonitor, MonitorConfig, state
from driftline.detectors.segmented import SegmentedMonitor, restore_monitor
from driftline.detectors.segments import (
    OTHER,
    SegmentConfig,
    SegmentPlan,
    ValueTable,
    check_key,
    value_of,
)
from driftline.streams.drift.events import drift_event

from tests.detectors import streams

CFG = MonitorConfig(warmup=1000, season_period_s=0.0)
TENANT = "metadata.tenant"


def _stream(seed: int, n: int, change: int, tenants: int = 5, dim: int = 0
            ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Tenants t0..t{k-1} uniformly; from ``change`` t1's latency moves +1.5 SD and half
    of its embeddings (``dim`` > 0) come from a topic the reference never saw."""
    rng = np.random.default_rng(seed)
    who = np.array([f"t{i}" for i in rng.integers(0, tenants, n)], dtype=object)
    hit = (who == "t1") & (np.arange(n) >= change)
    lat = np.exp(5.0 + 0.5 * (rng.standard_normal(n) + 1.5 * hit))
    emb = None
    if dim:
        emb = streams.topics(seed, n, dim)
        new = hit & (rng.random(n) < 0.5)
        centre = rng.standard_normal(dim).astype(np.float32)
        emb[new] = centre + 0.3 * rng.standard_normal((int(new.sum()), dim)).astype(np.float32)
    return list(who), lat, emb


def _feed(m: SegmentedMonitor | ModelMonitor, who: list[str], lat: np.ndarray,
          emb: np.ndarray | None, batch: int, start: int = 0, stop: int | None = None
          ) -> list:
    stop = len(who) if stop is None else stop
    out = []
    for a in range(start, stop, batch):
        b = min(stop, a + batch)
        kw = {}
        if emb is not None:
            kw = {"embeddings": emb[a:b], "embedding_rows": np.arange(b - a)}
        if isinstance(m, SegmentedMonitor):
            kw["segments"] = {TENANT: who[a:b]}
        out += m.observe_columns([f"e{i}" for i in range(a, b)], np.arange(a, b, dtype=float),
                                 latency_ms=lat[a:b], **kw)
    if isinstance(m, SegmentedMonitor):
        out += m.flush()
    return out


def _key(f: object) -> tuple:
    return (f.segment, f.signal, f.detector, f.event_id, f.window, f.attribution)  # type: ignore[attr-defined]


# -- keys and values ------------------------------------------------------------------------

def test_keys_are_model_version_or_metadata_paths() -> None:
    assert check_key("model_version") == "model_version"
    assert check_key(" metadata.a.b-c ") == "metadata.a.b-c"
    for bad in ("tenant", "metadata.", "metadata.a..b", "metadata.a b", "metadata.é"):
        with pytest.raises(ValueError, match="expected model_version or metadata"):
            check_key(bad)


def test_values_are_short_scalars_anything_else_is_pooled() -> None:
    meta = {"tenant": "acme", "n": 3, "ok": True, "x": 1.5, "deep": {"r": "eu"},
            "long": "a" * 129, "ctrl": "a\nb", "obj": {"a": 1}, "nan": float("nan"),
            "big": 10**20}
    got = {k: value_of(None, meta, "metadata." + k)
           for k in ("tenant", "n", "ok", "x", "long", "ctrl", "obj", "nan", "big", "absent")}
    assert got == {"tenant": "acme", "n": "3", "ok": "true", "x": "1.5", "long": None,
                   "ctrl": None, "obj": None, "nan": None, "big": None, "absent": None}
    assert value_of(None, meta, "metadata.deep.r") == "eu"
    assert value_of(None, None, TENANT) is None
    assert value_of("v7", meta, "model_version") == "v7"


def test_plan_parses_default_and_per_model_keys() -> None:
    plan = SegmentPlan.parse("metadata.tenant; chat=model_version,metadata.region; off=")
    assert plan.for_model("x") == SegmentConfig((TENANT,))
    assert plan.for_model("chat").keys == ("model_version", "metadata.region")  # type: ignore[union-attr]
    assert plan.for_model("off") is None
    assert plan.keys == (TENANT, "model_version", "metadata.region")
    with pytest.raises(ValueError, match="configured twice"):
        SegmentPlan.parse("a=metadata.x; a=metadata.y")
    with pytest.raises(ValueError, match="not a model id"):
        SegmentPlan.parse("bad id=metadata.x")
    assert not SegmentPlan.parse("")


def test_ranking_admits_the_busiest_and_pools_the_rest() -> None:
    t = ValueTable(size=8)
    values = ["a"] * 500 + ["b"] * 300 + ["c"] * 150 + ["d"] * 40 + [f"rare{i}" for i in range(10)]
    t.add(values, len(values))
    t.close_period([])
    evict, admit = t.rank([], max_values=3, min_share=0.01)
    assert (evict, admit) == ([], ["a", "b", "c"])
    # A busier newcomer takes the weakest slot only when twice as busy.
    t.add(["e"] * 1000 + ["a"] * 100, 1100)
    t.close_period(["a", "b", "c"])
    evict, admit = t.rank(["a", "b", "c"], max_values=3, min_share=0.01)
    assert (evict, admit) == (["c"], ["e"])


def test_hostile_values_cannot_grow_memory() -> None:
    """100,000 distinct tenant values: 4 monitors, a bounded table, every value pooled."""
    cfg = SegmentConfig((TENANT,), max_values=3, rank_every=1000)
    m = SegmentedMonitor("m", MonitorConfig(warmup=500, season_period_s=0.0), cfg)
    n = 100_000
    rng = np.random.default_rng(1)
    who = [f"u{i}" for i in range(n)]
    m.observe_columns([f"e{i}" for i in range(n)], np.arange(n, dtype=float),
                      latency_ms=np.exp(rng.standard_normal(n)), segments={TENANT: who})
    m.flush()
    mem = m.memory()
    assert mem["monitors"] == 1  # none admitted: each value is 1e-5 of the traffic
    assert mem["admitted"] == 0
    assert mem["values_tracked"] <= 2 * cfg.table_size()
    assert [s.value for s in m.all_segments()] == [OTHER]
    assert m.routed == {(TENANT, OTHER): n}


# -- the shared budget ------------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "share"), [(1, 0.5), (2, 0.5), (3, 0.25)])
def test_the_budget_is_split_bonferroni_over_the_model_level_and_the_keys(
        keys: int, share: float) -> None:
    """Model level w alpha; each key (1 - w) alpha / m whatever its number of segments:
    a key's segments partition the traffic, so per interaction of the model they raise
    at most their own rate together. The rates sum to alpha."""
    seg = SegmentConfig(tuple(f"metadata.k{i}" for i in range(keys)), max_values=20,
                        model_share=share)
    alpha = 1e-6
    model, each = seg.rates(alpha)
    assert model == pytest.approx(alpha * share)
    assert each == pytest.approx(alpha * (1 - share) / keys)
    assert model + keys * each == pytest.approx(alpha)
    m = SegmentedMonitor("m", MonitorConfig(target_false_alarm_rate=alpha), seg)
    assert m.model.config.target_false_alarm_rate == pytest.approx(model)
    assert m.new_monitor().config.target_false_alarm_rate == pytest.approx(each)


# -- where and what -----------------------------------------------------------------------

def test_a_shift_in_one_tenant_is_found_in_its_segment_and_attributed_at_the_model() -> None:
    who, lat, _ = _stream(7, 14_000, 8000)
    m = SegmentedMonitor("m", CFG, SegmentConfig((TENANT,), max_values=5))
    found = _feed(m, who, lat, None, 700)
    seg = [f for f in found if f.segment]
    model = [f for f in found if not f.segment]
    assert [(f.segment, f.signal, f.detector, f.event_id) for f in seg] == [
        (((TENANT, "t1"),), "latency", "cusum_mean_up", "e8111")]
    assert [(f.signal, f.detector, f.event_id) for f in model] == [
        ("latency", "cusum_spread_up", "e8164")]
    top = model[0].attribution[0]
    assert top["segment"] == {TENANT: "t1"}
    assert top["share"] > 0.6
    ev = drift_event("m", seg[0])
    assert ev["segment"] == {TENANT: "t1"}
    assert drift_event("m", seg[0])["drift_id"] == ev["drift_id"]  # deterministic
    # The same detection without its segment is another identity.
    assert drift_event("m", dataclasses.replace(seg[0], segment=()))["drift_id"] != ev["drift_id"]
    assert drift_event("m", model[0])["attribution"][0]["segment"] == {TENANT: "t1"}
    assert "segment" not in drift_event("m", model[0])


def test_an_embedding_alarm_names_centroid_novel_count_and_an_exemplar() -> None:
    who, lat, emb = _stream(7, 12_000, 7000, dim=16)
    m = SegmentedMonitor("m", CFG, SegmentConfig((TENANT,), max_values=5))
    found = [f for f in _feed(m, who, lat, emb, 1000) if f.signal == "embedding"]
    assert found, "the new topic was not found"
    for f in found:
        ex = f.explanation
        assert ex is not None
        assert 0 < ex["outside_centroids"] <= ex["of_interactions"] == f.window
        assert 0 <= ex["nearest_centroid"] < CFG.embedding_clusters
        i = int(ex["exemplar_event_id"][1:])
        assert i >= 7000 and who[i] == "t1"  # an interaction of the shifted tenant
    assert any(f.segment == ((TENANT, "t1"),) for f in found)


def test_findings_do_not_depend_on_how_the_stream_is_cut() -> None:
    who, lat, _ = _stream(3, 12_000, 7000)
    runs = []
    for batch in (97, 1000, 12_000):
        m = SegmentedMonitor("m", CFG, SegmentConfig((TENANT,), max_values=5,
                                                     rank_every=500))
        runs.append(sorted(map(_key, _feed(m, who, lat, None, batch)), key=repr))
    assert runs[0] and runs[0] == runs[1] == runs[2]


def test_a_restored_snapshot_continues_exactly() -> None:
    who, lat, _ = _stream(3, 12_000, 7000)
    seg = SegmentConfig((TENANT,), max_values=5, rank_every=500)
    whole = _feed(SegmentedMonitor("m", CFG, seg), who, lat, None, 500)
    first = SegmentedMonitor("m", CFG, seg)
    before = _feed(first, who, lat, None, 500, stop=5000)
    fields = first.snapshot_fields()
    again = restore_monitor(dict(fields), seg)
    assert isinstance(again, SegmentedMonitor)
    assert again.snapshot_fields().keys() == fields.keys()
    after = _feed(again, who, lat, None, 500, start=5000)
    assert sorted(map(_key, before + after), key=repr) == sorted(map(_key, whole), key=repr)


def test_a_restart_inside_an_excursion_keeps_the_model_level_attribution() -> None:
    """The checkpoint carries the recent values attribution reads: restored in the middle of
    the shift (t1 from 8000, the model-level alarm at e8164), the alarm names the same
    segments with the same shares as without the restart."""
    who, lat, _ = _stream(7, 14_000, 8000)
    seg = SegmentConfig((TENANT,), max_values=5)
    whole = [f for f in _feed(SegmentedMonitor("m", CFG, seg), who, lat, None, 100)
             if not f.segment]
    first = SegmentedMonitor("m", CFG, seg)
    before = _feed(first, who, lat, None, 100, stop=8100)
    again = restore_monitor(state.decode(first.snapshot()), seg)
    after = [f for f in _feed(again, who, lat, None, 100, start=8100) if not f.segment]
    assert not [f for f in before if not f.segment]
    assert [(f.event_id, f.window) for f in whole] == [("e8164", 159)]
    assert after[0].window > 8164 - 8100  # the excursion began before the checkpoint
    assert after[0].attribution[0]["segment"] == {TENANT: "t1"}
    assert list(map(_key, after)) == list(map(_key, whole))


def test_an_older_snapshot_without_recent_values_still_restores() -> None:
    """An older checkpoint (before the recent values were kept) still restores."""
    who, lat, _ = _stream(7, 3000, 10**9)
    seg = SegmentConfig((TENANT,), max_values=5)
    m = SegmentedMonitor("m", CFG, seg)
    _feed(m, who, lat, None, 500)
    fields = {k: v for k, v in m.snapshot_fields().items() if not k.startswith("seg.recent.")}
    again = restore_monitor(fields, seg)
    assert isinstance(again, SegmentedMonitor)
    assert again.recent["latency"].n == 0
    assert m.recent["latency"].n == 3000


def test_recent_values_that_do_not_match_their_labels_are_refused() -> None:
    who, lat, _ = _stream(7, 3000, 10**9)
    seg = SegmentConfig((TENANT,), max_values=5)
    m = SegmentedMonitor("m", CFG, seg)
    _feed(m, who, lat, None, 500)
    fields = m.snapshot_fields()
    codes = fields["seg.recent.latency.0.codes"]
    assert isinstance(codes, np.ndarray) and codes.dtype == np.uint8
    fields["seg.recent.latency.0.codes"] = np.full_like(codes, 200)
    with pytest.raises(ValueError, match=r"seg\.recent\.latency\.0\.codes does not match"):
        restore_monitor(fields, seg)


def test_a_snapshot_with_rows_waiting_is_refused() -> None:
    m = SegmentedMonitor("m", CFG, SegmentConfig((TENANT,)))
    m.observe_columns(["a"], np.zeros(1), latency_ms=np.ones(1), segments={TENANT: ["x"]})
    with pytest.raises(RuntimeError, match="flush"):
        m.snapshot_fields()


def test_unsegmented_state_becomes_segmented_and_back() -> None:
    who, lat, _ = _stream(3, 3000, 10**9)
    plain = ModelMonitor("m", CFG)
    _feed(plain, who, lat, None, 1000)
    seg = SegmentConfig((TENANT,))
    grown = restore_monitor(plain.snapshot_fields(), seg)
    assert isinstance(grown, SegmentedMonitor)
    # The model level's share of the budget changed: it learns a new reference.
    assert grown.model.config.target_false_alarm_rate == pytest.approx(
        CFG.target_false_alarm_rate / 2)
    back = restore_monitor(grown.snapshot_fields(), None)
    assert isinstance(back, ModelMonitor)
