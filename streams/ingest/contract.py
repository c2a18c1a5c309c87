"""Event contract v1: its declaration, once, and the reference validator.

The declaration is the record types below (:class:`InteractionRecord`,
:class:`FeedbackRecord`, :class:`ModelUpdateRecord`, :class:`DriftEvent`): field names,
types, bounds and descriptions, plus the string rules every record obeys:

* no string anywhere (keys included, ``metadata`` at any depth) holds U+0000: Postgres
  ``text`` and ``jsonb`` refuse it (``nul_character``);
* identifiers (``event_id``, ``model_version``, a drift event's names) hold no control
  character (Unicode Cc: U+0000-U+001F, U+007F-U+009F): they end up in logs, dead-letter
  headers, dashboards (``control_character``); ``metadata`` is carried as given;
* the payload is UTF-8 JSON: invalid UTF-8 and lone surrogate escapes (``"\\ud800"``,
  which no UTF-8 text can hold) are ``bad_json``; NaN/Infinity are ``non_finite``;
* a key given twice in an object: the last one counts, as in Postgres ``jsonb``.

From the declaration come

* the hot path: :mod:`driftline.streams.ingest.decoder` decodes straight into these types
  (msgspec checks types and bounds in C) and applies the string rules in bulk;
* the published JSON Schema (:func:`json_schema`; ``schema-v1.json`` next to this file,
  written by ``python -m driftline.streams.ingest.contract``);
* the reference validator (``parse_*``): the same rules written out by hand, so that a
  refusal names its reason. ``tests/streams/ingest/test_differential.py`` proves with
  hypothesis that the decoder and the reference agree on every input class.

Every refusal raises :class:`InvalidEvent` with a ``reason`` from the closed set
:data:`REASONS` (a dead-letter header and a metric label) and a human-readable message.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson
from driftline.detectors.types import KINDS, Observation
from msgspec import Meta

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
MIN_EMBEDDING_DIM = 8
MAX_EMBEDDING_DIM = 4096
MAX_TEXT = 256  # characters of an identifier
MAX_MODEL_ID = 128
# 9999-12-31T23:59:59Z: the last instant a drift event's RFC 3339 ``detected_at`` can show.
MAX_TS = 253_402_300_799.0
# Bounds inside what both parsers read the same way (orjson turns integer literals beyond
# 64 bits into floats; msgspec refuses them for ``int`` fields).
MAX_COUNT = 2**62
MAX_NUMBER = 1e300

# JSON Schema patterns (ECMA-262 and Python ``re.search`` read them alike: the lookahead
# keeps Python's ``$`` from matching before a final newline).
MODEL_ID_PATTERN = "^[A-Za-z0-9._:-]+$(?!\\n)"
IDENTIFIER_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$(?!\\n)"
NO_NUL_PATTERN = "^[^\\u0000]*$"

_MODEL_ID = re.compile(f"[A-Za-z0-9._:-]{{1,{MAX_MODEL_ID}}}")  # fullmatch
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# Reasons are a closed set: they become metric label values and DLQ headers.
REASONS = (
    "oversized",            # payload over the size limit
    "bad_json",             # not UTF-8 JSON (incl. lone surrogate escapes)
    "not_object",           # JSON, but not an object
    "unknown_schema",       # schema_version other than 1
    "missing_field",        # a required field (or the Kafka key) is absent
    "bad_type",             # a field of the wrong JSON type
    "bad_value",            # right type, outside its range or format
    "non_finite",           # NaN / Infinity, or a vector beyond float32
    "bad_model_id",         # model_id outside 1-128 chars of [A-Za-z0-9._:-]
    "key_mismatch",         # the Kafka key is not the record's model_id
    "bad_embedding",        # embedding / embedding_b64 malformed or wrong dimension
    "embedding_dim_changed",  # a dimension other than the model version's
    "nul_character",        # a string holds U+0000 (Postgres cannot store it)
    "control_character",    # an identifier holds a control character
    "store_rejected",       # admitted, then refused for good where it lands (the store)
    "model_not_admitted",   # a new model beyond the admission rate (a flood of model ids)
)


class InvalidEvent(ValueError):
    """A payload that breaks the event contract."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason
        self.message = message


# -- the declaration ----------------------------------------------------------------------
_IDENTIFIER_SCHEMA = {"pattern": IDENTIFIER_PATTERN}
Identifier = Annotated[str, Meta(min_length=1, max_length=MAX_TEXT,
                                 extra_json_schema=_IDENTIFIER_SCHEMA)]
