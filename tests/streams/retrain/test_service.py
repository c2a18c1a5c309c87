"""The coordinator end to end on a real PostgreSQL, a real webhook server and a real
command: one action per drift, every decision and job transition recorded."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from driftline.streams.drift.events import action_id
from driftline.streams.retrain import (
    CommandTrigger,
    PolicyConfig,
    RetrainPolicy,
    RetrainService,
    TriggerResult,
    WebhookTrigger,
    verify,
)
from driftline.streams.store.base import RetryPolicy
from driftline.streams.store.postgres import PostgresStore

from tests.streams.store.events import drift_event
from tests.streams.store.http_server import RecordingServer

pytestmark = pytest.mark.postgres

SECRET = "whsec-service-test"


@pytest.fixture
async def hook_server() -> AsyncIterator[RecordingServer]:
    server = await RecordingServer(lambda rec: web.Response(status=202)).start()
    yield server
    await server.stop()


def service(store: PostgresStore, url: str | None = None, *, window: float = 0.0,
            cooldown: float = 3600.0, command: CommandTrigger | None = None,
            policy: RetrainPolicy | None = None) -> RetrainService:
    hook = (WebhookTrigger(url, SECRET, retry=RetryPolicy(initial_s=0.01, attempts=3),
                           rng=random.Random(5)) if url else None)
    policy = policy or RetrainPolicy(PolicyConfig(group_window_s=window, cooldown_s=cooldown))
    return RetrainService(store, policy, triggers=[t for t in (hook, command) if t is not None])


async def test_duplicate_drift_event_gives_one_row_and_one_action(
        pg_store: PostgresStore, hook_server: RecordingServer) -> None:
    svc = service(pg_store, hook_server.url, cooldown=0)
    e = drift_event(1)
    [req] = await svc.handle([e, dict(e)], now=1000.0)
    assert req["action"] == "retrain" and req["action_id"] == action_id(e["drift_id"])
    assert await svc.handle([e], now=1001.0) == []          # replayed
    assert await svc.handle([dict(e)], now=5000.0) == []    # re-emitted much later
    await svc.drain()
    # a second service (a restart without state) still does not act again
    assert await service(pg_store, hook_server.url, cooldown=0).handle([e], now=6000.0) == []
    counts = await pg_store.counts()
    assert counts["drift_events"] == 1 and counts["retrain_decisions"] == 1
    assert counts["retrain_jobs"] == 1
    assert len(hook_server.requests) == 1
    rec = hook_server.requests[0]
    assert rec.headers["Idempotency-Key"] == req["action_id"]
    assert verify(rec.body, SECRET, rec.headers["X-Driftline-Signature"])
    assert json.loads(rec.body) == req


async def test_job_life_requested_running_succeeded_on_deploy(
        pg_store: PostgresStore, hook_server: RecordingServer) -> None:
    svc = service(pg_store, hook_server.url)
    [req] = await svc.handle([drift_event(1)], now=10.0)
    await svc.drain()
    [job] = await pg_store.jobs("m1")
    assert job["state"] == "running" and job["states"] == ["requested", "running"]
    assert job["detail"]["triggers"][0]["status"] == 202
    assert await svc.on_deployed("m1", "v2", now=20.0) == [req["job_id"]]
    [job] = await pg_store.jobs("m1")
    assert job["states"] == ["requested", "running", "succeeded"]
    assert job["deployed_version"] == "v2"
    rows = await pg_store.fetch("select * from model_versions")
    assert [(r["model_id"], r["model_version"]) for r in rows] == [("m1", "v2")]


async def test_failed_webhook_marks_the_job_failed(pg_store: PostgresStore) -> None:
    server = await RecordingServer(lambda rec: web.Response(status=503)).start()
    try:
        svc = service(pg_store, server.url)
        await svc.handle([drift_event(1)], now=10.0)
        await svc.drain()
    finally:
        await server.stop()
    [job] = await pg_store.jobs()
    assert job["state"] == "failed" and len(server.requests) == 3
    [t] = job["detail"]["triggers"]
    assert t == {"trigger": "webhook", "ok": False, "attempts": 3, "status": 503,
                 "error": "HTTP 503", "duration_s": t["duration_s"]}


async def test_command_trigger_gets_the_request_and_its_exit_code_is_recorded(
        pg_store: PostgresStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "req.json"
    code = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read()); sys.exit(0)"
    svc = service(pg_store, command=CommandTrigger([sys.executable, "-c", code]))
    [req] = await svc.handle([drift_event(1, kind="embedding")], now=10.0)
    await svc.drain()
    assert json.loads(out.read_text()) == req and req["action"] == "reindex"
    [job] = await pg_store.jobs()
    assert job["state"] == "running"
    assert job["detail"]["triggers"][0]["exit_code"] == 0


async def test_grouping_and_cooldown_are_recorded_with_reasons(
        pg_store: PostgresStore) -> None:
    svc = service(pg_store, window=5.0, cooldown=60.0)
    events = [drift_event(1), drift_event(2), drift_event(3, kind="behavior"), drift_event(4)]
    assert await svc.handle(events[:2], now=100.0) == []
    assert await svc.handle(events[2:3], now=103.0) == []
    [req] = await svc.tick(now=105.0)
    assert req["drift_ids"] == sorted(e["drift_id"] for e in events[:3])
    await svc.drain()  # the job is accepted (the topic is its only trigger)
    assert await svc.handle(events[3:], now=120.0) == []
    assert await svc.tick(now=125.0) == []  # decided: suppressed by cooldown
    rows = await pg_store.fetch(
        "select outcome, action, reason, cardinality(drift_ids) n from retrain_decisions"
        " order by decided_at")
    assert [(r["outcome"], r["action"], r["n"]) for r in rows] == [
        ("act", "retrain", 3), ("suppressed_cooldown", "retrain", 1)]
    assert "cooldown" in rows[1]["reason"]
    assert await pg_store.undecided([e["drift_id"] for e in events]) == []
    await svc.drain()
    [job] = await pg_store.jobs()
    assert job["detail"]["via"] == "topic"  # no webhook/command: Kafka is the trigger


async def test_recover_after_a_crash(pg_store: PostgresStore,
                                     hook_server: RecordingServer) -> None:
    # 1) crashed with a drift event stored but its group still open (not decided)
    svc = service(pg_store, hook_server.url, window=30.0)
    assert await svc.handle([drift_event(1)], now=100.0) == []
    # 2) and with a job created whose trigger never ran
    await pg_store.write_jobs([{"job_id": "stuck", "decision_id": "stuck",
                                "model_id": "m2", "action": "retrain",
                                "requested_at": 50.0}])
    fresh = service(pg_store, hook_server.url, window=30.0)  # new process, empty policy
    reqs = await fresh.recover(now=200.0)
    await fresh.drain()
    assert sorted(r["job_id"] for r in reqs) == sorted(
        ["stuck", action_id(drift_event(1)["drift_id"])])
    assert {r.headers["Idempotency-Key"] for r in hook_server.requests} == {
        r["job_id"] for r in reqs}
    assert {j["state"] for j in await pg_store.jobs()} == {"running"}
    # the restored cooldown holds for m1 after the restart
    again = service(pg_store, hook_server.url, window=0.0)
    await again.recover(now=300.0)
    assert await again.handle([drift_event(9)], now=301.0) == []
    rows = await pg_store.fetch("select outcome from retrain_decisions order by decided_at")
    assert [r["outcome"] for r in rows] == ["act", "suppressed_cooldown"]


async def test_invalid_drift_events_are_skipped_not_fatal(pg_store: PostgresStore) -> None:
    svc = service(pg_store)
    bad = [{"drift_id": "x"}, dict(drift_event(1), kind="vibes"),
           dict(drift_event(2), severity=float("nan")), dict(drift_event(3), detected_at=[]),
           "not even a dict"]
    [req] = await svc.handle([*bad, drift_event(4)], now=1.0)  # type: ignore[list-item]
    assert svc.rejected == 5 and req["drift_ids"] == [drift_event(4)["drift_id"]]
    assert (await pg_store.counts())["drift_events"] == 1


async def test_from_settings_and_secrets_stay_out_of_store_and_logs(
        pg_store: PostgresStore, hook_server: RecordingServer,
        caplog: pytest.LogCaptureFixture) -> None:
    from driftline.streams.config import Settings

    secret = "whsec-do-not-leak-42"
    settings = Settings.from_env({
        "DRIFTLINE_WEBHOOK_URL": hook_server.url + "/retrain",
        "DRIFTLINE_WEBHOOK_SECRET": secret,
        "DRIFTLINE_RETRAIN_COMMAND": f"{sys.executable} -c 'import sys; sys.stdin.read()'",
        "DRIFTLINE_COOLDOWN_S": "120", "DRIFTLINE_WEBHOOK_TIMEOUT_S": "2.5"})
    svc = RetrainService.from_settings(settings, pg_store)
    assert svc.policy.default.cooldown_s == 120.0
    webhook, command = svc.triggers
    assert isinstance(webhook, WebhookTrigger) and webhook.timeout_s == 2.5
    assert isinstance(command, CommandTrigger) and command.argv[0] == sys.executable
    assert secret not in repr(webhook) and secret not in repr(settings)
    caplog.set_level("DEBUG")
    assert await svc.handle([drift_event(1)], now=1.0) == []  # 5 s grouping window
    [req] = await svc.tick(now=6.0)
    await svc.drain()
    [job] = await pg_store.jobs()
    assert job["state"] == "running" and job["job_id"] == req["job_id"]
    assert [t["trigger"] for t in job["detail"]["triggers"]] == ["webhook", "command"]
    rec = hook_server.requests[-1]
    assert verify(rec.body, secret, rec.headers["X-Driftline-Signature"])
    tables = " union all ".join(f"select to_jsonb(t)::text x from {t} t" for t in (
        "drift_events", "retrain_decisions", "retrain_jobs", "retrain_job_transitions"))
    [dump] = await pg_store.fetch(f"select string_agg(x, '') s from ({tables}) d")
    assert req["job_id"] in dump["s"] and secret not in dump["s"]
    assert secret not in caplog.text


async def _outcomes(store: PostgresStore) -> list[str]:
    rows = await store.fetch("select outcome from retrain_decisions order by decided_at")
    return [r["outcome"] for r in rows]


async def test_a_receiver_outage_does_not_spend_the_cooldown(pg_store: PostgresStore) -> None:
    """The webhook receiver is down (503) when the first drift acts: that job fails and
    the next drift acts again instead of waiting out an hour's cooldown; once a job is
    accepted, the cooldown holds -- also after a restart, which counts only accepted jobs."""
    receiver_up = False
    server = await RecordingServer(
        lambda rec: web.Response(status=202 if receiver_up else 503)).start()
    try:
        svc = service(pg_store, server.url, cooldown=3600.0)
        [first] = await svc.handle([drift_event(1)], now=100.0)
        await svc.drain()
        assert len(server.requests) == 3  # every attempt refused
        receiver_up = True
        [second] = await svc.handle([drift_event(2)], now=190.0)  # 90 s later
        await svc.drain()
        assert await svc.handle([drift_event(3)], now=200.0) == []
        states = {j["job_id"]: j["state"] for j in await pg_store.jobs()}
        assert states == {first["job_id"]: "failed", second["job_id"]: "running"}
        assert await _outcomes(pg_store) == ["act", "act", "suppressed_cooldown"]
        # m2's only job failed while the receiver was down.
        receiver_up = False
        await svc.handle([drift_event(1, model_id="m2")], now=210.0)
        await svc.drain()
        receiver_up = True
        restarted = service(pg_store, server.url, cooldown=3600.0)
        await restarted.recover(now=300.0)
        assert await restarted.handle([drift_event(4)], now=301.0) == []  # m1: accepted
        [m2] = await restarted.handle([drift_event(2, model_id="m2")], now=302.0)
        await restarted.drain()
    finally:
        await server.stop()
    assert m2["model_id"] == "m2"
    rows = await pg_store.fetch("select model_id, outcome, reason from retrain_decisions"
                                " order by decided_at")
    assert [(r["model_id"], r["outcome"]) for r in rows] == [
        ("m1", "act"), ("m1", "act"), ("m1", "suppressed_cooldown"), ("m2", "act"),
        ("m1", "suppressed_cooldown"), ("m2", "act")]
    assert "the last retrain of m1 was 111s ago" in rows[4]["reason"]  # from 190, not 100


async def test_a_second_drift_waits_for_the_job_in_flight(pg_store: PostgresStore) -> None:
    """While the receiver has not answered, a new drift of the same model and action makes
    no second job; once the job is accepted its cooldown suppresses the next."""
    release = asyncio.Event()

    async def answer(rec: Any) -> web.Response:
        await release.wait()
        return web.Response(status=202)

    server = await RecordingServer(answer).start()
    try:
        svc = service(pg_store, server.url, cooldown=3600.0)
        [req] = await svc.handle([drift_event(1)], now=10.0)
        await server.wait_for(1)
        assert await svc.handle([drift_event(2)], now=20.0) == []
        release.set()
        await svc.drain()
        assert await svc.handle([drift_event(3)], now=30.0) == []
    finally:
        release.set()
        await server.stop()
    assert await _outcomes(pg_store) == ["act", "suppressed_in_flight", "suppressed_cooldown"]
    [job] = await pg_store.jobs()
    assert (job["job_id"], job["state"]) == (req["job_id"], "running")
    assert len(server.requests) == 1


class RecordingTrigger:
    """A trigger of a user's own, through the Trigger protocol."""

    name = "recording"

    def __init__(self, actions: set[str]) -> None:
        self.actions = actions
        self.fired: list[str] = []

    def handles(self, action: str) -> bool:
        return action in self.actions

    async def fire(self, request: Any) -> TriggerResult:
        self.fired.append(request["job_id"])
        return TriggerResult(self.name, True, 1, 0.0)


async def test_the_service_fires_each_trigger_of_its_list_that_handles_the_action(
        pg_store: PostgresStore) -> None:
    retrains, alerts = RecordingTrigger({"retrain", "reindex"}), RecordingTrigger({"alert"})
    svc = RetrainService(pg_store, RetrainPolicy(PolicyConfig(group_window_s=0.0,
                                                              cooldown_s=0.0)),
                         triggers=[retrains, alerts])
    [req] = await svc.handle([drift_event(1)], now=1000.0)
    await svc.drain()
    assert req["action"] == "retrain"
    assert (retrains.fired, alerts.fired) == ([req["job_id"]], [])
    [job] = await pg_store.jobs()
    assert job["state"] == "running"
