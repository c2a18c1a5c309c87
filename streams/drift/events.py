"""Drift events (schema v1): built from detector findings, with deterministic ids."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from driftline.detectors.types import Finding

SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c2a52-4d0e-4f7a-9a57-3f1d1c0de1f7")


def drift_id(model_id: str, finding: Finding) -> str:
    """Same detection, same id: a replay or a restart never mints a second identity."""
    parts = (model_id, finding.model_version or "", finding.kind, finding.signal,
             finding.detector, finding.event_id)
    if finding.segment:
        # A segment's detection: a JSON array, which no model-level name (it starts with
        # the model id) can equal, and whose values cannot run into each other.
        name = orjson.dumps([*parts, [list(p) for p in finding.segment]]).decode()
    else:
        name = "|".join(parts)
    return str(uuid.uuid5(_NAMESPACE, name))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def drift_event(model_id: str, finding: Finding) -> dict[str, Any]:
    """The public drift event for one finding: schema v1's fields, then where and what when
    the monitor knows: ``segment`` (``{key: value}``) of a segment's detection,
    ``attribution`` (the segments that moved a model-level detector, with their share),
    ``explanation`` (an embedding drift's nearest reference centroid, interactions outside
    every centroid, exemplar event id)."""
    event = {
        "schema_version": SCHEMA_VERSION,
        "drift_id": drift_id(model_id, finding),
        "model_id": model_id,
        "model_version": finding.model_version,
        "kind": finding.kind,
        "signal": finding.signal,
        "detector": finding.detector,
        "trigger_event_id": finding.event_id,
        "detected_at": iso(finding.ts),
        "baseline": finding.baseline,
        "current": finding.current,
        "severity": finding.severity,
    }
    if finding.segment:
        event["segment"] = dict(finding.segment)
    if finding.attribution:
        event["attribution"] = [dict(a) for a in finding.attribution]
    if finding.explanation:
        event["explanation"] = dict(finding.explanation)
    return event


def action_id(*parts: str) -> str:
    """Deterministic id for a retrain decision made from the given drift ids."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
