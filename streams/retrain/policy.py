"""The retrain policy: which drift becomes which action, once, and when not.

Pure: no I/O, the clock is an argument. Per model: drift events that arrive within
``group_window_s`` of the first one make one decision; the action follows the strongest
kind (accuracy → retrain, embedding → reindex, behavior → ``behavior_action``) among the
events at or above ``min_severity``. Every group ends in exactly one :class:`Decision`,
acted on or not, with its reason. A drift_id seen before is ignored.

**Segments.** With ``scope="segment"`` (``DRIFTLINE_RETRAIN_SCOPE``, the default) a
segment's drift event (one that names ``segment: {key: value}``) is decided for that
segment alone: its own group, cooldown and in-flight job, and its decision (and the job's
request) name the segment, so the receiver can act on that segment only (re-index that
tenant's index). Model-level events, and every event with ``scope="model"``, are decided
for the model as a whole.

The cooldown is spent only by a job that was accepted: an acted decision's job is *in
flight* until the caller settles it (:meth:`~RetrainPolicy.settle`). While it is, another
decision of the same model and action is suppressed (``suppressed_in_flight``: no second
job for the same drift). Accepted, an action of the same kind within ``cooldown_s`` of
that decision is suppressed (``suppressed_cooldown``); refused (the receiver was down,
the command failed), nothing is spent and the next drift acts again.

>>> p = RetrainPolicy(PolicyConfig(group_window_s=0, cooldown_s=60))
>>> ev = {"drift_id": "d1", "model_id": "m", "kind": "accuracy", "severity": 3.0}
>>> [d] = p.offer(ev, now=0.0)
>>> (d.action, d.outcome)
('retrain', 'act')
>>> p.offer(ev, now=1.0)
[]
>>> [(d.action, d.outcome) for d in p.offer(dict(ev, drift_id="d2"), now=5.0)]
[('retrain', 'suppressed_in_flight')]
>>> p.settle(d.decision_id, accepted=False)  # the webhook failed: no cooldown spent
>>> [d] = p.offer(dict(ev, drift_id="d3"), now=20.0)
>>> d.outcome
'act'
>>> p.settle(d.decision_id, accepted=True)
>>> [(d.action, d.outcome) for d in p.offer(dict(ev, drift_id="d4"), now=30.0)]
[('retrain', 'suppressed_cooldown')]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from driftline.streams.drift.events import action_id

ACTIONS = ("alert", "reindex", "retrain")  # weakest to strongest
ACT = "act"
SUPPRESSED_COOLDOWN = "suppressed_cooldown"
SUPPRESSED_IN_FLIGHT = "suppressed_in_flight"
BELOW_MIN_SEVERITY = "below_min_severity"
SUPERSEDED = "superseded"


@dataclass(frozen=True)
class PolicyConfig:
    """One model's policy (or the default for all)."""

    cooldown_s: float = 3600.0
    group_window_s: float = 5.0
    min_severity: float = 0.0
    behavior_action: str = "alert"

    def __post_init__(self) -> None:
        if self.behavior_action not in ("alert", "retrain"):
            raise ValueError("behavior_action must be 'alert' or 'retrain'")
        if self.cooldown_s < 0 or self.group_window_s < 0:
            raise ValueError("cooldown_s and group_window_s must be >= 0")

    def action_for(self, kind: str) -> str:
        if kind == "embedding":
            return "reindex"
        if kind == "accuracy":
            return "retrain"
        if kind == "behavior":
            return self.behavior_action
        raise ValueError(f"unknown drift kind {kind!r}")


def scope_of(model_id: str, segment: Mapping[str, str] | None) -> str:
    """The key a policy decides under: the model id, or the model and one segment."""
    if not segment:
        return model_id
    return model_id + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(segment.items()))


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one group of drift events of one model (or of one of
    its segments: ``segment``)."""

    decision_id: str
    model_id: str
    model_version: str | None
    action: str | None
    outcome: str
    reason: str
    drift_ids: tuple[str, ...]
    kinds: tuple[str, ...]
    max_severity: float
    decided_at: float
    segment: Mapping[str, str] | None = None

    @property
    def acted(self) -> bool:
        return self.outcome == ACT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drift_ids"] = list(self.drift_ids)
        d["kinds"] = list(self.kinds)
        d["segment"] = dict(self.segment) if self.segment else None
        return d


@dataclass
class _Group:
    opened_at: float
    events: list[dict[str, Any]] = field(default_factory=list)


def _slim(event: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a decision needs: keeps the policy's state small."""
    return {"drift_id": str(event["drift_id"]), "model_id": str(event["model_id"]),
            "model_version": event.get("model_version"), "kind": str(event["kind"]),
            "severity": float(event.get("severity") or 0.0),
            "segment": (dict(event["segment"]) if isinstance(event.get("segment"), Mapping)
                        else None)}


