"""The retrain policy, pure and on a given clock: exact decisions for exact inputs."""

from __future__ import annotations

import doctest
import json

import driftline.streams.retrain.policy as policy_mod
import pytest
from driftline.streams.drift.events import action_id
from driftline.streams.retrain.policy import (
    ACT,
    BELOW_MIN_SEVERITY,
    SUPERSEDED,
    SUPPRESSED_COOLDOWN,
    SUPPRESSED_IN_FLIGHT,
    PolicyConfig,
    RetrainPolicy,
)


def ev(i: int, kind: str = "accuracy", model: str = "m", severity: float = 5.0) -> dict:
    return {"drift_id": f"d{i}", "model_id": model, "model_version": "v1", "kind": kind,
            "severity": severity, "signal": "s", "detector": "x"}


def test_doctest() -> None:
    result = doctest.testmod(policy_mod)
    assert result.failed == 0 and result.attempted > 0


def test_events_within_the_window_make_one_decision() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=10, cooldown_s=100))
    assert p.offer(ev(1), now=0.0) == []
    assert p.offer(ev(2, "embedding"), now=4.0) == []
    assert p.offer(ev(3, model="other"), now=9.0) == []
    assert p.flush(9.9) == []
    [d] = p.flush(10.0)
    assert (d.model_id, d.action, d.outcome) == ("m", "retrain", ACT)
    assert d.drift_ids == ("d1", "d2") and d.kinds == ("accuracy", "embedding")
    assert d.decision_id == action_id("d1", "d2")
    # an event after the window closed opens the next group, offer() flushes due ones
    [d_other] = p.offer(ev(4, "embedding"), now=19.0)
    assert d_other.model_id == "other" and d_other.drift_ids == ("d3",)
    [d4] = p.flush(29.0)
    assert (d4.action, d4.outcome) == ("reindex", ACT)  # cooldown is per action


def test_action_by_kind_and_behavior_setting() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=0),
                      per_model={"b": PolicyConfig(group_window_s=0, behavior_action="retrain")})
    assert p.offer(ev(1, "embedding"), 0)[0].action == "reindex"
    assert p.offer(ev(2, "accuracy", model="m2"), 0)[0].action == "retrain"
    assert p.offer(ev(3, "behavior", model="m3"), 0)[0].action == "alert"
    assert p.offer(ev(4, "behavior", model="b"), 0)[0].action == "retrain"
    with pytest.raises(ValueError, match="unknown drift kind 'vibes'"):
        p.offer(ev(5, "vibes"), 0)
    with pytest.raises(ValueError, match="behavior_action must be 'alert' or 'retrain'"):
        PolicyConfig(behavior_action="reboot")


def test_cooldown_suppresses_and_records_why() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=0, cooldown_s=60))
    [first] = p.offer(ev(1), 100.0)
    assert first.outcome == ACT
    p.settle(first.decision_id, accepted=True)
    [d] = p.offer(ev(2), 159.0)
    assert d.outcome == SUPPRESSED_COOLDOWN and d.action == "retrain"
    assert "cooldown" in d.reason and "59s ago" in d.reason
    # suppressed decisions do not extend the cooldown
    assert p.offer(ev(3), 160.0)[0].outcome == ACT


def test_cooldown_is_spent_only_by_an_accepted_job() -> None:
    """A job in flight holds back a second one; refused, it spends nothing (a receiver
    outage must not cost an hour without retraining); accepted, the cooldown counts from
    its decision."""
    p = RetrainPolicy(PolicyConfig(group_window_s=0, cooldown_s=3600))
    [d1] = p.offer(ev(1), 0.0)
    [d2] = p.offer(ev(2), 30.0)
    assert d2.outcome == SUPPRESSED_IN_FLIGHT and d2.action == "retrain"
    assert d2.reason == ("retrain suppressed: a retrain job of m decided 30s ago is not "
                         "accepted yet")
    assert p.offer(ev(3, "embedding"), 31.0)[0].outcome == ACT  # another action: its own
    assert sorted(p.in_flight()) == sorted([d1.decision_id, action_id("d3")])
    p.settle(d1.decision_id, accepted=False)  # the receiver was down for 90 s
    [d4] = p.offer(ev(4), 90.0)
    assert d4.outcome == ACT
    p.settle(d4.decision_id, accepted=True)
    [d5] = p.offer(ev(5), 3689.0)
    assert d5.outcome == SUPPRESSED_COOLDOWN and "3599s ago" in d5.reason
    assert p.offer(ev(6), 3690.0)[0].outcome == ACT  # counted from d4's decision
    p.settle("unknown-job", accepted=True)  # ignored
    p.hold("restored", "m2", "retrain", 5.0)  # e.g. a job still requested at a restart
    assert p.offer(ev(7, model="m2"), 6.0)[0].outcome == SUPPRESSED_IN_FLIGHT


def test_min_severity() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=5, min_severity=3.0))
    p.offer(ev(1, severity=1.0), 0)
    [d] = p.flush(5)
    assert d.outcome == BELOW_MIN_SEVERITY and "below the minimum 3" in d.reason
    # only strong events choose the action: a weak accuracy drift cannot force a retrain
    p.offer(ev(2, "accuracy", severity=1.0), 10)
    p.offer(ev(3, "embedding", severity=4.0), 11)
    [d] = p.flush(15)
    assert (d.action, d.outcome) == ("reindex", ACT) and d.drift_ids == ("d2", "d3")


