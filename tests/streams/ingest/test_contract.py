"""Event contract v1: every rejection reason, every optional field, and a seeded fuzz."""

from __future__ import annotations

import base64
import math
import random
from typing import Any

import numpy as np
import orjson
import pytest
from driftline.streams.drift.events import iso
from driftline.streams.ingest.contract import (
    MAX_EMBEDDING_DIM,
    MAX_PAYLOAD_BYTES,
    MIN_EMBEDDING_DIM,
    REASONS,
    InvalidEvent,
    decode_object,
    parse_feedback,
    parse_interaction,
    parse_model_update,
)

TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BASE: dict[str, Any] = {"event_id": "e1", "model_id": "m1", "ts": TS}
VEC8 = [0.5, -0.25, 0.125, 1.0, -1.0, 0.0, 3.5, -7.75]


def _b64(vec: list[float] | np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()


def _with(**fields: Any) -> bytes:
    return orjson.dumps({**BASE, **fields})


def _without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in BASE.items() if k != name})


def _reason(raw: bytes | None, key: bytes | None = None, max_bytes: int = MAX_PAYLOAD_BYTES
            ) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_interaction(raw, key, max_bytes)
    assert info.value.reason in REASONS
    assert info.value.message
    return info.value.reason


# Payload -> reason. ``embedding_dim_changed`` needs a model's history, so it is covered
# by tests/streams/test_processor.py::test_embedding_dim_change_within_version_is_rejected.
REJECTIONS: list[tuple[str, bytes | None, bytes | None, int, str]] = [
    ("oversized", _with(), None, len(_with()) - 1, "oversized"),
    ("truncated json", b'{"event_id": "e1"', None, MAX_PAYLOAD_BYTES, "bad_json"),
    ("not utf-8", b'{"event_id": "\xff"}', None, MAX_PAYLOAD_BYTES, "bad_json"),
    ("empty bytes", b"", None, MAX_PAYLOAD_BYTES, "bad_json"),
    ("array", b"[1, 2]", None, MAX_PAYLOAD_BYTES, "not_object"),
    ("string", b'"m1"', None, MAX_PAYLOAD_BYTES, "not_object"),
    ("null", b"null", None, MAX_PAYLOAD_BYTES, "not_object"),
    ("schema 2", _with(schema_version=2), None, MAX_PAYLOAD_BYTES, "unknown_schema"),
    ("schema true", _with(schema_version=True), None, MAX_PAYLOAD_BYTES, "unknown_schema"),
    ("schema '1'", _with(schema_version="1"), None, MAX_PAYLOAD_BYTES, "unknown_schema"),
    ("no value", None, None, MAX_PAYLOAD_BYTES, "missing_field"),
    ("no event_id", _without("event_id"), None, MAX_PAYLOAD_BYTES, "missing_field"),
    ("no model_id", _without("model_id"), None, MAX_PAYLOAD_BYTES, "missing_field"),
    ("no ts", _without("ts"), None, MAX_PAYLOAD_BYTES, "missing_field"),
    ("event_id int", _with(event_id=5), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("event_id empty", _with(event_id=""), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("model_version int", _with(model_version=2), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("ts bool", _with(ts=True), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("ts list", _with(ts=[TS]), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("latency bool", _with(latency_ms=True), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("latency string", _with(latency_ms="12"), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("tokens float", _with(output_tokens=1.5), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("tokens bool", _with(input_tokens=False), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("refusal int", _with(refusal=1), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("correct string", _with(correct="yes"), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("metadata list", _with(metadata=[1]), None, MAX_PAYLOAD_BYTES, "bad_type"),
    ("event_id 257", _with(event_id="e" * 257), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("latency < 0", _with(latency_ms=-0.5), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("tokens < 0", _with(output_tokens=-1), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("ts < 0", _with(ts=-1), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("ts not a date", _with(ts="yesterday"), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("ts naive", _with(ts="2026-01-01T00:00:00"), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("feedback 2", _with(feedback=2), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("feedback 0.5", _with(feedback=0.5), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("feedback true", _with(feedback=True), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("feedback '1'", _with(feedback="1"), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("NaN literal", _with(latency_ms=1.0).replace(b"1.0", b"NaN"), None, MAX_PAYLOAD_BYTES,
     "non_finite"),
    ("Infinity literal", _with(latency_ms=1.0).replace(b"1.0", b"Infinity"), None,
     MAX_PAYLOAD_BYTES, "non_finite"),
    ("-Infinity literal", _with(latency_ms=1.0).replace(b"1.0", b"-Infinity"), None,
     MAX_PAYLOAD_BYTES, "non_finite"),
    ("NaN literal, then cut", _with(latency_ms=1.0).replace(b"1.0", b"NaN")[:-1], None,
     MAX_PAYLOAD_BYTES, "non_finite"),  # the first thing wrong, in reading order
    ("NaN in a string, cut", _with(event_id="NaN-1")[:-3], None, MAX_PAYLOAD_BYTES,
     "bad_json"),
    ("cut before an Infinity", _with(latency_ms=1.0).replace(b'"ts"', b'"ts":,"x"')
     .replace(b"1.0", b"Infinity"), None, MAX_PAYLOAD_BYTES, "bad_json"),
    ("Infinity in a string, lone surrogate", _with(event_id="Infinity")
     .replace(b'"ts"', b'"x":"\\ud800","ts"'), None,
     MAX_PAYLOAD_BYTES, "bad_json"),
    ("NaN deep inside", b"[" * 5_000 + b"NaN" + b"]" * 5_000, None, MAX_PAYLOAD_BYTES,
     "bad_json"),  # orjson's depth limit comes first
    ("NaN after bad UTF-8", _with(event_id="\xff", latency_ms=1.0).replace(b"\xc3\xbf", b"\xff")
     .replace(b"1.0", b"NaN"), None, MAX_PAYLOAD_BYTES, "bad_json"),
    ("NaN after 2-byte characters", _with(event_id="\u00e9\u00e9", latency_ms=1.0)
     .replace(b"1.0", b"NaN"), None, MAX_PAYLOAD_BYTES, "non_finite"),
    ("NaN in embedding", _with(embedding=VEC8).replace(b"0.5", b"NaN"), None,
     MAX_PAYLOAD_BYTES, "non_finite"),
    ("float32 overflow", _with(embedding=[*VEC8[:7], 1e39]), None, MAX_PAYLOAD_BYTES,
     "non_finite"),
    ("NaN in b64", _with(embedding_b64=_b64([*VEC8[:7], math.nan])), None, MAX_PAYLOAD_BYTES,
     "non_finite"),
    ("model_id space", _with(model_id="m 1"), None, MAX_PAYLOAD_BYTES, "bad_model_id"),
    ("model_id empty", _with(model_id=""), None, MAX_PAYLOAD_BYTES, "bad_model_id"),
    ("model_id 129", _with(model_id="m" * 129), None, MAX_PAYLOAD_BYTES, "bad_model_id"),
    ("model_id int", _with(model_id=1), None, MAX_PAYLOAD_BYTES, "bad_model_id"),
    ("model_id slash", _with(model_id="a/b"), None, MAX_PAYLOAD_BYTES, "bad_model_id"),
    ("key differs", _with(), b"m2", MAX_PAYLOAD_BYTES, "key_mismatch"),
    ("both embeddings", _with(embedding=VEC8, embedding_b64=_b64(VEC8)), None,
     MAX_PAYLOAD_BYTES, "bad_embedding"),
    ("embedding string", _with(embedding="0.5"), None, MAX_PAYLOAD_BYTES, "bad_embedding"),
    ("embedding nested", _with(embedding=[VEC8, VEC8]), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("embedding ragged", _with(embedding=[*VEC8, [1.0]]), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("embedding of bools", _with(embedding=[True] * 8), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("embedding with a bool", _with(embedding=[*VEC8[:7], True]), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("embedding of strings", _with(embedding=["0.5"] * 8), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("embedding null item", _with(embedding=[*VEC8[:7], None]), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("embedding dim 7", _with(embedding=VEC8[:7]), None, MAX_PAYLOAD_BYTES, "bad_embedding"),
    ("embedding empty", _with(embedding=[]), None, MAX_PAYLOAD_BYTES, "bad_embedding"),
    ("b64 dim 7", _with(embedding_b64=_b64(VEC8[:7])), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("b64 not base64", _with(embedding_b64="not base64!"), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("b64 length % 4", _with(embedding_b64=base64.b64encode(b"\0" * 33).decode()), None,
     MAX_PAYLOAD_BYTES, "bad_embedding"),
    ("b64 not a string", _with(embedding_b64=[1, 2]), None, MAX_PAYLOAD_BYTES,
     "bad_embedding"),
    ("ts 1e13", _with(ts=1e13), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("model_id newline", _with(model_id="m1\n"), None, MAX_PAYLOAD_BYTES, "bad_model_id"),
    ("key with newline", _with(model_id="m1"), b"m1\n", MAX_PAYLOAD_BYTES, "key_mismatch"),
    ("NUL in event_id", _with(event_id="e\x00"), None, MAX_PAYLOAD_BYTES, "nul_character"),
    ("NUL in model_id", _with(model_id="m\x00"), None, MAX_PAYLOAD_BYTES, "nul_character"),
    ("NUL in metadata", _with(metadata={"a": [{"b": "x\x00"}]}), None, MAX_PAYLOAD_BYTES,
     "nul_character"),
    ("NUL in a metadata key", _with(metadata={"\x00": 1}), None, MAX_PAYLOAD_BYTES,
     "nul_character"),
    ("NUL in an unknown field", _with(extra="\x00"), None, MAX_PAYLOAD_BYTES,
     "nul_character"),
    ("control in event_id", _with(event_id="e\x07"), None, MAX_PAYLOAD_BYTES,
     "control_character"),
    ("newline in event_id", _with(event_id="e\n"), None, MAX_PAYLOAD_BYTES,
     "control_character"),
    ("C1 control in model_version", _with(model_version="v\x85"), None, MAX_PAYLOAD_BYTES,
     "control_character"),
    ("DEL in model_version", _with(model_version="v\x7f"), None, MAX_PAYLOAD_BYTES,
     "control_character"),
    ("lone surrogate", _with(event_id="X").replace(b'"X"', b'"\\ud800"'), None,
     MAX_PAYLOAD_BYTES, "bad_json"),
    ("tokens 2**63", _with(input_tokens=2**63 - 1), None, MAX_PAYLOAD_BYTES, "bad_value"),
    ("latency 1e301", _with(latency_ms=1e301), None, MAX_PAYLOAD_BYTES, "bad_value"),
]

# Record-specific: a deploy or a feedback record with a NUL or a control character.
OTHER_REJECTIONS = [
    (parse_model_update, {"model_id": "m1", "model_version": "v\x00", "ts": TS},
     "nul_character"),
    (parse_model_update, {"model_id": "m1", "model_version": "v\n", "ts": TS},
     "control_character"),
    (parse_feedback, {"model_id": "m1", "event_id": "e\x00", "ts": TS, "correct": True},
     "nul_character"),
    (parse_feedback, {"model_id": "m1", "event_id": "e\x1b", "ts": TS, "correct": True},
     "control_character"),
]


@pytest.mark.parametrize(("parse", "doc", "reason"), OTHER_REJECTIONS)
def test_feedback_and_deploys_obey_the_string_rules(parse: Any, doc: dict[str, Any],
                                                    reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse(orjson.dumps(doc), b"m1")
    assert info.value.reason == reason


def test_metadata_keeps_newlines_and_other_controls() -> None:
    it = parse_interaction(_with(metadata={"prompt": "line 1\nline 2\t\x07", "k\n": 1}))
    assert it.raw["metadata"]["prompt"] == "line 1\nline 2\t\x07"


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    raw = _with(event_id="X").replace(b'"X"', b'"a\\\\u0000"')  # the text a\u0000
    assert parse_interaction(raw).obs.event_id == "a\\u0000"


@pytest.mark.parametrize(("raw", "key", "max_bytes", "reason"),
                         [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_rejection_reason(raw: bytes | None, key: bytes | None, max_bytes: int,
                          reason: str) -> None:
    assert _reason(raw, key, max_bytes) == reason


def test_every_reason_is_reachable() -> None:
    # embedding_dim_changed: see REJECTIONS; store_rejected: tests/streams/test_poison_kafka.py;
    # model_not_admitted: tests/streams/monitor/test_flood.py
    covered = {r[-1] for r in REJECTIONS} | {"embedding_dim_changed", "store_rejected",
                                             "model_not_admitted"}
    assert covered == set(REASONS)


def test_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(AssertionError):
        InvalidEvent("no_such_reason", "x")


# -- valid interactions -------------------------------------------------------------------

def test_minimal_interaction() -> None:
    it = parse_interaction(_with(), b"m1")
    assert it.model_id == "m1"
    o = it.obs
    assert (o.event_id, o.ts, o.model_version) == ("e1", TS, None)
    assert (o.latency_ms, o.input_tokens, o.output_tokens) == (None, None, None)
    assert (o.refusal, o.feedback, o.correct, o.embedding) == (None, None, None, None)
    assert it.raw == BASE


def test_every_optional_field() -> None:
    doc = {**BASE, "schema_version": 1, "model_version": "v7", "latency_ms": 812,
           "input_tokens": 400, "output_tokens": 0, "refusal": True, "feedback": -1,
           "correct": False, "embedding": VEC8, "metadata": {"route": "chat", "n": [1]},
           "extra": "carried"}
    it = parse_interaction(orjson.dumps(doc), b"m1")
    o = it.obs
    assert o.model_version == "v7"
    assert o.latency_ms == 812.0 and isinstance(o.latency_ms, float)
    assert (o.input_tokens, o.output_tokens) == (400, 0)
    assert (o.refusal, o.feedback, o.correct) == (True, -1, False)
    assert o.embedding is not None and o.embedding.dtype == np.float32
    assert o.embedding.tolist() == VEC8
    assert it.raw["metadata"] == {"route": "chat", "n": [1]}
    assert it.raw["extra"] == "carried"


def test_explicit_nulls_mean_absent() -> None:
    it = parse_interaction(_with(model_version=None, latency_ms=None, output_tokens=None,
                                 refusal=None, feedback=None, correct=None, embedding=None,
                                 embedding_b64=None, metadata=None))
    o = it.obs
    assert (o.latency_ms, o.output_tokens, o.refusal, o.feedback, o.correct, o.embedding) == (
        None, None, None, None, None, None)


@pytest.mark.parametrize(("ts", "expected"), [
    (TS, TS),
    (int(TS), TS),
    (0, 0.0),
    (TS + 0.125, TS + 0.125),
    ("2026-01-01T00:00:00Z", TS),
    ("2026-01-01T00:00:00.250Z", TS + 0.25),
    ("2026-01-01T01:00:00+01:00", TS),
    ("2025-12-31T19:30:00-04:30", TS),
    ("2026-01-01T00:00:00+00:00", TS),
    ("2026-01-01 00:00:00Z", TS),
    # RFC 3339 §5.6: "T" and "Z" may be lower case.
    ("2026-01-01t00:00:00z", TS),
    ("2026-01-01T00:00:00.5z", TS + 0.5),
])
def test_ts_epoch_and_rfc3339(ts: float | str, expected: float) -> None:
    got = parse_interaction(_with(ts=ts)).obs.ts
    assert isinstance(got, float)
    assert got == expected


@pytest.mark.parametrize("ts", [
    1_767_225_600_000,  # epoch milliseconds: year 57971
    253_402_300_800,  # 10000-01-01T00:00:00Z
    1e300,
    "0001-01-01T00:00:00+01:00",  # before the epoch
])
def test_ts_outside_representable_range_is_bad_value(ts: float | str) -> None:
    # A drift event's detected_at is the trigger's ts as RFC 3339; a ts that cannot be
    # written as one must be refused here instead of crashing the worker at detection.
    assert _reason(_with(ts=ts)) == "bad_value"


def test_ts_upper_bound_is_inclusive() -> None:
    ts = parse_interaction(_with(ts="9999-12-31T23:59:59Z")).obs.ts
    assert ts == 253_402_300_799.0
    assert iso(ts) == "9999-12-31T23:59:59.000Z"


def test_embedding_and_b64_give_the_same_float32_vector() -> None:
    rng = np.random.default_rng(3)
    vec = rng.standard_normal(384).astype(np.float32)
    as_json = parse_interaction(_with(embedding=[float(x) for x in vec])).obs.embedding
    as_b64 = parse_interaction(_with(embedding_b64=_b64(vec))).obs.embedding
    assert as_json is not None and as_b64 is not None
    assert as_json.dtype == as_b64.dtype == np.float32
    assert as_json.shape == as_b64.shape == (384,)
    assert np.array_equal(as_json, vec)
    assert np.array_equal(as_b64, vec)
    # Ints are numbers too.
    ints = parse_interaction(_with(embedding=list(range(8)))).obs.embedding
    assert ints is not None and ints.tolist() == [float(i) for i in range(8)]


def test_b64_is_little_endian() -> None:
    big = base64.b64encode(np.asarray(VEC8, dtype=">f4").tobytes()).decode()
    got = parse_interaction(_with(embedding_b64=big)).obs.embedding
    assert got is not None and got.tolist() != VEC8
    got = parse_interaction(_with(embedding_b64=_b64(VEC8))).obs.embedding
    assert got is not None and got.tolist() == VEC8


@pytest.mark.parametrize("dim", [MIN_EMBEDDING_DIM, 384, MAX_EMBEDDING_DIM])
@pytest.mark.parametrize("fmt", ["json", "b64"])
def test_embedding_dimension_limits_accepted(dim: int, fmt: str) -> None:
    vec = [0.25] * dim
    raw = _with(embedding=vec) if fmt == "json" else _with(embedding_b64=_b64(vec))
    emb = parse_interaction(raw).obs.embedding
    assert emb is not None and emb.shape == (dim,)


@pytest.mark.parametrize("dim", [MIN_EMBEDDING_DIM - 1, MAX_EMBEDDING_DIM + 1])
@pytest.mark.parametrize("fmt", ["json", "b64"])
def test_embedding_dimension_limits_rejected(dim: int, fmt: str) -> None:
    vec = [0.25] * dim
    raw = _with(embedding=vec) if fmt == "json" else _with(embedding_b64=_b64(vec))
    assert _reason(raw) == "bad_embedding"


@pytest.mark.parametrize(("value", "expected"), [
    (-1, -1), (0, 0), (1, 1), (None, None), (1.0, 1), (-1.0, -1)])
def test_feedback_values(value: float | None, expected: int | None) -> None:
    fb = parse_interaction(_with(feedback=value)).obs.feedback
    assert fb == expected
    assert fb is None or type(fb) is int


@pytest.mark.parametrize("field", ["latency_ms", "input_tokens", "output_tokens"])
def test_bools_are_not_numbers(field: str) -> None:
    assert _reason(_with(**{field: True})) == "bad_type"
    assert _reason(_with(**{field: False})) == "bad_type"


def test_model_id_alphabet_and_length() -> None:
    mid = "Az09._:-" + "x" * 120
    assert len(mid) == 128
    assert parse_interaction(_with(model_id=mid), mid.encode()).model_id == mid


def test_key_is_optional_and_must_match_when_given() -> None:
    assert parse_interaction(_with(), None).model_id == "m1"
    assert parse_interaction(_with(), b"m1").model_id == "m1"
    assert _reason(_with(), b"M1") == "key_mismatch"
    assert _reason(_with(), b"") == "key_mismatch"


def test_size_limit_boundary() -> None:
    def payload(size: int) -> bytes:
        head = _with(metadata={"pad": ""})
        raw = _with(metadata={"pad": "x" * (size - len(head))})
        assert len(raw) == size
        return raw

    limit = 1000
    assert parse_interaction(payload(limit), max_bytes=limit).model_id == "m1"
    assert _reason(payload(limit + 1), max_bytes=limit) == "oversized"
    # The default limit, exactly at and one byte over.
    assert parse_interaction(payload(MAX_PAYLOAD_BYTES)).model_id == "m1"
    assert _reason(payload(MAX_PAYLOAD_BYTES + 1)) == "oversized"


def test_size_limit_is_checked_before_decoding() -> None:
    # An oversized non-JSON blob is "oversized", not "bad_json": no parse is attempted.
    assert _reason(b"\xff" * 11, max_bytes=10) == "oversized"


def test_decode_object_accepts_memoryview_and_bytearray() -> None:
    raw = _with()
    assert decode_object(memoryview(raw)) == BASE
    assert decode_object(bytearray(raw)) == BASE


# -- feedback and model updates --------------------------------------------------------

def test_parse_feedback() -> None:
    raw = orjson.dumps({"event_id": "e9", "model_id": "m1", "ts": "2026-01-01T00:00:00Z",
                        "correct": False})
    fb = parse_feedback(raw, b"m1")
    assert (fb.event_id, fb.model_id, fb.ts, fb.correct, fb.feedback) == (
        "e9", "m1", TS, False, None)
    fb = parse_feedback(orjson.dumps({**BASE, "feedback": -1}))
    assert (fb.correct, fb.feedback) == (None, -1)
    fb = parse_feedback(orjson.dumps({**BASE, "feedback": 0, "correct": True}))
    assert (fb.correct, fb.feedback) == (True, 0)


@pytest.mark.parametrize(("doc", "key", "reason"), [
    (BASE, None, "missing_field"),  # neither correct nor feedback
    ({**BASE, "correct": None, "feedback": None}, None, "missing_field"),
    ({"model_id": "m1", "ts": TS, "correct": True}, None, "missing_field"),
    ({"event_id": "e1", "model_id": "m1", "correct": True}, None, "missing_field"),
    ({**BASE, "correct": True}, b"m2", "key_mismatch"),
    ({**BASE, "correct": 1}, None, "bad_type"),
    ({**BASE, "feedback": 3}, None, "bad_value"),
    ({**BASE, "correct": True, "schema_version": 9}, None, "unknown_schema"),
])
def test_parse_feedback_rejects(doc: dict[str, Any], key: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_feedback(orjson.dumps(doc), key)
    assert info.value.reason == reason


def test_parse_model_update() -> None:
    up = parse_model_update(orjson.dumps({"model_id": "m1", "model_version": "v2", "ts": TS,
                                          "kind": "deployed"}), b"m1")
    assert (up.model_id, up.model_version, up.ts, up.kind) == ("m1", "v2", TS, "deployed")
    up = parse_model_update(orjson.dumps({"model_id": "m1", "model_version": "v3",
                                          "ts": "2026-01-01T00:00:00Z"}))
    assert (up.model_version, up.kind, up.ts) == ("v3", "deployed", TS)


@pytest.mark.parametrize(("doc", "key", "reason"), [
    ({"model_id": "m1", "ts": TS}, None, "missing_field"),
    ({"model_id": "m1", "model_version": "v2"}, None, "missing_field"),
    ({"model_id": "m1", "model_version": "v2", "ts": TS, "kind": "rolled_back"}, None,
     "bad_value"),
    ({"model_id": "m1", "model_version": "", "ts": TS}, None, "bad_type"),
    ({"model_id": "m1", "model_version": "v2", "ts": TS}, b"m9", "key_mismatch"),
    ({"model_id": "m 1", "model_version": "v2", "ts": TS}, None, "bad_model_id"),
])
def test_parse_model_update_rejects(doc: dict[str, Any], key: bytes | None,
                                    reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_model_update(orjson.dumps(doc), key)
    assert info.value.reason == reason


# -- seeded fuzz ---------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "schema_version": 1, "event_id": "e1", "model_id": "m1", "model_version": "v1",
    "ts": TS, "latency_ms": 812.5, "input_tokens": 400, "output_tokens": 180,
    "refusal": False, "feedback": 1, "correct": True, "embedding": VEC8,
    "metadata": {"route": "chat"},
}
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 0.5, -0.0, 1e308, -1e308, 2**63, 2**64 - 1, "", "x",
    "NaN", "2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z", [], [1], [None], [[1.0] * 8],
    ["1"] * 8, [True] * 8, [0.1] * 7, [0.1] * 8, [1e39] * 8, [2**64 - 1] * 8, {}, {"a": 1},
    "e" * 300, "AAAA", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "a\x00b", "a\nb",
    "\x85", {"k": "\x00"}, {"\x00": 1},
]
# Literals JSON has no finite value for, or no 64-bit integer for, in place of a number.
ODD_LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400",
                b"123456789012345678901234567890", b"-99999999999999999999", b"1e-400"]


def _mutate(rng: random.Random) -> tuple[bytes, bytes | None]:
    doc = dict(VALID)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        name = rng.choice([*VALID, "embedding_b64", "unknown"])
        if op == 0:
            doc.pop(name, None)
        elif op in (1, 2):
            doc[name] = rng.choice(ODD_VALUES)
        elif op == 3 and isinstance(doc.get("embedding"), list) and doc["embedding"]:
            emb = list(doc["embedding"])
            emb[rng.randrange(len(emb))] = rng.choice(ODD_VALUES)
            doc["embedding"] = emb
        else:
            doc["embedding_b64"] = _b64(VEC8) if rng.random() < 0.5 else rng.choice(ODD_VALUES)
            doc.pop("embedding", None)
    raw = orjson.dumps(doc)
    post = rng.randrange(6)
    if post == 0:
        raw = raw.replace(rng.choice([b"812.5", b"400", b"0.125"]), rng.choice(ODD_LITERALS), 1)
    elif post == 1:
        raw = raw[: rng.randrange(len(raw) + 1)]
    elif post == 2:
        i = rng.randrange(len(raw))
        raw = raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1:]
    elif post == 3 and rng.random() < 0.1:
        raw = b"[" + raw + b"]"
    key = rng.choice([None, b"m1", b"m2", str(doc.get("model_id")).encode()])
    return raw, key


def test_seeded_mutations_only_ever_raise_invalid_event() -> None:
    rng = random.Random(20260101)
    accepted = 0
    reasons: set[str] = set()
    for _ in range(2000):
        raw, key = _mutate(rng)
        for parse in (parse_interaction, parse_feedback, parse_model_update):
            try:
                value = parse(raw, key)
            except InvalidEvent as exc:
                assert exc.reason in REASONS
                reasons.add(exc.reason)
                continue
            if parse is not parse_interaction:
                continue
            accepted += 1
            o = value.obs  # type: ignore[union-attr]
            iso(o.ts)  # every accepted ts has an RFC 3339 form
            assert math.isfinite(o.ts) and o.ts >= 0
            assert o.latency_ms is None or (math.isfinite(o.latency_ms) and o.latency_ms >= 0)
            for n in (o.input_tokens, o.output_tokens):
                assert n is None or (type(n) is int and n >= 0)
            assert o.refusal in (None, True, False) and o.correct in (None, True, False)
            assert o.feedback in (None, -1, 0, 1)
            if o.embedding is not None:
                assert o.embedding.dtype == np.float32 and o.embedding.ndim == 1
                assert MIN_EMBEDDING_DIM <= o.embedding.shape[0] <= MAX_EMBEDDING_DIM
                assert np.isfinite(o.embedding).all()
                items = value.raw.get("embedding")  # type: ignore[union-attr]
                if items is not None:
                    assert all(type(x) in (int, float) for x in items), items
    # The fuzz reaches both sides of the contract and most reasons.
    assert 100 < accepted < 1900
    assert reasons >= set(REASONS) - {"oversized", "embedding_dim_changed", "store_rejected",
                                      "model_not_admitted"}
