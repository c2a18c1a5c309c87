"""Triggers against real endpoints: a local HTTP server and real subprocesses."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import sys
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiohttp import web
from driftline.streams.retrain.triggers import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    CommandTrigger,
    WebhookTrigger,
    sign,
    verify,
)
from driftline.streams.store.base import RetryPolicy

from tests.streams.store.http_server import Recorded, RecordingServer

SECRET = "whsec-test-0123456789"
REQUEST = {"action_id": "a" * 32, "job_id": "a" * 32, "model_id": "m1", "action": "retrain",
           "drift_ids": ["d1", "d2"]}
FAST = RetryPolicy(initial_s=0.01, max_s=0.05, attempts=5)


@pytest.fixture
async def flaky() -> AsyncIterator[RecordingServer]:
    """503 for the first two requests, then 202."""
    def answer(rec: Recorded) -> web.Response:
        return web.Response(status=503 if len(server.requests) <= 2 else 202)

    server = RecordingServer(answer)
    await server.start()
    yield server
    await server.stop()


async def test_webhook_signs_retries_and_succeeds(flaky: RecordingServer) -> None:
    hook = WebhookTrigger(flaky.url + "/hooks/retrain", SECRET, retry=FAST,
                          rng=random.Random(3))
    result = await hook.fire(REQUEST)
    assert result.ok and result.attempts == 3 and result.status == 202
    assert len(flaky.requests) == 3
    for rec in flaky.requests:
        assert rec.method == "POST" and rec.path == "/hooks/retrain"
        assert verify(rec.body, SECRET, rec.headers[SIGNATURE_HEADER])
        assert not verify(rec.body + b" ", SECRET, rec.headers[SIGNATURE_HEADER])
        assert rec.headers[IDEMPOTENCY_HEADER] == REQUEST["action_id"]
        assert rec.headers["Content-Type"] == "application/json"
        assert orjson.loads(rec.body) == REQUEST
    assert len({r.body for r in flaky.requests}) == 1  # retries send the same bytes
    assert SECRET not in repr(hook)


async def test_webhook_final_failure_is_reported() -> None:
    server = await RecordingServer(lambda rec: web.Response(status=500)).start()
    try:
        result = await WebhookTrigger(server.url, SECRET, retry=FAST,
                                      rng=random.Random(0)).fire(REQUEST)
    finally:
        await server.stop()
    assert not result.ok and result.attempts == 5 and result.error == "HTTP 500"
    assert len(server.requests) == 5


async def test_webhook_client_error_is_not_retried() -> None:
    server = await RecordingServer(lambda rec: web.Response(status=401)).start()
    try:
        result = await WebhookTrigger(server.url, SECRET, retry=FAST).fire(REQUEST)
    finally:
        await server.stop()
    assert not result.ok and result.attempts == 1 and result.status == 401


async def test_webhook_timeout_is_retried() -> None:
    release = asyncio.Event()

    async def answer(rec: Recorded) -> web.Response:
        if len(server.requests) == 1:
            await release.wait()  # hang past the client's timeout
        return web.Response(status=200)

    server = await RecordingServer(answer).start()
    try:
        result = await WebhookTrigger(server.url, SECRET, timeout_s=0.2, retry=FAST,
                                      rng=random.Random(1)).fire(REQUEST)
    finally:
        release.set()
        await server.stop()
    assert result.ok and result.attempts == 2


async def test_webhook_unreachable_gives_up() -> None:
    result = await WebhookTrigger("http://127.0.0.1:9/x", SECRET,
                                  retry=RetryPolicy(initial_s=0.001, attempts=2)).fire(REQUEST)
    assert not result.ok and result.attempts == 2 and result.error == "ConnectError"


def test_webhook_requires_a_secret() -> None:
    with pytest.raises(ValueError, match="a webhook needs DRIFTLINE_WEBHOOK_SECRET"):
        WebhookTrigger("http://127.0.0.1:9/x", "")


SCRIPT = """
import json, os, sys
req = json.load(sys.stdin)
with open(sys.argv[1], "w") as f:
    json.dump({"req": req, "argv": sys.argv[1:],
               "leaked": [k for k in ("DATABASE_URL", "DRIFTLINE_WEBHOOK_SECRET")
                          if k in os.environ]}, f)
sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 3])
async def test_command_gets_json_on_stdin_and_exit_code_is_recorded(tmp_path, code) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "retrain.py"
    script.write_text(SCRIPT)
    out = tmp_path / "seen; rm -rf $HOME.json"  # a hostile name stays one argument
    cmd = CommandTrigger([sys.executable, str(script), str(out), str(code)],
                         env={"DATABASE_URL": "postgresql://u:pw@h/d", "PATH": "/usr/bin"})
    result = await cmd.fire(REQUEST)
    assert result.exit_code == code and result.ok is (code == 0)
    assert result.duration_s > 0
    seen = json.loads(out.read_text())
    assert seen["req"] == REQUEST and seen["argv"][0] == str(out)
    assert seen["leaked"] == []


async def test_command_from_a_string_is_split_not_shelled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    cmd = CommandTrigger(f"{sys.executable} -c 'import sys; sys.stdin.read()' "
                         f"; touch {marker}")
    result = await cmd.fire(REQUEST)
    assert result.ok and not marker.exists()


async def test_command_timeout_and_missing_binary() -> None:
    slow = CommandTrigger([sys.executable, "-c", "import time; time.sleep(30)"],
                          timeout_s=0.3)
    r = await slow.fire(REQUEST)
    assert not r.ok and "timed out" in (r.error or "")
    missing = await CommandTrigger(["/nonexistent/retrain"]).fire(REQUEST)
    assert not missing.ok and "cannot start" in (missing.error or "")


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="webhook url must be http:// or https://"):
        WebhookTrigger("ftp://127.0.0.1/x", SECRET)


# -- signatures with a timestamp and the receiver's replay window ----------------------

def test_signature_is_t_and_v1_over_timestamp_dot_body() -> None:
    body = b'{"action_id":"a"}'
    header = sign(body, SECRET, timestamp=1_767_225_600.7)
    t, v1 = header.split(",")
    assert t == "t=1767225600"
    # Computed here independently: HMAC-SHA256 of "<t>.<body>" keyed with the secret.
    assert v1 == "v1=" + hmac.new(SECRET.encode(), b"1767225600." + body,
                                  hashlib.sha256).hexdigest()


def test_verify_holds_the_replay_window_and_refuses_forgeries() -> None:
    body, t = b'{"action_id":"a"}', 1_767_225_600
    header = sign(body, SECRET, timestamp=t)
    assert verify(body, SECRET, header, now=t)
    assert verify(body, SECRET, header, now=t + 300)               # at the window's edge
    assert not verify(body, SECRET, header, now=t + 301)           # replayed too late
    assert not verify(body, SECRET, header, now=t - 301)           # from the future
    assert verify(body, SECRET, header, now=t + 3500, tolerance_s=3600)
    assert not verify(body, SECRET, header, now=t + 60, tolerance_s=30)
    assert not verify(body + b" ", SECRET, header, now=t)          # body changed
    assert not verify(body, "another-secret", header, now=t)
    forged_t = header.replace(f"t={t}", f"t={t + 100}")            # fresh t, old MAC
    assert not verify(body, SECRET, forged_t, now=t + 100)
    old_style = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for bad in (None, "", old_style, "t=abc," + header.split(",")[1], header.split(",")[1],
                header.split(",")[0], f"t=-{t},v1=00", "t=\u0661\u0662,v1=00"):
        assert not verify(body, SECRET, bad, now=t), bad
    # Several v1 values or secrets (rotation): one match is enough.
    assert verify(body, SECRET, f"{header},v1={'0' * 64}", now=t)
    assert verify(body, ["new-secret", SECRET], header, now=t)