class RetrainPolicy:
    """Per-model grouping, severity floor, action by kind, cooldown, dedup by drift_id."""

    def __init__(self, default: PolicyConfig | None = None,
                 per_model: Mapping[str, PolicyConfig] | None = None,
                 remember: int = 10_000, scope: str = "segment") -> None:
        if scope not in ("segment", "model"):
            raise ValueError("scope must be 'segment' or 'model'")
        self.scope = scope
        self.default = default or PolicyConfig()
        self.per_model = dict(per_model or {})
        self._pending: dict[str, _Group] = {}
        self._last_action: dict[str, dict[str, float]] = {}
        # Acted decisions whose job is not settled yet: job_id -> (model, action, at).
        self._in_flight: dict[str, tuple[str, str, float]] = {}
        self._seen: deque[str] = deque(maxlen=remember)
        self._seen_set: set[str] = set()
        self.duplicates = 0

    def config(self, model_id: str) -> PolicyConfig:
        return self.per_model.get(model_id, self.default)

    # -- input ----------------------------------------------------------------------

    def offer(self, event: Mapping[str, Any], now: float) -> list[Decision]:
        """Take one drift event; return the decisions that are due at ``now``."""
        decisions = self.flush(now)
        ev = _slim(event)
        if ev["drift_id"] in self._seen_set:
            self.duplicates += 1
            return decisions
        cfg = self.config(ev["model_id"])
        cfg.action_for(ev["kind"])  # an unknown kind raises before anything changes
        self._remember(ev["drift_id"])
        if self.scope == "model":
            ev["segment"] = None
        key = scope_of(ev["model_id"], ev["segment"])
        group = self._pending.setdefault(key, _Group(opened_at=now))
        group.events.append(ev)
        if cfg.group_window_s == 0:
            decisions.append(self._decide(self._pending.pop(key), now))
        return decisions

    def _config_of(self, key: str) -> PolicyConfig:
        """The config of a scope key's model."""
        return self.config(key.split("\x00", 1)[0])

    def flush(self, now: float, *, force: bool = False) -> list[Decision]:
        """Decide every group whose window has closed by ``now`` (all of them if
        ``force``)."""
        due = [m for m, g in self._pending.items()
               if force or now >= g.opened_at + self._config_of(m).group_window_s]
        return [self._decide(self._pending.pop(m), now) for m in sorted(due)]

    def on_deployed(self, model_id: str, model_version: str, now: float) -> list[Decision]:
        """A new version is live: open groups of the model (and of its segments) are
        superseded, not acted on."""
        keys = sorted(k for k in self._pending
                      if k == model_id or k.startswith(model_id + "\x00"))
        out = []
        for key in keys:
            d = self._decide(self._pending.pop(key), now)
            out.append(replace(d, outcome=SUPERSEDED,
                               reason=f"model version {model_version} deployed before the "
                                      f"grouping window closed; no action"))
        return out

    def note_action(self, model_id: str, action: str, at: float,
                    segment: Mapping[str, str] | None = None) -> None:
        """Restore a past accepted action (e.g. from the store's jobs) so its cooldown
        holds, counted from ``at`` (its decision)."""
        last = self._last_action.setdefault(scope_of(model_id, segment), {})
        last[action] = max(at, last.get(action, float("-inf")))

    def hold(self, job_id: str, model_id: str, action: str, at: float,
             segment: Mapping[str, str] | None = None) -> None:
        """Mark a job as in flight (e.g. one restored from the store still ``requested``)."""
        self._in_flight[job_id] = (scope_of(model_id, segment), action, at)

    def settle(self, job_id: str, accepted: bool) -> None:
        """The job of an acted decision was accepted (its cooldown starts, from the
        decision) or refused (nothing spent). Unknown job ids are ignored."""
        held = self._in_flight.pop(job_id, None)
        if held is not None and accepted:
            key, action, at = held
            last = self._last_action.setdefault(key, {})
            last[action] = max(at, last.get(action, float("-inf")))

    def in_flight(self) -> list[str]:
        """The job ids not settled yet."""
        return list(self._in_flight)

    def pending_count(self) -> int:
        return sum(len(g.events) for g in self._pending.values())

    def next_due(self) -> float | None:
        """When the earliest open group closes (for a timer), or None."""
        times = [g.opened_at + self._config_of(m).group_window_s
                 for m, g in self._pending.items()]
        return min(times) if times else None

    # -- decision -------------------------------------------------------------------

    def _decide(self, group: _Group, now: float) -> Decision:
        events = group.events
        model_id = events[0]["model_id"]
        segment = events[0].get("segment")
        scope = scope_of(model_id, segment)
        where = model_id + (" [" + ", ".join(f"{k}={v}" for k, v in segment.items()) + "]"
                            if segment else "")
        cfg = self.config(model_id)
        drift_ids = tuple(sorted(e["drift_id"] for e in events))
        kinds = tuple(sorted({e["kind"] for e in events}))
        max_sev = max(e["severity"] for e in events)
        versions = [e["model_version"] for e in events if e["model_version"]]
        strong = [e for e in events if e["severity"] >= cfg.min_severity]
        pool = strong or events
        action = max((cfg.action_for(e["kind"]) for e in pool), key=ACTIONS.index)
        base = {"decision_id": action_id(*drift_ids), "model_id": model_id,
                "model_version": versions[-1] if versions else None, "action": action,
                "drift_ids": drift_ids, "kinds": kinds, "max_severity": max_sev,
                "decided_at": now, "segment": segment}
        n = len(events)
        if not strong:
            return Decision(outcome=BELOW_MIN_SEVERITY,
                            reason=f"{n} drift event(s), max severity {max_sev:.3g} below "
                                   f"the minimum {cfg.min_severity:.3g}", **base)
        if len(self._last_action) > (self._seen.maxlen or 0):
            self._forget_cooled(now)
        last = self._last_action.get(scope, {}).get(action)
        if last is not None and now - last < cfg.cooldown_s:
            return Decision(outcome=SUPPRESSED_COOLDOWN,
                            reason=f"{action} suppressed by cooldown: the last {action} of "
                                   f"{where} was {now - last:.0f}s ago "
                                   f"(cooldown {cfg.cooldown_s:.0f}s)", **base)
        pending = [at for m, a, at in self._in_flight.values()
                   if m == scope and a == action]
        if pending:
            return Decision(outcome=SUPPRESSED_IN_FLIGHT,
                            reason=f"{action} suppressed: a {action} job of {where} "
                                   f"decided {now - max(pending):.0f}s ago is not accepted "
                                   "yet", **base)
        self._in_flight[base["decision_id"]] = (scope, action, now)
        return Decision(outcome=ACT,
                        reason=f"{action}{' of ' + where if segment else ''}: "
                               f"{len(strong)} of {n} drift event(s) "
                               f"({', '.join(kinds)}) at or above severity "
                               f"{cfg.min_severity:.3g}, max {max_sev:.3g}", **base)

    def _forget_cooled(self, now: float) -> None:
        """Drop the last actions whose cooldown is over (they no longer decide anything):
        scopes come from drift events, so a flood of model ids must not grow this map."""
        for key in [k for k, acts in self._last_action.items()
                    if all(now - at >= self._config_of(k).cooldown_s for at in acts.values())]:
            del self._last_action[key]

    def _remember(self, drift_id: str) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(drift_id)
        self._seen_set.add(drift_id)

    # -- state ----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A small JSON-able snapshot (pending groups, last accepted actions, jobs in
        flight, recent drift ids)."""
        return {
            "v": 1,
            "pending": {m: {"opened_at": g.opened_at, "events": list(g.events)}
                        for m, g in self._pending.items()},
            "last_action": {m: dict(a) for m, a in self._last_action.items()},
            "in_flight": {j: list(h) for j, h in self._in_flight.items()},
            "seen": list(self._seen),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace this policy's state with a :meth:`to_state` snapshot."""
        if state.get("v") != 1:
            raise ValueError("unknown policy state version")
        self._pending = {m: _Group(float(g["opened_at"]), [dict(e) for e in g["events"]])
                         for m, g in state["pending"].items()}
        self._last_action = {m: {k: float(v) for k, v in a.items()}
                             for m, a in state["last_action"].items()}
        self._in_flight = {j: (str(m), str(a), float(at))
                           for j, (m, a, at) in state.get("in_flight", {}).items()}
        self._seen.clear()
        self._seen_set.clear()
        for d in state["seen"]:
            self._remember(str(d))
