"""The retry schedule the README promises ("exponential backoff and jitter"): the delay
before retry k is d/2 plus a uniform jitter up to d/2, with d = initial * multiplier**k
capped at max_s; the store's retry loop and the webhook sleep exactly those delays."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from driftline.streams.retrain.triggers import WebhookTrigger
from driftline.streams.store.base import RetryPolicy, retrying
from driftline.streams.store.errors import StoreUnavailable

from tests.streams.store.http_server import Recorded, RecordingServer


def _nominal(policy: RetryPolicy, n: int) -> list[float]:
    return [min(policy.max_s, policy.initial_s * policy.multiplier ** k) for k in range(n)]


def test_default_schedule_doubles_from_a_tenth_of_a_second_to_five() -> None:
    assert _nominal(RetryPolicy(), 9) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_each_delay_is_half_fixed_half_jitter_drawn_from_the_given_rng() -> None:
    policy = RetryPolicy()
    got = [policy.delay(k, random.Random(11)) for k in range(9)]
    for k, (d, delay) in enumerate(zip(_nominal(policy, 9), got, strict=True)):
        assert delay == d / 2 + random.Random(11).uniform(0, d / 2), k
    # One rng across retries, as the loop uses it: the same draws, in order.
    rng = random.Random(5)
    seq = [policy.delay(k, rng) for k in range(9)]
    ref = random.Random(5)
    assert seq == [d / 2 + ref.uniform(0, d / 2) for d in _nominal(policy, 9)]


def test_jitter_spreads_over_the_upper_half_of_each_step() -> None:
    policy = RetryPolicy()
    rng = random.Random(3)
    for k, d in enumerate(_nominal(policy, 8)):
        draws = [policy.delay(k, rng) for _ in range(4000)]
        assert d / 2 <= min(draws) < d / 2 * 1.01 and d * 0.99 < max(draws) <= d
        # Uniform on [d/2, d]: mean 3d/4, sd d/(4 sqrt 3); 4,000 draws put the mean within
        # 5 sd of the mean's sd (d/(4 sqrt 3)/sqrt 4000 = 0.0011 d) with p > 1 - 1e-6.
        assert abs(sum(draws) / len(draws) - 0.75 * d) < 0.006 * d


def _recording_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    real = asyncio.sleep

    async def sleep(delay: float, *args: Any) -> None:
        slept.append(delay)
        await real(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


def _failing(times: int) -> Callable[[], Awaitable[str]]:
    calls = {"n": 0}

    async def op() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise OSError("connection refused")
        return "ok"
    return op


async def test_the_store_retry_loop_sleeps_the_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = _recording_sleep(monkeypatch)
    policy = RetryPolicy(initial_s=0.1, max_s=0.5, attempts=None)
    got = await retrying(_failing(5), what="write", policy=policy, rng=random.Random(9),
                         transient=lambda e: isinstance(e, OSError))
    assert got == "ok"
    ref = random.Random(9)
    assert slept == [d / 2 + ref.uniform(0, d / 2) for d in (0.1, 0.2, 0.4, 0.5, 0.5)]
    # A budget of three attempts: two sleeps, then it gives up.
    slept.clear()
    with pytest.raises(StoreUnavailable, match=r"gave up after 3 attempts"):
        await retrying(_failing(5), what="write", policy=RetryPolicy(attempts=3),
                       rng=random.Random(9), transient=lambda e: isinstance(e, OSError))
    ref = random.Random(9)
    assert slept == [d / 2 + ref.uniform(0, d / 2) for d in (0.1, 0.2)]


async def test_the_webhook_sleeps_the_schedule_between_its_six_attempts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(rec: Recorded) -> web.Response:
        return web.Response(status=503)

    server = RecordingServer(answer)
    await server.start()
    slept = _recording_sleep(monkeypatch)
    try:
        hook = WebhookTrigger(server.url + "/hook", "s3cret", rng=random.Random(4))
        result = await hook.fire({"action_id": "a1", "model_id": "m"})
        between = list(slept)  # (stopping the server sleeps too)
    finally:
        await server.stop()
    assert (result.ok, result.attempts, result.error) == (False, 6, "HTTP 503")
    assert len(server.requests) == 6
    # The webhook's default policy: from half a second, doubling, capped at 30 s.
    ref = random.Random(4)
    assert between == [d / 2 + ref.uniform(0, d / 2) for d in (0.5, 1.0, 2.0, 4.0, 8.0)]


async def test_every_failed_attempt_is_one_log_line_and_the_recovery_another(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An outage is visible while it lasts: a line per failed attempt (what, why, the
    next delay; never the password), one when the store answers again."""
    slept = _recording_sleep(monkeypatch)
    dsn = "postgresql://u:hunter2@db.example:5432/x"
    calls = {"n": 0}

    async def op() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(f"connect to {dsn} failed\nsecond line")
        if calls["n"] == 2:
            await asyncio.Event().wait()  # hangs: the attempt's timeout ends it
        return "ok"

    caplog.set_level("WARNING", logger="driftline.store")
    policy = RetryPolicy(initial_s=0.1, max_s=0.5, timeout_s=0.05)
    assert await retrying(op, what="write interactions", policy=policy,
                          rng=random.Random(1), transient=lambda e: isinstance(e, OSError),
                          secrets=[dsn]) == "ok"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"store unavailable: write interactions: OSError: connect to *** failed second line"
        f" (attempt 1; retrying in {slept[0]:.1f} s)",
        "store unavailable: write interactions: no answer within 0.05 s"
        f" (attempt 2; retrying in {slept[1]:.1f} s)",
        "store back: write interactions succeeded after 2 failed attempts"]


@pytest.mark.parametrize("backend", ["postgres", "rest"])
async def test_a_store_not_started_or_closed_is_unavailable_not_a_refusal(backend: str) -> None:
    """A worker that stops closes its store while an agent may still be writing: that
    must read as the store being away (the agent stops without committing; the rows are
    read again), never as the rows refused for good (which dead-letters them and commits:
    the chaos benchmark lost 14,664 store rows that way). No attempt is retried either."""
    from driftline.streams.store.postgres import PostgresStore
    from driftline.streams.store.rest import RestStore

    store: Any = (PostgresStore("postgresql://u:p@127.0.0.1:1/db") if backend == "postgres"
                  else RestStore("http://127.0.0.1:1", "key"))
    rows = [{"event_id": "e1", "model_id": "m", "ts": 1.0}]
    with pytest.raises(StoreUnavailable, match="store not started, or closed"):
        await asyncio.wait_for(store.write_interactions(rows), 5)
