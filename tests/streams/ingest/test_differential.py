"""The batch decoder against the reference validator, on every input class (hypothesis).

For any payload and key the decoder's verdict -- the record with its values, or the
reason -- is the reference's (``parse_interaction``), and its fast decode never says yes
where the reference says no. The inputs are built from the classes a producer can send:
ints, floats, bools, NaN/Infinity, huge numbers, nesting, duplicate keys, unicode, NUL and
control characters, lone surrogates, wrong dimensions, mixed ``embedding`` and
``embedding_b64``. Seeded and bounded (``derandomize``, ``max_examples``): the same cases
on every run, in seconds.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from driftline.streams.ingest.contract import InvalidEvent, parse_interaction
from driftline.streams.ingest.decoder import BatchDecoder, FastInteraction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(derandomize=True, max_examples=800, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NUMBERS = st.one_of(
    st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**62, 2**62 + 1]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 1e300,
                                                                       1e301, 1e13, 3.5e38]),
    st.booleans(), st.none())
TEXT = st.one_of(
    st.text(max_size=8), st.text(st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["e1", "m1", "m1\n", "a\x00b", "\x00", "\x07", "\x85", "\x7f", "\u200b",
                     "\u00a0", "\u202e", "é" * 257, "😀", "v1", "a/b", "m 1", "",
                     "2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01t00:00:00z",
                     "AAAA", "not base64!"]))
JSON = st.recursive(st.one_of(NUMBERS, TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(TEXT, inner, max_size=4)),
                    max_leaves=12)


def _b64(vec: Any) -> str:
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()


VECTORS = st.one_of(
    st.lists(st.floats(-1e3, 1e3, width=32), min_size=8, max_size=12),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=7, max_size=9),
    st.lists(NUMBERS, min_size=0, max_size=10), st.just([1.0] * 8 + [True]),
    st.just([1.0, True, *[1.0] * 7]), st.just([[1.0] * 8]))
B64 = st.one_of(st.lists(st.floats(-1e3, 1e3, width=32), min_size=6, max_size=12).map(_b64),
                st.just(_b64([1.0] * 7 + [np.nan])), st.just(_b64([1.0] * 8)[:-2]), TEXT)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(TEXT, NUMBERS), "model_id": st.one_of(st.just("m1"), TEXT),
    "ts": st.one_of(NUMBERS, TEXT), "model_version": st.one_of(TEXT, st.none(), NUMBERS),
    "latency_ms": NUMBERS, "input_tokens": NUMBERS, "output_tokens": NUMBERS,
    "refusal": NUMBERS, "correct": NUMBERS, "feedback": NUMBERS,
    "metadata": st.one_of(JSON, st.dictionaries(TEXT, JSON, max_size=3)),
    "embedding": VECTORS, "embedding_b64": B64, "schema_version": st.sampled_from(
        [1, 1.0, 2, True, "1", None]), "unknown": JSON}
BASE = {"event_id": "e1", "model_id": "m1", "ts": 1_767_225_600.0}


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    doc = dict(BASE)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4, unique=True)):
        doc[name] = draw(FIELDS[name])
    for name in draw(st.lists(st.sampled_from(sorted(BASE)), max_size=1)):
        doc.pop(name)
    raw = orjson.dumps(doc, option=orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_NON_STR_KEYS)
    # What orjson.dumps cannot write: literals, duplicates, depth, bytes, other writers.
    edit = draw(st.sampled_from(["none"] * 6 + ["literal", "duplicate", "deep", "surrogate",
                                               "byte", "cut", "ascii", "nul_escape",
                                               "control"]))
    if edit == "literal":
        lit = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999",
                                    b"9" * 30, b"1E2", b"-0"]))
        raw = raw[:-1] + b',"latency_ms":' + lit + b"}"
    elif edit == "duplicate":
        name = draw(st.sampled_from(sorted(FIELDS)))
        a, b = orjson.dumps(draw(FIELDS[name])), orjson.dumps(draw(FIELDS[name]))
        raw = raw[:-1] + b',"' + name.encode() + b'":' + a + b',"' + name.encode() + \
            b'":' + b + b"}"
    elif edit == "deep":
        depth = draw(st.sampled_from([100, 255, 256, 257, 1023, 1024, 1025, 2000]))
        raw = raw[:-1] + b',"metadata":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    elif edit == "surrogate":
        esc = draw(st.sampled_from([b"\\ud800", b"\\udc00", b"\\ud83d\\ude00", b"\\uDFFF",
                                    b"\\ud800\\u0041"]))
        field = draw(st.sampled_from([b"event_id", b"metadata_key", b"model_version"]))
        if field == b"metadata_key":
            raw = raw[:-1] + b',"metadata":{"' + esc + b'":1}}'
        else:
            raw = raw[:-1] + b',"' + field + b'":"x' + esc + b'"}'
    elif edit == "byte" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif edit == "cut":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif edit == "ascii":  # a producer writing with ensure_ascii (\\uXXXX escapes)
        import json

        try:
            raw = json.dumps(orjson.loads(raw)).encode()
        except ValueError:
            pass
    elif edit == "nul_escape":
        raw = raw.replace(b'"e1"', draw(st.sampled_from([b'"e\\u0000"', b'"e\\\\u0000"',
                                                         b'"e\\\\\\u0000"'])), 1)
    elif edit == "control":
        raw = raw.replace(b'"e1"', draw(st.sampled_from([b'"e\\u0007"', b'"e\\n"',
                                                         b'"e\xc2\x85"', b'"e\x7f"',
                                                         b'"\xe2\x80\xae"'])), 1)
    key = draw(st.sampled_from([b"m1", b"m1", b"m1", None, b"m2", b"m1\n", b"m\xff"]))
    if draw(st.booleans()) and isinstance(doc.get("model_id"), str):
        key = doc["model_id"].encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([raw, raw, raw, None, b""])), key


def _reference(raw: bytes | None, key: bytes | None, keyed: bool) -> object:
    if keyed and key is None:
        return "missing_field"
    try:
        it = parse_interaction(raw, key if keyed else None)
    except InvalidEvent as exc:
        return exc.reason
    o = it.obs
    emb = None if o.embedding is None else o.embedding.astype("<f4").tobytes()
    return (it.model_id, o.event_id, o.ts, o.model_version, o.latency_ms, o.input_tokens,
            o.output_tokens, o.refusal, o.correct, o.feedback, emb)


def _values(it: FastInteraction) -> tuple[object, ...]:
    return (it.model_id, it.event_id, it.ts, it.model_version, it.latency_ms,
            it.input_tokens, it.output_tokens, it.refusal, it.correct, it.feedback,
            it.embedding)


def _check(batch: list[tuple[bytes | None, bytes | None]], keyed: bool) -> None:
    decoder = BatchDecoder()
    values = [v for v, _ in batch]
    keys = [k for _, k in batch] if keyed else None
    fast, _, unsure = BatchDecoder().fast(values, keys)
    records, ids, rejects = decoder.interactions(values, keys)
    reasons = {r.position: r.reason for r in rejects}
    for i, (raw, key) in enumerate(batch):
        want = _reference(raw, key, keyed)
        if records[i] is not None:
            assert isinstance(want, tuple), (raw, key, want)
            assert _values(records[i]) == want, raw  # type: ignore[arg-type]
            assert ids[i] == want[0]
        else:
            assert reasons.get(i) == want, (raw, key)
            assert ids[i] is None
        if fast[i] is not None:  # the fast decode never says yes on its own authority
            assert isinstance(want, tuple) and _values(fast[i]) == want, raw  # type: ignore[arg-type]
        else:
            assert i in unsure


@SETTINGS
@given(st.lists(payloads(), min_size=1, max_size=4), st.booleans())
def test_the_decoder_gives_the_references_verdict_on_every_input(
        batch: list[tuple[bytes | None, bytes | None]], keyed: bool) -> None:
    _check(batch, keyed)


def test_every_input_class_is_drawn() -> None:
    """The strategy reaches both verdicts and the reasons the classes stand for."""
    seen: set[object] = set()

    @settings(derandomize=True, max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(payloads())
    def collect(case: tuple[bytes | None, bytes | None]) -> None:
        v = _reference(*case, keyed=True)
        seen.add("accepted" if isinstance(v, tuple) else v)

    collect()
    assert seen >= {"accepted", "bad_json", "bad_type", "bad_value", "non_finite",
                    "bad_model_id", "key_mismatch", "bad_embedding", "nul_character",
                    "control_character", "missing_field", "unknown_schema"}
