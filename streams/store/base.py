"""The store interface, its row shapes, and the retry loop both backends share.

Rows are plain JSON-able dicts (timestamps as RFC 3339 strings) so that the direct
Postgres backend (``jsonb_to_recordset``) and the REST backend (PostgREST JSON) send the
same thing and behave the same.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import numpy as np
from driftline.streams.metrics import Metrics
from driftline.streams.store.errors import StoreError, StoreUnavailable, redact

T = TypeVar("T")
log = logging.getLogger("driftline.store")

TABLES = ("drift_events", "retrain_decisions", "retrain_jobs", "retrain_job_transitions",
          "model_versions", "interactions")
JOB_STATES = ("requested", "running", "succeeded", "failed")
TERMINAL = ("succeeded", "failed")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter. ``attempts=None`` retries until it works: the
    caller blocks, which is the backpressure (no new Kafka reads, no offset commit)."""

    initial_s: float = 0.1
    max_s: float = 5.0
    multiplier: float = 2.0
    attempts: int | None = None
    timeout_s: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before retry number ``attempt`` (0-based): half fixed, half jitter."""
        d = min(self.max_s, self.initial_s * self.multiplier ** attempt)
        return d / 2 + rng.uniform(0, d / 2)


async def retrying(op: Callable[[], Awaitable[T]], *, what: str, policy: RetryPolicy,
                   rng: random.Random, transient: Callable[[BaseException], bool],
                   secrets: Sequence[str | None] = (),
                   on_error: Callable[[BaseException], None] | None = None) -> T:
    """Run ``op`` until it succeeds; retry transient failures with backoff.

    Every attempt is bounded by ``policy.timeout_s``; every failed attempt logs one line
    (what failed, why, when the next attempt is), and the first success after failures
    says the store is back — an outage is visible, never a silent hang. A non-transient
    error raises :class:`StoreError`, an exhausted budget :class:`StoreUnavailable`; both
    with a message free of ``secrets``.
    """
    attempt = 0
    while True:
        try:
            result = await asyncio.wait_for(op(), policy.timeout_s)
        except (asyncio.CancelledError, StoreUnavailable):
            raise  # (the store said it is not there: no attempt of ours can change it)
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            msg = failure_line(what, exc, policy.timeout_s, secrets)
            if not transient(exc):
                raise StoreError(msg) from None
            if policy.attempts is not None and attempt + 1 >= policy.attempts:
                raise StoreUnavailable(f"{msg} (gave up after {attempt + 1} attempts)") \
                    from None
            delay = policy.delay(attempt, rng)
            log.warning("store unavailable: %s (attempt %d; retrying in %.1f s)", msg,
                        attempt + 1, delay)
            await asyncio.sleep(delay)
            attempt += 1
            continue
        if attempt:
            log.warning("store back: %s succeeded after %d failed attempts", what, attempt)
        return result


def failure_line(what: str, exc: BaseException, timeout_s: float,
                 secrets: Sequence[str | None] = ()) -> str:
    """One line saying what failed and why, free of ``secrets``."""
    if isinstance(exc, TimeoutError) and not str(exc):
        why = f"no answer within {timeout_s:g} s"
    else:
        why = f"{type(exc).__name__}: {exc}"
    return " ".join(redact(f"{what}: {why}", *secrets).split())


async def observed(op: Callable[[], Awaitable[T]], *, what: str, table: str, backend: str,
                   policy: RetryPolicy, rng: random.Random,
                   transient: Callable[[BaseException], bool], secrets: Sequence[str | None],
                   metrics: Metrics | None) -> T:
    """:func:`retrying`, counting errors and retries and keeping ``driftline_store_up``."""

    def on_error(exc: BaseException) -> None:
        if metrics is not None:
            metrics.store_errors.labels(table).inc()
            metrics.store_up.labels(backend).set(0)
            if transient(exc):
                metrics.store_retries.labels(table).inc()

    result = await retrying(op, what=what, policy=policy, rng=rng, transient=transient,
                            secrets=secrets, on_error=on_error)
    if metrics is not None:
        metrics.store_up.labels(backend).set(1)
    return result


def chunks(rows: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def to_datetime(value: Any) -> datetime:
    """An aware UTC datetime from epoch seconds, a datetime or an RFC 3339 string."""
    if isinstance(value, bool):
        raise TypeError("timestamp must not be a bool")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value)
    else:
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso(value: Any) -> str | None:
    """RFC 3339 (UTC) from epoch seconds, a datetime or an RFC 3339 string."""
    return None if value is None else to_datetime(value).isoformat()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def drift_row(event: dict[str, Any]) -> dict[str, Any]:
    """The ``drift_events`` row of a schema-v1 drift event (the event itself kept as raw)."""
    return {
        "drift_id": str(event["drift_id"]),
        "schema_version": int(event.get("schema_version", 1)),
        "model_id": str(event["model_id"]),
        "model_version": event.get("model_version"),
        "kind": str(event["kind"]),
        "signal": str(event["signal"]),
        "detector": str(event["detector"]),
        "trigger_event_id": event.get("trigger_event_id"),
        "detected_at": iso(event["detected_at"]),
        "baseline": _num(event.get("baseline")),
        "current": _num(event.get("current")),
        "severity": float(event.get("severity") or 0.0),
        # A segment's detection names it ({key: value}); model-level ones: null.
        "segment": event["segment"] if isinstance(event.get("segment"), dict) else None,
        "raw": event,
    }


def embedding_of(interaction: dict[str, Any]) -> np.ndarray | None:
    """The interaction's embedding as float32, from ``embedding`` or ``embedding_b64``."""
    emb = interaction.get("embedding")
    if emb is not None:
        return np.asarray(emb, dtype=np.float32)
    b64 = interaction.get("embedding_b64")
    if b64:
        return np.frombuffer(base64.b64decode(b64), dtype="<f4").astype(np.float32)
    return None