ModelId = Annotated[str, Meta(min_length=1, max_length=MAX_MODEL_ID,
                              extra_json_schema={"pattern": MODEL_ID_PATTERN})]
EpochSeconds = Annotated[float, Meta(ge=0.0, le=MAX_TS)]
Rfc3339 = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Timestamp = Annotated[EpochSeconds | Rfc3339, Meta(
    description="epoch seconds, or an RFC 3339 string with a time zone offset; "
                "1970-01-01 to 9999-12-31")]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
NonNegative = Annotated[float, Meta(ge=0.0, le=MAX_NUMBER)]
Rating = Annotated[int, Meta(ge=-1, le=1, description="thumbs down / neutral / up")]
Metadata = Annotated[dict[str, Any], Meta(
    description="carried, not interpreted (no NUL in any key or string)",
    extra_json_schema={"propertyNames": {"pattern": NO_NUL_PATTERN},
                       "additionalProperties": {"$ref": "#/$defs/JsonValue"}})]
Vector = Annotated[list[float], Meta(
    min_length=MIN_EMBEDDING_DIM, max_length=MAX_EMBEDDING_DIM,
    description="float32 range; one dimension per model version")]
VectorB64 = Annotated[str, Meta(
    description="the vector as little-endian float32, base64",
    extra_json_schema={"contentEncoding": "base64"})]