def _verifying_receiver(now: list[float], seen: set[str]) -> RecordingServer:
    """A receiver as the docs describe one: signature within 300 s of its clock, then
    each Idempotency-Key processed once."""
    def answer(rec: Recorded) -> web.Response:
        if not verify(rec.body, SECRET, rec.headers.get(SIGNATURE_HEADER), now=now[0]):
            return web.Response(status=401)
        key = rec.headers[IDEMPOTENCY_HEADER]
        status = 200 if key in seen else 202  # a duplicate is acknowledged, not redone
        seen.add(key)
        return web.Response(status=status)
    return RecordingServer(answer)


async def test_a_captured_request_replayed_after_the_window_is_refused() -> None:
    clock = [1_767_225_600.0]
    seen: set[str] = set()
    server = await _verifying_receiver(clock, seen).start()
    try:
        hook = WebhookTrigger(server.url, SECRET, retry=FAST, clock=lambda: clock[0])
        assert (await hook.fire(REQUEST)).status == 202
        captured = server.requests[0]
        headers = {k: captured.headers[k] for k in (SIGNATURE_HEADER, IDEMPOTENCY_HEADER,
                                                    "Content-Type")}
        async with httpx.AsyncClient() as client:
            clock[0] += 60  # replayed within the window: the idempotency key holds
            again = await client.post(server.url, content=captured.body, headers=headers)
            clock[0] += 300  # replayed after it: refused
            late = await client.post(server.url, content=captured.body, headers=headers)
    finally:
        await server.stop()
    assert (again.status_code, late.status_code) == (200, 401)
    assert seen == {REQUEST["action_id"]}


async def test_every_attempt_is_signed_with_its_own_timestamp(flaky: RecordingServer) -> None:
    """Retries after long backoffs (here 400 s apart on the trigger's clock) each verify
    within a 300 s window: they are signed when sent, not when the job was made."""
    ticks = iter([1_000.0, 1_400.0, 1_800.0])
    sent: list[float] = []

    def clock() -> float:
        sent.append(next(ticks))
        return sent[-1]

    result = await WebhookTrigger(flaky.url, SECRET, retry=FAST, rng=random.Random(3),
                                  clock=clock).fire(REQUEST)
    assert result.ok and result.attempts == 3
    stamps = [int(r.headers[SIGNATURE_HEADER].split(",")[0][2:]) for r in flaky.requests]
    assert stamps == [1_000, 1_400, 1_800]
    for rec, at in zip(flaky.requests, sent, strict=True):
        assert verify(rec.body, SECRET, rec.headers[SIGNATURE_HEADER], now=at)
    assert not verify(flaky.requests[0].body, SECRET,
                      flaky.requests[0].headers[SIGNATURE_HEADER], now=sent[-1])


# -- one deadline for the whole request ---------------------------------------------------

async def test_a_receiver_that_trickles_its_answer_hits_the_whole_request_timeout() -> None:
    """Headers at once, then a byte every 50 ms for 3 s: no single read waits longer than
    httpx's per-phase timeout, but the attempt as a whole must end at ``timeout_s``."""
    attempts = 0

    async def trickle(request: web.Request) -> web.StreamResponse:
        nonlocal attempts
        attempts += 1
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        try:
            for _ in range(60):
                await resp.write(b"x")
                await asyncio.sleep(0.05)  # the receiver's pace, not a wait in the test
        except (ConnectionResetError, RuntimeError):  # the client gave up
            pass
        return resp

    app = web.Application()
    app.router.add_post("/hook", trickle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        result = await WebhookTrigger(f"http://127.0.0.1:{port}/hook", SECRET, timeout_s=0.4,
                                      retry=RetryPolicy(initial_s=0.01, attempts=2),
                                      rng=random.Random(2)).fire(REQUEST)
    finally:
        await runner.cleanup()
    assert not result.ok and result.attempts == 2 and attempts == 2
    assert result.error == "timed out after 0.4s" and result.status is None
