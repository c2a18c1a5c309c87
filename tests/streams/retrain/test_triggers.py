"""Triggers against real endpoints: a local HTTP server and real subprocesses."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from driftline.streams.retrain.triggers import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    CommandTrigger,
    WebhookTrigger,
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
