"""Event contract v1: decode and validate raw Kafka payloads.

Every function here takes raw bytes and returns a typed value or raises
``InvalidEvent`` with a short machine-readable ``reason`` (used as the
dead-letter header and as a metric label) and a human-readable message.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from driftline.detectors.types import Observation

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
MIN_EMBEDDING_DIM = 8
MAX_EMBEDDING_DIM = 4096
# 9999-12-31T23:59:59Z: the last instant a drift event's RFC 3339 ``detected_at`` can show.
MAX_TS = 253_402_300_799.0
_MODEL_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Reasons are a closed set: they become metric label values and DLQ headers.
REASONS = (
    "oversized",
    "bad_json",
    "not_object",
    "unknown_schema",
    "missing_field",
    "bad_type",
    "bad_value",
    "non_finite",
    "bad_model_id",
    "key_mismatch",
    "bad_embedding",
    "embedding_dim_changed",
)


class InvalidEvent(ValueError):
    """A payload that breaks the event contract."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class Interaction:
    """A validated interaction: the model it belongs to and what the detectors see."""

    model_id: str
    obs: Observation
    raw: dict[str, Any]


@dataclass(slots=True)
class Feedback:
    event_id: str
    model_id: str
    ts: float
    correct: bool | None
    feedback: int | None


@dataclass(slots=True)
class ModelUpdate:
    model_id: str
    model_version: str
    ts: float
    kind: str


def _reject_constant(name: str) -> Any:
    raise InvalidEvent("non_finite", f"{name} is not a finite number")