INTERACTION_COLUMNS = ("event_id", "model_id", "model_version", "ts", "latency_ms",
                       "input_tokens", "output_tokens", "refusal", "feedback", "correct",
                       "embedding", "metadata")


def interaction_row(interaction: dict[str, Any]) -> dict[str, Any]:
    """The ``interactions`` row (embedding as float32 array, ts as RFC 3339)."""
    fb = interaction.get("feedback")
    return {
        "event_id": str(interaction["event_id"]),
        "model_id": str(interaction["model_id"]),
        "model_version": interaction.get("model_version"),
        "ts": iso(interaction["ts"]),
        "latency_ms": _num(interaction.get("latency_ms")),
        "input_tokens": interaction.get("input_tokens"),
        "output_tokens": interaction.get("output_tokens"),
        "refusal": interaction.get("refusal"),
        "feedback": None if fb is None else int(fb),
        "correct": interaction.get("correct"),
        "embedding": embedding_of(interaction),
        "metadata": interaction.get("metadata"),
    }


def decision_row(decision: dict[str, Any]) -> dict[str, Any]:
    return {
        "decision_id": str(decision["decision_id"]),
        "model_id": str(decision["model_id"]),
        "model_version": decision.get("model_version"),
        "action": decision.get("action"),
        "outcome": str(decision["outcome"]),
        "reason": str(decision["reason"]),
        "drift_ids": [str(d) for d in decision["drift_ids"]],
        "kinds": [str(k) for k in decision.get("kinds", ())],
        "max_severity": float(decision.get("max_severity") or 0.0),
        "decided_at": iso(decision["decided_at"]),
    }


def job_row(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": str(job["job_id"]),
        "decision_id": str(job["decision_id"]),
        "model_id": str(job["model_id"]),
        "model_version": job.get("model_version"),
        "action": str(job["action"]),
        "state": "requested",
        "drift_ids": [str(d) for d in job.get("drift_ids", ())],
        "detail": job.get("detail") or {},
        "requested_at": iso(job["requested_at"]),
    }