class InteractionRecord(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """An interaction on ``driftline.interactions`` (Kafka key: ``model_id``).

    Decoded by the batch decoder, ``embedding`` holds the vector as packed float32 bytes
    (``embedding_b64`` decoded into it) and ``ts`` epoch seconds. Fields not declared
    here are allowed by the contract and ignored (the fast decode refuses them so that
    the reference checks their strings)."""

    event_id: Identifier
    model_id: ModelId
    ts: Timestamp
    schema_version: Literal[1] = 1
    model_version: Identifier | None = None
    latency_ms: NonNegative | None = None
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    refusal: Annotated[bool, Meta(description="the model declined to answer")] | None = None
    correct: Annotated[bool, Meta(description="label, when known at once")] | None = None
    feedback: Rating | None = None
    metadata: Metadata | None = None
    embedding: Vector | None = None
    embedding_b64: VectorB64 | None = None


class FeedbackRecord(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A label or rating on ``driftline.feedback`` for an earlier interaction (at least
    one of ``correct`` and ``feedback``)."""

    event_id: Identifier
    model_id: ModelId
    ts: Timestamp
    schema_version: Literal[1] = 1
    correct: bool | None = None
    feedback: Rating | None = None


class ModelUpdateRecord(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A deploy notice on ``driftline.model-updates``: the monitor starts a fresh
    baseline for the version."""

    model_id: ModelId
    model_version: Identifier
    ts: Timestamp
    schema_version: Literal[1] = 1
    kind: Literal["deployed"] = "deployed"


Name = Annotated[str, Meta(min_length=1, max_length=MAX_TEXT,
                           extra_json_schema=_IDENTIFIER_SCHEMA)]
Finite = Annotated[float, Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A drift event on ``driftline.drift-events``, as subscribers receive it.

    ``drift_id`` is deterministic: a replay or a restart never mints a second identity
    for the same detection. Fields a newer driftline adds are ignored here."""

    drift_id: Name
    model_id: ModelId
    kind: Literal["embedding", "behavior", "accuracy"]  # DRIFT_KINDS
    signal: Name
    detector: Name
    detected_at: Annotated[datetime, Meta(tz=True)]
    baseline: Finite  # the signal's reference value, in its own units (ms, tokens, rate)
    current: Finite  # its value at detection
    severity: Finite
    schema_version: Literal[1] = 1
    model_version: Name | None = None
    trigger_event_id: Name | None = None
    # Where and what (a segmented model's monitor): the segment of a segment's detection,
    # the segments that moved a model-level one with their share, an embedding drift's
    # nearest reference centroid, interactions outside every centroid and exemplar.
    segment: dict[Name, Name] | None = None
    attribution: list[dict[str, Any]] | None = None
    explanation: dict[str, Any] | None = None


DRIFT_KINDS = ("embedding", "behavior", "accuracy")
assert DRIFT_KINDS == KINDS  # the detectors' kinds, spelled out in the declaration

RECORD_TYPES: dict[str, Any] = {
    "Interaction": InteractionRecord, "Feedback": FeedbackRecord,
    "ModelUpdate": ModelUpdateRecord, "DriftEvent": DriftEvent}
TOPIC_OF = {"Interaction": "driftline.interactions", "Feedback": "driftline.feedback",
            "ModelUpdate": "driftline.model-updates", "DriftEvent": "driftline.drift-events"}

_JSON_VALUE = {"anyOf": [
    {"type": ["number", "boolean", "null"]},
    {"type": "string", "pattern": NO_NUL_PATTERN},
    {"type": "array", "items": {"$ref": "#/$defs/JsonValue"}},
    {"type": "object", "propertyNames": {"pattern": NO_NUL_PATTERN},
     "additionalProperties": {"$ref": "#/$defs/JsonValue"}}]}


def json_schema() -> dict[str, Any]:
    """The contract as a JSON Schema (2020-12), generated from the declaration: one
    definition per record type, chosen by the topic it is published on."""
    _, defs = msgspec.json.schema_components(list(RECORD_TYPES.values()),
                                             ref_template="#/$defs/{name}")
    renamed = {"InteractionRecord": "Interaction", "FeedbackRecord": "Feedback",
               "ModelUpdateRecord": "ModelUpdate", "DriftEvent": "DriftEvent"}
    text = orjson.dumps(defs).decode()
    for old, new in renamed.items():
        text = text.replace(f'"#/$defs/{old}"', f'"#/$defs/{new}"')
    defs = {renamed.get(k, k): v for k, v in orjson.loads(text).items()}
    for name, d in defs.items():
        if name in RECORD_TYPES:
            d.pop("title", None)
            d["description"] = " ".join(d.get("description", "").split())
            d["x-topic"] = TOPIC_OF[name]
            # Undeclared fields are allowed and ignored (but hold no NUL either).
            d["additionalProperties"] = {"$ref": "#/$defs/JsonValue"}
            d["propertyNames"] = {"pattern": NO_NUL_PATTERN}
    defs["Interaction"]["not"] = {"required": ["embedding", "embedding_b64"]}
    defs["Feedback"]["anyOf"] = [
        {"required": ["correct"], "properties": {"correct": {"type": "boolean"}}},
        {"required": ["feedback"], "properties": {"feedback": {"type": "integer"}}}]
    defs["JsonValue"] = _JSON_VALUE
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://driftline.dev/schema/v1.json",
        "title": "driftline event contract, schema version 1",
        "description": "JSON, UTF-8, one object per Kafka record; Kafka key = model_id. "
                       "Not expressible here and checked by driftline: no lone surrogate "
                       "escapes, vectors within float32 range, base64 vectors of 8-4096 "
                       "float32 values, RFC 3339 timestamps within 1970-9999.",
        "oneOf": [{"$ref": f"#/$defs/{n}"} for n in RECORD_TYPES],
        "$defs": defs,
    }


SCHEMA_PATH = Path(__file__).with_name("schema-v1.json")


def schema_text() -> bytes:
    """The JSON Schema file's content, as written by ``python -m ...contract``."""
    return orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


# -- what the reference validator returns --------------------------------------------------
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


# -- the reference validator ---------------------------------------------------------------
def _nul_in(value: Any) -> bool:
    """Whether a decoded JSON value holds U+0000 in a string or a key, at any depth."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _nul_in(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_nul_in, value))
    return False


def decode_object(raw: bytes | bytearray | memoryview | None,
                  max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Decode one JSON object: the size limit, the schema version, no NUL anywhere."""
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
    # A NUL can only come from a \u0000 escape; the walk settles an escaped backslash.
    if b"\\u0000" in raw and _nul_in(doc):
        raise InvalidEvent("nul_character",
                           "a string holds U+0000, which Postgres text/jsonb cannot store")
    return doc


def _str(doc: dict[str, Any], name: str, required: bool = True) -> str | None:
    v = doc.get(name)
    if v is None:
        if required:
            raise InvalidEvent("missing_field", f"{name} is required")
        return None
    if not isinstance(v, str) or not v:
        raise InvalidEvent("bad_type", f"{name} must be a non-empty string")
    if len(v) > MAX_TEXT:
        raise InvalidEvent("bad_value", f"{name} is longer than {MAX_TEXT} characters")
    if _CONTROL.search(v):
        raise InvalidEvent("control_character", f"{name} holds a control character")
    return v


def valid_model_id(text: str) -> bool:
    return _MODEL_ID.fullmatch(text) is not None


def _model_id(doc: dict[str, Any], key: bytes | None) -> str:
    v = doc.get("model_id")
    if v is None:
        raise InvalidEvent("missing_field", "model_id is required")
    if not isinstance(v, str) or not valid_model_id(v):
        raise InvalidEvent("bad_model_id", "model_id must be 1-128 chars of [A-Za-z0-9._:-]")
    if key is not None and key != v.encode():
        raise InvalidEvent("key_mismatch", "Kafka key differs from model_id")
    return v


def ts_of_string(v: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (with an offset, 1970-9999)."""
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
        return ts_of_string(v)
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
    if v > MAX_NUMBER:
        raise InvalidEvent("bad_value", f"{name} must be <= {MAX_NUMBER:g}")
    return float(v)


def _count(doc: dict[str, Any], name: str) -> int | None:
    v = doc.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidEvent("bad_type", f"{name} must be an integer")
    if not 0 <= v <= MAX_COUNT:
        raise InvalidEvent("bad_value", f"{name} must be between 0 and 2**62")
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


def vector_of_b64(b64: Any) -> bytes:
    """The little-endian float32 bytes of an ``embedding_b64`` value, checked."""
    if not isinstance(b64, str):
        raise InvalidEvent("bad_embedding", "embedding_b64 must be a base64 string")
    try:
        buf = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidEvent("bad_embedding", "embedding_b64 is not valid base64") from None
    if len(buf) % 4:
        raise InvalidEvent("bad_embedding", "embedding_b64 length is not a multiple of 4")
    n = len(buf) // 4
    if not MIN_EMBEDDING_DIM <= n <= MAX_EMBEDDING_DIM:
        raise InvalidEvent(
            "bad_embedding",
            f"embedding dimension {n} outside {MIN_EMBEDDING_DIM}-{MAX_EMBEDDING_DIM}")
    if not np.isfinite(np.frombuffer(buf, dtype="<f4")).all():
        raise InvalidEvent("non_finite", "embedding has NaN or Infinity")
    return buf


def _embedding(doc: dict[str, Any]) -> np.ndarray | None:
    vec = doc.get("embedding")
    b64 = doc.get("embedding_b64")
    if vec is not None and b64 is not None:
        raise InvalidEvent("bad_embedding", "give embedding or embedding_b64, not both")
    if vec is not None:
        # numpy would take bools, numeric strings and null (as NaN): check every item.
        if not isinstance(vec, list) or not {type(x) for x in vec} <= {int, float}:
            raise InvalidEvent("bad_embedding", "embedding must be a flat array of numbers")
        if not MIN_EMBEDDING_DIM <= len(vec) <= MAX_EMBEDDING_DIM:
            raise InvalidEvent(
                "bad_embedding",
                f"embedding dimension {len(vec)} outside {MIN_EMBEDDING_DIM}-"
                f"{MAX_EMBEDDING_DIM}")
        with np.errstate(over="ignore"):  # beyond float32 becomes inf: "non_finite" below
            arr = np.array(vec, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InvalidEvent("non_finite", "embedding has NaN or Infinity")
        return arr
    if b64 is not None:
        return np.frombuffer(vector_of_b64(b64), dtype="<f4").astype(np.float32)
    return None


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


_DRIFT_DECODE = msgspec.json.Decoder(DriftEvent).decode


def parse_drift_event(raw: bytes | None, key: bytes | None = None,
                      max_bytes: int = MAX_PAYLOAD_BYTES) -> DriftEvent:
    """Validate a drift event (what the retrain agent and subscribers read)."""
    doc = decode_object(raw, max_bytes)
    _model_id(doc, key)
    for name in ("drift_id", "signal", "detector", "model_version", "trigger_event_id"):
        _str(doc, name, required=name in ("drift_id", "signal", "detector"))
    assert raw is not None
    try:
        return _DRIFT_DECODE(raw)
    except msgspec.ValidationError as exc:
        raise InvalidEvent("bad_value", f"drift event: {exc}") from None
    except msgspec.DecodeError as exc:  # what orjson read and msgspec does not
        raise InvalidEvent("bad_json", f"drift event: {exc}") from None


def drift_event_dict(event: DriftEvent) -> dict[str, Any]:
    """A drift event as its JSON object (``detected_at`` as RFC 3339)."""
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


if __name__ == "__main__":  # python -m driftline.streams.ingest.contract [path]
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PATH
    target.write_bytes(schema_text())
    print(f"wrote {target}")
