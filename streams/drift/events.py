"""Drift events (schema v1): built from detector findings, with deterministic ids."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from driftline.detectors.types import Finding

SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c2a52-4d0e-4f7a-9a57-3f1d1c0de1f7")


def drift_id(model_id: str, finding: Finding) -> str:
    """Same detection, same id: a replay or a restart never mints a second identity."""
    name = "|".join(
        (model_id, finding.model_version or "", finding.kind, finding.signal,
         finding.detector, finding.event_id)
    )
    return str(uuid.uuid5(_NAMESPACE, name))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def drift_event(model_id: str, finding: Finding) -> dict[str, Any]:
    """The public drift event for one finding."""
    return {
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


def action_id(*parts: str) -> str:
    """Deterministic id for a retrain decision made from the given drift ids."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