def dedupe(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """First row per key, order kept."""
    seen: set[Any] = set()
    out = []
    for r in rows:
        if r[key] not in seen:
            seen.add(r[key])
            out.append(r)
    return out


class HistoryRow(NamedTuple):
    """A stored interaction's clock and the seasonal signals' values."""

    ts: datetime
    event_id: str
    latency_ms: float | None
    output_tokens: int | None


class Store(abc.ABC):
    """Where driftline keeps drift events, decisions, jobs and sampled interactions.

    Every write is idempotent on its id and batched; transient failures are retried with
    backoff (``RetryPolicy``), so a write returns only once the rows are stored — the
    caller must not commit its Kafka offset before that.
    """

    name: str = "store"
    _metrics: Metrics | None = None

    def _written(self, table: str, n: int) -> None:
        """Count ``n`` rows written to ``table``."""
        if self._metrics is not None and n:
            self._metrics.store_writes.labels(table).inc(n)

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (retrying while the store is down)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def write_drift_events(self, events: list[dict[str, Any]]) -> list[str]:
        """Store drift events; return the drift_ids that were not stored before."""

    @abc.abstractmethod
    async def undecided(self, drift_ids: list[str]) -> list[str]:
        """Of these stored drift ids, those no decision covers yet."""

    @abc.abstractmethod
    async def pending_drift_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored drift events (as published) that no decision covers yet, oldest first:
        what a restarted retrain agent must still decide on."""

    @abc.abstractmethod
    async def write_decisions(self, decisions: list[dict[str, Any]]) -> list[str]:
        """Store policy decisions (and link their drift events); return the new ids."""

    @abc.abstractmethod
    async def write_jobs(self, jobs: list[dict[str, Any]]) -> list[str]:
        """Create jobs in state ``requested``; return the job_ids that are new."""

    @abc.abstractmethod
    async def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """Current state of each of these jobs that exists."""

    @abc.abstractmethod
    async def job_transition(self, job_id: str, state: str,
                             detail: dict[str, Any] | None = None) -> bool:
        """Move a job forward (requested → running → succeeded|failed); False if it
        already was there or beyond."""

    @abc.abstractmethod
    async def write_interactions(self, interactions: list[dict[str, Any]]) -> int:
        """Store interactions (contract v1 dicts); return how many rows were new."""

    @abc.abstractmethod
    async def mark_deployed(self, model_id: str, model_version: str) -> list[str]:
        """Record a deployed version; close the model's open retrain/reindex jobs as
        succeeded. Return the job_ids closed now."""

    @abc.abstractmethod
    async def jobs(self, model_id: str | None = None) -> list[dict[str, Any]]:
        """Jobs (with their transitions' states in order), newest first."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]:
        """Row count of every table."""

    # -- history (``driftline seed``) -----------------------------------------------
    async def history_models(self, since: datetime, until: datetime) -> list[str]:
        """The models with stored interactions in ``[since, until)``, sorted."""
        raise StoreError(f"the {self.name} store cannot read history: `driftline seed` "
                         "reads it over SQL (set DATABASE_URL; Supabase's database "
                         "connection string will do)")

    async def history(self, model_id: str, since: datetime, until: datetime, *,
                      after: tuple[datetime, str] | None = None, limit: int = 50_000
                      ) -> list[HistoryRow]:
        """Up to ``limit`` of a model's stored interactions in ``[since, until)`` in time
        order, past ``after`` (the ``(ts, event_id)`` of the previous page's last row)."""
        raise StoreError(f"the {self.name} store cannot read history: `driftline seed` "
                         "reads it over SQL (set DATABASE_URL; Supabase's database "
                         "connection string will do)")

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_state(state: str) -> None:
    if state not in JOB_STATES:
        raise ValueError(f"unknown job state {state!r}")
