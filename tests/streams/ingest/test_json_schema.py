"""The published JSON Schema is the declaration's, current, and says what the contract says."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from driftline.detectors.types import Finding
from driftline.streams.drift.events import drift_event
from driftline.streams.ingest.contract import (
    SCHEMA_PATH,
    InvalidEvent,
    parse_drift_event,
    parse_feedback,
    parse_interaction,
    parse_model_update,
    schema_text,
)

TS = 1_767_225_600.0
VEC = [0.5, -0.25, 0.125, 1.0, -1.0, 0.0, 3.5, -7.75]
FINDING = Finding("behavior", "latency", "cusum_up", 500.0, 900.0, 3.2, "e9", TS, "v1")

VALID: list[tuple[str, dict[str, Any], Any]] = [
    ("Interaction", {"event_id": "e1", "model_id": "m1", "ts": TS}, parse_interaction),
    ("Interaction", {"event_id": "e1", "model_id": "chat.v2:eu-1", "model_version": "v1",
                     "ts": "2026-01-01T00:00:00Z", "latency_ms": 812.5, "input_tokens": 10,
                     "output_tokens": 180, "refusal": False, "feedback": -1, "correct": None,
                     "embedding": VEC, "metadata": {"prompt": "line\nline", "n": [1, {}]},
                     "extra": "ignored"}, parse_interaction),
    ("Interaction", {"event_id": "e2", "model_id": "m1", "ts": 0, "embedding_b64":
                     base64.b64encode(np.asarray(VEC, "<f4").tobytes()).decode()},
     parse_interaction),
    ("Feedback", {"event_id": "e1", "model_id": "m1", "ts": TS, "correct": True},
     parse_feedback),
    ("ModelUpdate", {"model_id": "m1", "model_version": "v2", "ts": TS, "kind": "deployed"},
     parse_model_update),
    ("DriftEvent", drift_event("m1", FINDING), parse_drift_event),
]
INVALID: list[tuple[str, dict[str, Any], Any]] = [
    ("Interaction", {"event_id": "e\x00", "model_id": "m1", "ts": TS}, parse_interaction),
    ("Interaction", {"event_id": "e\n", "model_id": "m1", "ts": TS}, parse_interaction),
    ("Interaction", {"event_id": "e1", "model_id": "m1\n", "ts": TS}, parse_interaction),
    ("Interaction", {"event_id": "e1", "model_id": "m1", "ts": 1e13}, parse_interaction),
    ("Interaction", {"event_id": "e1", "model_id": "m1", "ts": TS,
                     "metadata": {"a": ["\x00"]}}, parse_interaction),
    ("Interaction", {"event_id": "e1", "model_id": "m1", "ts": TS, "embedding": VEC,
                     "embedding_b64": "AAAA"}, parse_interaction),
    ("Interaction", {"event_id": "e1", "model_id": "m1", "ts": TS,
                     "embedding": [*VEC[:7], True]}, parse_interaction),
    ("Interaction", {"event_id": "e1", "model_id": "m1", "ts": TS, "feedback": 2},
     parse_interaction),
    ("Feedback", {"event_id": "e1", "model_id": "m1", "ts": TS}, parse_feedback),
    ("ModelUpdate", {"model_id": "m1", "model_version": "v\x00", "ts": TS},
     parse_model_update),
    ("DriftEvent", {**drift_event("m1", FINDING), "kind": "weather"}, parse_drift_event),
]


def _validator(name: str) -> jsonschema.Draft202012Validator:
    """The published schema, narrowed to one record type (the topic says which)."""
    schema = orjson.loads(SCHEMA_PATH.read_bytes())
    one = {"$schema": schema["$schema"], "$ref": f"#/$defs/{name}", "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(one, format_checker=jsonschema.FormatChecker())


def test_the_schema_file_is_generated_from_the_declaration() -> None:
    assert SCHEMA_PATH.read_bytes() == schema_text(), \
        "run: python -m driftline.streams.ingest.contract"
    jsonschema.Draft202012Validator.check_schema(orjson.loads(SCHEMA_PATH.read_bytes()))


@pytest.mark.parametrize(("name", "doc", "parse"), VALID)
def test_valid_examples_pass_the_schema_and_the_contract(name: str, doc: dict[str, Any],
                                                         parse: Any) -> None:
    _validator(name).validate(doc)
    parse(orjson.dumps(doc), b"m1" if doc["model_id"] == "m1" else None)


@pytest.mark.parametrize(("name", "doc", "parse"), INVALID)
def test_invalid_examples_fail_the_schema_and_the_contract(name: str, doc: dict[str, Any],
                                                           parse: Any) -> None:
    assert list(_validator(name).iter_errors(doc))
    with pytest.raises(InvalidEvent):
        parse(orjson.dumps(doc))
