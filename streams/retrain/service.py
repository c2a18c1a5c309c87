"""The retrain coordinator: drift events in, recorded decisions and jobs, triggers fired,
retrain requests out (the caller publishes them on ``driftline.retrain-requests``).

Order of work, so that a crash anywhere loses nothing and repeats nothing:

1. store the drift events (idempotent on drift_id) — only then may the caller commit
   the Kafka offset; a replayed event is not new and is not offered again;
2. offer the new (or stored-but-undecided) events to the policy; record every decision;
3. create a job per acted decision (job_id = action_id; idempotent), requested;
4. fire the webhook / command for jobs that are new, in the background; record
   running or failed with the trigger results;
5. return the requests of new jobs for Kafka.

:meth:`RetrainService.recover` (at start) re-offers stored drift events no decision
covers, re-fires jobs still ``requested``, and restores cooldowns from the jobs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from driftline.detectors.types import KINDS
from driftline.streams.config import Settings
from driftline.streams.metrics import Metrics
from driftline.streams.retrain.policy import Decision, PolicyConfig, RetrainPolicy
from driftline.streams.retrain.triggers import (
    CommandTrigger,
    Trigger,
    TriggerResult,
    WebhookTrigger,
)
from driftline.streams.store.base import Store, iso

log = logging.getLogger("driftline.retrain")

REQUEST_SCHEMA_VERSION = 1


def request_of(job: dict[str, Any], reason: str = "") -> dict[str, Any]:
    """The retrain request (Kafka message, webhook body, command stdin) of a job."""
    return {
        "schema_version": REQUEST_SCHEMA_VERSION,
        "action_id": job["job_id"],
        "job_id": job["job_id"],
        "decision_id": job["decision_id"],
        "model_id": job["model_id"],
        "model_version": job.get("model_version"),
        "action": job["action"],
        "drift_ids": list(job.get("drift_ids") or []),
        "requested_at": iso(job["requested_at"]),
        "reason": reason or (job.get("detail") or {}).get("reason", ""),
        # A segment's job (DRIFTLINE_RETRAIN_SCOPE=segment): act on that segment only,
        # e.g. re-index {"metadata.tenant": "acme"}'s index. None: the whole model.
        "segment": (job.get("detail") or {}).get("segment"),
    }


def invalid_reason(event: Any) -> str | None:
    """Why a drift event cannot be handled (None if it can). The topic is public: a bad
    event is skipped, never allowed to stop the retrain agent."""
    if not isinstance(event, dict):
        return "not an object"
    for key in ("drift_id", "model_id", "signal", "detector"):
        if not isinstance(event.get(key), str) or not event[key]:
            return f"missing {key}"
    if event.get("kind") not in KINDS:
        return "unknown kind"
    sev = event.get("severity", 0.0)
    if isinstance(sev, bool) or not isinstance(sev, int | float) or not math.isfinite(sev):
        return "bad severity"
    try:
        iso(event["detected_at"])
    except (KeyError, TypeError, ValueError):
        return "bad detected_at"
    return None


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return float(value)


class RetrainService:
    """Turns drift events into at most one action per decision, recorded end to end."""

    def __init__(self, store: Store, policy: RetrainPolicy, *,
                 triggers: Sequence[Trigger] = (), metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time,
                 max_concurrent_triggers: int = 4) -> None:
        self.store = store
        self.policy = policy
        self.triggers = list(triggers)  # fired in this order for each job they handle
        self.metrics = metrics
        self.clock = clock
        self._sem = asyncio.Semaphore(max_concurrent_triggers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[str] = set()
        self.rejected = 0

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, *,
                      metrics: Metrics | None = None,
                      policy: RetrainPolicy | None = None) -> RetrainService:
        """Triggers from ``DRIFTLINE_WEBHOOK_URL``/``_SECRET``/``_TIMEOUT_S`` and
        ``DRIFTLINE_RETRAIN_COMMAND``; cooldown from ``DRIFTLINE_COOLDOWN_S``."""
        policy = policy or RetrainPolicy(PolicyConfig(cooldown_s=settings.cooldown_s),
                                         scope=settings.retrain_scope)
        triggers: list[Trigger] = []
        if settings.webhook_url:
            triggers.append(WebhookTrigger(settings.webhook_url, settings.webhook_secret,
                                           timeout_s=settings.webhook_timeout_s))
        if settings.retrain_command:
            triggers.append(CommandTrigger(settings.retrain_command))
        return cls(store, policy, triggers=triggers, metrics=metrics)

    # -- inputs ---------------------------------------------------------------------

    async def handle(self, events: list[dict[str, Any]],
                     now: float | None = None) -> list[dict[str, Any]]:
        """Store, decide, record, trigger; return the retrain requests to publish."""
        now = self.clock() if now is None else now
        seen: set[str] = set()
        batch = []
        for ev in events:
            reason = invalid_reason(ev)
            if reason is not None:
                self.rejected += 1
                log.error("skipping invalid drift event (%s)", reason)
            elif ev["drift_id"] not in seen:
                seen.add(ev["drift_id"])
                batch.append(ev)
        if not batch:
            return await self.tick(now)
        new = set(await self.store.write_drift_events(batch))
        old = [ev["drift_id"] for ev in batch if ev["drift_id"] not in new]
        retry = set(await self.store.undecided(old)) if old else set()
        decisions: list[Decision] = []
        for ev in batch:
            if ev["drift_id"] in new or ev["drift_id"] in retry:
                decisions.extend(self.policy.offer(ev, now))
        decisions.extend(self.policy.flush(now))
        return await self._apply(decisions, now)

    async def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        """Close grouping windows that are due (call from a timer)."""
        now = self.clock() if now is None else now
        return await self._apply(self.policy.flush(now), now)

    async def on_deployed(self, model_id: str, model_version: str,
                          now: float | None = None) -> list[str]:
        """A ``deployed`` model update: close the model's open jobs as succeeded, record
        the version (its baseline restarts), supersede its open drift group."""
        now = self.clock() if now is None else now
        await self._apply(self.policy.on_deployed(model_id, model_version, now), now)
        return await self.store.mark_deployed(model_id, model_version)

    async def recover(self, now: float | None = None) -> list[dict[str, Any]]:
        """After a restart: restore cooldowns, re-decide undecided drift events, re-fire
        jobs that never left ``requested``. Returns requests to (re)publish."""
        now = self.clock() if now is None else now
        jobs = await self.store.jobs()
        for j in jobs:
            # Only an accepted job spent its cooldown; one still requested is in flight.
            at = _epoch(j["requested_at"])
            segment = (j.get("detail") or {}).get("segment")
            if j["state"] in ("running", "succeeded"):
                self.policy.note_action(j["model_id"], j["action"], at, segment)
            elif j["state"] == "requested":
                self.policy.hold(j["job_id"], j["model_id"], j["action"], at, segment)
        out: list[dict[str, Any]] = []
        for j in jobs:
            if j["state"] == "requested" and j["job_id"] not in self._inflight:
                req = request_of(j)
                out.append(req)
                self._spawn(req)
        decisions: list[Decision] = []
        for ev in await self.store.pending_drift_events():
            decisions.extend(self.policy.offer(ev, now))
        # their windows opened before the restart: decide them now
        decisions.extend(self.policy.flush(now, force=True))
        out.extend(await self._apply(decisions, now))
        return out

    # -- work -----------------------------------------------------------------------

    async def _apply(self, decisions: list[Decision], now: float) -> list[dict[str, Any]]:
        if not decisions:
            return []
        acted = [d for d in decisions if d.acted]
        jobs = {d.decision_id: {"job_id": d.decision_id, "decision_id": d.decision_id,
                                "model_id": d.model_id, "model_version": d.model_version,
                                "action": d.action, "drift_ids": list(d.drift_ids),
                                "detail": ({"reason": d.reason, "segment": dict(d.segment)}
                                           if d.segment else {"reason": d.reason}),
                                "requested_at": now}
                for d in acted}
        try:
            await self.store.write_decisions([d.to_dict() for d in decisions])
            for d in decisions:
                log.info("decision %s for %s: %s (%s)", d.decision_id, d.model_id,
                         d.outcome, d.reason)
                if self.metrics is not None:
                    self.metrics.retrain_decisions.labels(d.action or "none",
                                                          d.outcome).inc()
            if not acted:
                return []
            new = await self.store.write_jobs(list(jobs.values()))
            # A job that already existed but never left `requested` is one whose creation
            # was acknowledged to nobody (connection lost after commit) or whose trigger a
            # crash interrupted: it is still owed its request and triggers.
            known = [j for j in jobs if j not in new and j not in self._inflight]
            states = await self.store.job_states(known) if known else {}
        except BaseException:
            for job_id in jobs:  # no job to wait for: nothing in flight, nothing spent
                if job_id not in self._inflight:
                    self.policy.settle(job_id, accepted=False)
            raise
        owed = [j for j, s in states.items() if s == "requested"]
        for job_id, state in states.items():  # settled before: as it went then
            if state != "requested":
                self.policy.settle(job_id, accepted=state in ("running", "succeeded"))
        requests = []
        for job_id in [*new, *owed]:
            req = request_of(jobs[job_id])
            requests.append(req)
            if self.metrics is not None:
                self.metrics.retrain_requests.labels(req["action"]).inc()
            self._spawn(req)
        return requests

    def _spawn(self, request: dict[str, Any]) -> None:
        self._inflight.add(request["job_id"])
        task = asyncio.create_task(self._fire(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire(self, request: dict[str, Any]) -> None:
        """Run the job's triggers and record how they went. Accepted (every trigger
        succeeded), the job is ``running`` and its cooldown spent; refused, ``failed``
        and nothing spent: the next drift acts again."""
        job_id = request["job_id"]
        action = request["action"]
        t0 = time.monotonic()
        accepted = False
        try:
            async with self._sem:
                results: list[TriggerResult] = [
                    await t.fire(request) for t in self.triggers if t.handles(action)]
            detail: dict[str, Any] = {"triggers": [r.to_dict() for r in results]}
            if not results:
                detail["via"] = "topic"
            if self.metrics is not None and results:
                self.metrics.retrain_job_seconds.labels(action).observe(time.monotonic() - t0)
            accepted = all(r.ok for r in results)
            if accepted:
                await self.store.job_transition(job_id, "running", detail)
                if action == "alert":  # nothing to deploy: delivered is done
                    await self.store.job_transition(job_id, "succeeded", detail)
                    if self.metrics is not None:
                        self.metrics.retrain_jobs.labels(action, "succeeded").inc()
            else:
                failed = ", ".join(f"{r.trigger}: {r.error}" for r in results if not r.ok)
                log.error("retrain job %s failed: %s", job_id, failed)
                await self.store.job_transition(job_id, "failed", detail)
                if self.metrics is not None:
                    self.metrics.retrain_jobs.labels(action, "failed").inc()
        except Exception:  # a background task must never die silently
            log.exception("retrain job %s: recording the trigger outcome failed", job_id)
        finally:
            self.policy.settle(job_id, accepted)
            self._inflight.discard(job_id)

    async def drain(self) -> None:
        """Wait for the triggers in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Drain (bounded), then cancel what is left; those jobs stay ``requested`` and
        :meth:`recover` re-fires them."""
        try:
            await asyncio.wait_for(self.drain(), timeout_s)
        except TimeoutError:
            for t in list(self._tasks):
                t.cancel()
