"""Builders for test events (drift events, interactions) in the v1 contract."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np


def drift_event(n: int = 0, *, model_id: str = "m1", kind: str = "accuracy",
                severity: float = 5.0, detected_at: float = 1_700_000_000.0,
                model_version: str | None = "v1") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "drift_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"drift-{model_id}-{kind}-{n}")),
        "model_id": model_id,
        "model_version": model_version,
        "kind": kind,
        "signal": {"accuracy": "error_rate", "embedding": "centroid_distance",
                   "behavior": "latency_ms"}[kind],
        "detector": "cusum",
        "trigger_event_id": f"ev-{n}",
        "detected_at": detected_at + n,
        "baseline": 0.1,
        "current": 0.3,
        "severity": severity,
    }


def interactions(n: int, *, dim: int = 384, model_id: str = "m1", seed: int = 0,
                 start: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    return [
        {"event_id": f"{model_id}-{start + i}", "model_id": model_id, "model_version": "v1",
         "ts": 1_700_000_000.0 + i, "latency_ms": 100.0 + i, "input_tokens": 10,
         "output_tokens": 20, "refusal": False, "feedback": 1, "correct": True,
         "embedding": emb[i].tolist(), "metadata": {"i": start + i}}
        for i in range(n)
    ]


# A retrain job's life in which each transition adds to the job's detail: every store ends
# with DETAIL_AFTER_LIFE (the job's own reason and segment kept, a repeated key the latest).
JOB_WITH_DETAIL = {"job_id": "j1", "decision_id": "dec1", "model_id": "m1",
                   "model_version": "v1", "action": "reindex", "drift_ids": ["a"],
                   "requested_at": 1_700_000_000.0,
                   "detail": {"reason": "segment drift", "segment": {"metadata.tenant": "acme"},
                              "attempt": 0}}
JOB_TRANSITIONS: list[tuple[str, dict[str, Any]]] = [
    ("running", {"webhook": 202, "attempt": 1}),
    ("running", {"webhook": 500}),  # not a move: changes nothing
    ("failed", {"error": "trigger timed out", "attempt": 2}),
]
JOB_MOVES = [True, False, True]
DETAIL_AFTER_LIFE = {"reason": "segment drift", "segment": {"metadata.tenant": "acme"},
                     "webhook": 202, "error": "trigger timed out", "attempt": 2}