def decode_object(raw: bytes | bytearray | memoryview | None,
                  max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Decode one JSON object, enforcing the size limit and the schema version."""
    if raw is None:
        raise InvalidEvent("missing_field", "empty message value")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"payload is {len(raw)} bytes, limit {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson stops at the first thing wrong; name a NaN/Infinity literal there
        # (not those words elsewhere: in a string of a document broken in another way).
        if exc.doc.startswith(("NaN", "Infinity"), exc.pos):  # ("-Infinity": after "-")
            raise InvalidEvent("non_finite", "NaN/Infinity is not valid JSON") from None
        raise InvalidEvent("bad_json", f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidEvent("unknown_schema", f"unsupported schema_version {version!r}")
    return doc


def _str(doc: dict[str, Any], name: str, required: bool = True) -> str | None:
    v = doc.get(name)
    if v is None:
        if required:
            raise InvalidEvent("missing_field", f"{name} is required")
        return None
    if not isinstance(v, str) or not v:
        raise InvalidEvent("bad_type", f"{name} must be a non-empty string")
    if len(v) > 256:
        raise InvalidEvent("bad_value", f"{name} is longer than 256 characters")
    return v


def _model_id(doc: dict[str, Any], key: bytes | None) -> str:
    v = doc.get("model_id")
    if v is None:
        raise InvalidEvent("missing_field", "model_id is required")
    if not isinstance(v, str) or not _MODEL_ID.match(v):
        raise InvalidEvent("bad_model_id", "model_id must be 1-128 chars of [A-Za-z0-9._:-]")
    if key is not None and key != v.encode():
        raise InvalidEvent("key_mismatch", "Kafka key differs from model_id")
    return v


def _ts(doc: dict[str, Any]) -> float:
    v = doc.get("ts")
    if v is None:
        raise InvalidEvent("missing_field", "ts is required")
    if isinstance(v, bool):
        raise InvalidEvent("bad_type", "ts must be epoch seconds or an RFC 3339 string")
    if isinstance(v, int | float):
        if not math.isfinite(v) or not 0 <= v <= MAX_TS:
            raise InvalidEvent("bad_value", "ts must be epoch seconds, 0 to 253402300799")
        return float(v)
    if isinstance(v, str):
        try:
            # RFC 3339 allows a lower-case "t" and "z".
            dt = datetime.fromisoformat(v.upper().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent("bad_value", "ts is not an RFC 3339 timestamp") from None
        if dt.tzinfo is None:
            raise InvalidEvent("bad_value", "ts needs a time zone offset")
        if not 0 <= dt.timestamp() <= MAX_TS:
            raise InvalidEvent("bad_value", "ts must be between 1970 and 9999 (UTC)")
        return dt.timestamp()
    raise InvalidEvent("bad_type", "ts must be epoch seconds or an RFC 3339 string")


def _number(doc: dict[str, Any], name: str) -> float | None:
    v = doc.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidEvent("bad_type", f"{name} must be a number")
    if not math.isfinite(v):
        raise InvalidEvent("non_finite", f"{name} is not finite")
    if v < 0:
        raise InvalidEvent("bad_value", f"{name} must be >= 0")
    return float(v)


def _count(doc: dict[str, Any], name: str) -> int | None:
    v = doc.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidEvent("bad_type", f"{name} must be an integer")
    if v < 0:
        raise InvalidEvent("bad_value", f"{name} must be >= 0")
    return v


def _bool(doc: dict[str, Any], name: str) -> bool | None:
    v = doc.get(name)
    if v is None or isinstance(v, bool):
        return v
    raise InvalidEvent("bad_type", f"{name} must be true, false or null")


def _feedback(doc: dict[str, Any]) -> int | None:
    v = doc.get("feedback")
    if v is None:
        return None
    if isinstance(v, bool) or v not in (-1, 0, 1):
        raise InvalidEvent("bad_value", "feedback must be -1, 0, 1 or null")
    return int(v)


def _embedding(doc: dict[str, Any]) -> np.ndarray | None:
    vec = doc.get("embedding")
    b64 = doc.get("embedding_b64")
    if vec is not None and b64 is not None:
        raise InvalidEvent("bad_embedding", "give embedding or embedding_b64, not both")
    if vec is not None:
        # numpy would take bools, numeric strings and null (as NaN): check every item.
        if not isinstance(vec, list) or not {type(x) for x in vec} <= {int, float}:
            raise InvalidEvent("bad_embedding", "embedding must be a flat array of numbers")
        with np.errstate(over="ignore"):  # beyond float32 becomes inf: "non_finite" below
            arr = np.array(vec, dtype=np.float32)
    elif b64 is not None:
        if not isinstance(b64, str):
            raise InvalidEvent("bad_embedding", "embedding_b64 must be a base64 string")
        try:
            buf = base64.b64decode(b64, validate=True)
        except ValueError:
            raise InvalidEvent("bad_embedding", "embedding_b64 is not valid base64") from None
        if len(buf) % 4:
            raise InvalidEvent("bad_embedding", "embedding_b64 length is not a multiple of 4")
        arr = np.frombuffer(buf, dtype="<f4").astype(np.float32)
    else:
        return None
    if not MIN_EMBEDDING_DIM <= arr.shape[0] <= MAX_EMBEDDING_DIM:
        raise InvalidEvent(
            "bad_embedding",
            f"embedding dimension {arr.shape[0]} outside {MIN_EMBEDDING_DIM}-{MAX_EMBEDDING_DIM}",
        )
    if not np.isfinite(arr).all():
        raise InvalidEvent("non_finite", "embedding has NaN or Infinity")
    return arr


def parse_interaction(raw: bytes | None, key: bytes | None = None,
                      max_bytes: int = MAX_PAYLOAD_BYTES) -> Interaction:
    """Validate one interaction payload (and its Kafka key, when given)."""
    doc = decode_object(raw, max_bytes)
    model_id = _model_id(doc, key)
    event_id = _str(doc, "event_id")
    assert event_id is not None
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidEvent("bad_type", "metadata must be an object")
    obs = Observation(
        event_id=event_id,
        ts=_ts(doc),
        model_version=_str(doc, "model_version", required=False),
        latency_ms=_number(doc, "latency_ms"),
        input_tokens=_count(doc, "input_tokens"),
        output_tokens=_count(doc, "output_tokens"),
        refusal=_bool(doc, "refusal"),
        feedback=_feedback(doc),
        correct=_bool(doc, "correct"),
        embedding=_embedding(doc),
    )
    return Interaction(model_id=model_id, obs=obs, raw=doc)


def parse_feedback(raw: bytes | None, key: bytes | None = None,
                   max_bytes: int = MAX_PAYLOAD_BYTES) -> Feedback:
    """Validate a delayed label / rating for an earlier interaction."""
    doc = decode_object(raw, max_bytes)
    model_id = _model_id(doc, key)
    event_id = _str(doc, "event_id")
    assert event_id is not None
    fb = Feedback(event_id=event_id, model_id=model_id, ts=_ts(doc),
                  correct=_bool(doc, "correct"), feedback=_feedback(doc))
    if fb.correct is None and fb.feedback is None:
        raise InvalidEvent("missing_field", "feedback needs correct or feedback")
    return fb


def parse_model_update(raw: bytes | None, key: bytes | None = None,
                       max_bytes: int = MAX_PAYLOAD_BYTES) -> ModelUpdate:
    """Validate a deploy notice."""
    doc = decode_object(raw, max_bytes)
    model_id = _model_id(doc, key)
    version = _str(doc, "model_version")
    assert version is not None
    kind = doc.get("kind", "deployed")
    if kind != "deployed":
        raise InvalidEvent("bad_value", f"unknown model update kind {kind!r}")
    return ModelUpdate(model_id=model_id, model_version=version, ts=_ts(doc), kind=kind)