def test_duplicates_never_act_twice() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=0, cooldown_s=0))
    assert len(p.offer(ev(1), 0)) == 1
    assert p.offer(ev(1), 1) == [] and p.offer(ev(1), 10_000) == []
    assert p.duplicates == 2


def test_deploy_supersedes_open_group() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=10))
    p.offer(ev(1), 0)
    [d] = p.on_deployed("m", "v2", 3)
    assert d.outcome == SUPERSEDED and "v2" in d.reason
    assert p.flush(100) == [] and p.on_deployed("m", "v3", 4) == []


def test_state_round_trips_through_json() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=10, cooldown_s=60), remember=3)
    p.offer(ev(1), 0)
    p.flush(10)
    p.offer(ev(2), 20)
    state = json.loads(json.dumps(p.to_state()))
    q = RetrainPolicy(PolicyConfig(group_window_s=10, cooldown_s=60), remember=3)
    q.load_state(state)
    assert q.offer(ev(1), 21) == []  # remembered
    [d] = q.flush(30)
    assert d.outcome == SUPPRESSED_IN_FLIGHT and d.drift_ids == ("d2",)  # d1's job
    q.settle(action_id("d1"), accepted=True)
    q.offer(ev(8), 40)
    [d] = q.flush(50)
    assert d.outcome == SUPPRESSED_COOLDOWN and d.drift_ids == ("d8",)
    assert q.next_due() is None and q.pending_count() == 0
    for i in range(3, 7):  # the memory of drift ids is bounded
        q.offer(ev(i), 100 + i)
    assert len(q.to_state()["seen"]) == 3


# -- segments -------------------------------------------------------------------------------

def seg_ev(i: int, tenant: str | None, kind: str = "embedding") -> dict:
    e = ev(i, kind)
    if tenant is not None:
        e["segment"] = {"metadata.tenant": tenant}
    return e


def test_a_segments_drift_is_decided_and_cooled_down_for_that_segment_alone() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=0, cooldown_s=60))
    [a] = p.offer(seg_ev(1, "acme"), now=0.0)
    assert (a.action, a.outcome, a.segment) == ("reindex", ACT, {"metadata.tenant": "acme"})
    assert a.reason.startswith("reindex of m [metadata.tenant=acme]:")
    assert a.to_dict()["segment"] == {"metadata.tenant": "acme"}
    p.settle(a.decision_id, accepted=True)
    # Another tenant, and the model level, are not held back by acme's cooldown.
    [b] = p.offer(seg_ev(2, "globex"), now=1.0)
    [m] = p.offer(seg_ev(3, None), now=2.0)
    assert (b.outcome, b.segment) == (ACT, {"metadata.tenant": "globex"})
    assert (m.outcome, m.segment) == (ACT, None)
    [again] = p.offer(seg_ev(4, "acme"), now=3.0)
    assert again.outcome == SUPPRESSED_COOLDOWN
    assert "m [metadata.tenant=acme]" in again.reason


def test_model_scope_folds_segments_into_the_models_decision() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=5, cooldown_s=60), scope="model")
    assert p.offer(seg_ev(1, "acme"), now=0.0) == []
    assert p.offer(seg_ev(2, "globex"), now=1.0) == []
    [d] = p.flush(now=6.0)
    assert (d.drift_ids, d.segment, d.outcome) == (("d1", "d2"), None, ACT)
    with pytest.raises(ValueError, match="scope must be"):
        RetrainPolicy(scope="tenant")


def test_a_deploy_supersedes_the_models_and_its_segments_open_groups() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=5))
    p.offer(seg_ev(1, "acme"), now=0.0)
    p.offer(seg_ev(2, None), now=0.0)
    p.offer(dict(seg_ev(3, "acme"), model_id="other"), now=0.0)
    out = p.on_deployed("m", "v2", now=1.0)
    assert sorted((d.outcome, repr(d.segment)) for d in out) == [
        (SUPERSEDED, "None"), (SUPERSEDED, "{'metadata.tenant': 'acme'}")]
    assert p.pending_count() == 1  # the other model's


def test_segment_state_round_trips() -> None:
    p = RetrainPolicy(PolicyConfig(group_window_s=5, cooldown_s=60))
    p.offer(seg_ev(1, "acme"), now=0.0)
    q = RetrainPolicy(PolicyConfig(group_window_s=5, cooldown_s=60))
    q.load_state(json.loads(json.dumps(p.to_state())))
    [d] = q.flush(now=10.0)
    assert d.segment == {"metadata.tenant": "acme"}


def test_last_actions_of_a_flood_of_models_stay_bounded() -> None:
    """Past ``remember`` scopes, last actions whose cooldown is over are dropped; one
    still cooling down is kept and still suppresses."""
    p = RetrainPolicy(PolicyConfig(group_window_s=0, cooldown_s=60), remember=100)
    for i in range(300):  # 300 models, one accepted retrain each, a second apart
        [d] = p.offer(ev(i, model=f"m{i}"), float(i))
        p.settle(d.decision_id, accepted=True)
    assert len(p._last_action) <= 101
    [d] = p.offer(ev(1000, model="m299"), 301.0)  # 2 s after its retrain
    assert d.outcome == SUPPRESSED_COOLDOWN
