"""Retrain triggers: what the retrain service fires for a job. :class:`Trigger` is the
protocol; a signed webhook and a local command implement it. (Every retrain request is
also published on ``driftline.retrain-requests`` by the retrain agent, with or without
triggers.) A trigger returns a :class:`TriggerResult` and never raises on failure, so
every outcome gets recorded.

Webhook contract (for receivers):

* ``POST <DRIFTLINE_WEBHOOK_URL>``, body = the retrain request as JSON (UTF-8, sorted keys).
* ``X-Driftline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body bytes>",
  keyed with DRIFTLINE_WEBHOOK_SECRET>`` (Stripe's scheme). Receivers check it with
  :func:`verify`: the MAC (in constant time) and that ``t`` is within their replay window
  (``tolerance_s``, 5 minutes by default) of their clock, so a captured request replayed
  later is refused. Every attempt is signed anew, with its own ``t``.
* ``Idempotency-Key: <action_id>`` — the same action is retried (and may be re-sent after a
  restart) with the same key: process it once (this also makes a replay within the window
  harmless).
* 2xx = accepted. 408, 429 and 5xx (and network errors, timeouts) are retried with
  exponential backoff and jitter; any other status fails at once.
* Each attempt has one deadline for all of it (``timeout_s``: connect, send, the status
  and the whole response body), so a receiver that trickles its answer cannot hold a
  trigger longer than that.

Command contract: ``DRIFTLINE_RETRAIN_COMMAND`` is split with :func:`shlex.split` into an
argument vector and executed without a shell; the request JSON arrives on stdin; exit code
0 = accepted. Store and webhook secrets are removed from its environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx
import orjson
from driftline.streams.config import Secret
from driftline.streams.store.base import RetryPolicy

SIGNATURE_HEADER = "X-Driftline-Signature"
SIGNATURE_TOLERANCE_S = 300.0  # a receiver's default replay window
IDEMPOTENCY_HEADER = "Idempotency-Key"
_RETRY_STATUS = {408, 425, 429}
# never handed to a retrain command
SECRET_ENV = ("DATABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "DRIFTLINE_WEBHOOK_SECRET")


@dataclass(frozen=True)
class TriggerResult:
    """How one trigger went (recorded in the job's transition detail)."""

    trigger: str
    ok: bool
    attempts: int
    duration_s: float
    status: int | None = None      # last HTTP status (webhook)
    exit_code: int | None = None   # command
    error: str | None = None       # short, secret-free

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Trigger(Protocol):
    """Something the retrain service fires for a job: ``fire`` the request (the retrain
    request of :func:`driftline.streams.retrain.service.request_of`) for the actions it
    ``handles``; a failure is a result (``ok=False``), not an exception."""

    name: str

    def handles(self, action: str) -> bool:
        """True when this trigger fires for jobs of ``action`` (retrain, reindex, alert)."""
        ...

    async def fire(self, request: Mapping[str, Any]) -> TriggerResult:
        ...


def body_of(request: Mapping[str, Any]) -> bytes:
    return orjson.dumps(request, option=orjson.OPT_SORT_KEYS)


def _mac(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: float | None = None) -> str:
    """The ``X-Driftline-Signature`` value for ``body`` sent at ``timestamp`` (unix
    seconds; now by default): ``t=<timestamp>,v1=<HMAC-SHA256 of "<t>.<body>">``."""
    t = int(time.time() if timestamp is None else timestamp)
    return f"t={t},v1={_mac(body, secret, t)}"


def verify(body: bytes, secret: str | Sequence[str], header: str | None, *,
           tolerance_s: float = SIGNATURE_TOLERANCE_S, now: float | None = None) -> bool:
    """Receiver side: does ``header`` sign ``body``, made within ``tolerance_s`` of
    ``now`` (unix seconds; the receiver's clock by default)?

    Refused: no or a malformed header, a timestamp older than the window (a captured
    request replayed later) or further ahead than it, a MAC that matches no ``secret``
    (several while a secret is rotated) for none of the header's ``v1`` values.
    """
    if not header:
        return False
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif key == "v1" and value:
            macs.append(value)
    if timestamp is None or not macs:
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        return False
    secrets = [secret] if isinstance(secret, str) else list(secret)
    expected = [_mac(body, s, timestamp) for s in secrets if s]
    # Every pair compared (no early exit), in constant time each.
    return sum(hmac.compare_digest(e, m) for e in expected for m in macs) > 0


class WebhookTrigger:
    """POST the request, signed, with its action id as idempotency key; retry transient
    failures."""

    name = "webhook"

    def __init__(self, url: str, secret: Secret | str, *, timeout_s: float = 10.0,
                 retry: RetryPolicy | None = None, rng: random.Random | None = None,
                 client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook url must be http:// or https://")
        self.url = url
        self._secret = secret if isinstance(secret, Secret) else Secret(secret)
        if not self._secret:
            raise ValueError("a webhook needs DRIFTLINE_WEBHOOK_SECRET")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy(initial_s=0.5, max_s=30.0, attempts=6)
        self._rng = rng or random.Random()
        self._client = client
        self._clock = clock  # signature timestamps

    def __repr__(self) -> str:
        return f"WebhookTrigger(url={self.url!r}, secret={self._secret!r})"

    def handles(self, action: str) -> bool:
        return True  # every action, alerts included: the receiver decides

    async def fire(self, request: Mapping[str, Any]) -> TriggerResult:
        body = body_of(request)
        headers = {"Content-Type": "application/json",
                   "User-Agent": "driftline",
                   IDEMPOTENCY_HEADER: str(request["action_id"])}
        client = self._client or httpx.AsyncClient()
        t0 = time.perf_counter()
        attempts = 0
        status: int | None = None
        error: str | None = None
        limit = self.retry.attempts or 6  # a webhook gives up, and the failure is recorded
        try:
            while attempts < limit:
                attempts += 1
                # Signed per attempt: a retry after a long backoff is inside the window.
                headers[SIGNATURE_HEADER] = sign(body, self._secret.get(), self._clock())
                try:
                    # One deadline for the whole attempt: httpx's own timeouts are per
                    # phase (and per read), which a trickling receiver never trips.
                    async with asyncio.timeout(self.timeout_s):
                        resp = await client.post(self.url, content=body, headers=headers,
                                                 timeout=self.timeout_s)
                    status, error = resp.status_code, None
                    if resp.is_success:
                        return TriggerResult(self.name, True, attempts,
                                             time.perf_counter() - t0, status=status)
                    error = f"HTTP {status}"
                    if status < 500 and status not in _RETRY_STATUS:
                        break
                except TimeoutError:
                    status, error = None, f"timed out after {self.timeout_s:g}s"
                except httpx.TransportError as exc:  # connect errors, httpx's timeouts
                    status, error = None, type(exc).__name__
                except Exception as exc:  # e.g. an invalid URL: retrying will not help
                    status, error = None, type(exc).__name__
                    break
                if attempts < limit:
                    await asyncio.sleep(self.retry.delay(attempts - 1, self._rng))
        finally:
            if self._client is None:
                await client.aclose()
        return TriggerResult(self.name, False, attempts, time.perf_counter() - t0,
                             status=status, error=error)


class CommandTrigger:
    """Run an argument vector (no shell) with the request JSON on stdin, for the actions
    that change a model (``retrain``, ``reindex``; not alerts)."""

    name = "command"
    ACTIONS = ("retrain", "reindex")

    def __init__(self, command: str | Sequence[str], *, timeout_s: float = 600.0,
                 env: Mapping[str, str] | None = None,
                 actions: Sequence[str] = ACTIONS) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("retrain command is empty")
        self.timeout_s = timeout_s
        base = dict(os.environ if env is None else env)
        self._env = {k: v for k, v in base.items() if k not in SECRET_ENV}
        self.actions = tuple(actions)

    def __repr__(self) -> str:
        return f"CommandTrigger(argv={self.argv!r})"

    def handles(self, action: str) -> bool:
        return action in self.actions

    async def fire(self, request: Mapping[str, Any]) -> TriggerResult:
        t0 = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                env=self._env)
        except OSError as exc:
            return TriggerResult(self.name, False, 1, time.perf_counter() - t0,
                                 error=f"cannot start: {type(exc).__name__}")
        try:
            await asyncio.wait_for(proc.communicate(body_of(request)), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return TriggerResult(self.name, False, 1, time.perf_counter() - t0,
                                 exit_code=proc.returncode,
                                 error=f"timed out after {self.timeout_s:g}s")
        code = proc.returncode
        return TriggerResult(self.name, code == 0, 1, time.perf_counter() - t0,
                             exit_code=code, error=None if code == 0 else f"exit {code}")
