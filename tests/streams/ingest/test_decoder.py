"""The batch decoder's fast decode is a strict subset of the contract's validator, record
by record and in bulk (a batch must never give a record another record's fields)."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest
from driftline.streams.ingest.contract import InvalidEvent, parse_interaction
from driftline.streams.ingest.decoder import BatchDecoder, FastInteraction

from tests.streams.ingest.test_contract import _mutate

CHUNK = 64  # batch sizes around a power of two
GOOD = {"event_id": "e1", "model_id": "m1", "model_version": "v1", "ts": 1767225600.0,
        "latency_ms": 812.5, "output_tokens": 180, "refusal": False, "correct": True}

# Byte-level troubles that one JSON parser may forgive and the other not.
ODD_FIELDS = [
    b'"x":"\xff"', b'"\xc3":1', b'"x":{"y":[1,{"z":"\xc3"}]}', b'"x":1e400', b'"x":-1e999',
    b'"x":' + b"9" * 400, b'"metadata":{"a":1e400}', b'"metadata":{"a":"\xe9"}',
    b'"metadata":{"a":"\\ud800"}', b'"x":"\\udc00"', b'"metadata":' + b'{"a":' * 1100 + b"1" +
    b"}" * 1100, b'"latency_ms":5,"latency_ms":-1', b'"latency_ms":-1,"latency_ms":5',
    b'"refusal":true,"refusal":null', b'"ts":"2026-01-01T00:00:00Z"', b'"feedback":1.0',
    b'"schema_version":1.0', b'"schema_version":null', b'"embedding":[1,2,3,4,5,6,7,1e39]',
    b'"embedding":[1,2,3,4,5,6,7,true]', b'"embedding":[1,2,3,4,5,6,7,' + b"9" * 30 + b"]",
    b'"output_tokens":' + b"9" * 25, b'"latency_ms":' + b"9" * 25, b'"event_id":"' +
    "\u00e9".encode() * 256 + b'"', b'"event_id":"' + "\u00e9".encode() * 257 + b'"',
    b'"metadata":{"note":"caf\xc3\xa9"}', b'"metadata":[]', b'"embedding_b64":null',
]


def _expect(raw: bytes | None, key: bytes | None) -> object:
    """parse_interaction's verdict as comparable values, or the reject reason."""
    try:
        it = parse_interaction(raw, key)
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


class FastPath(BatchDecoder):
    """The fast decode alone, one record or a batch at a time."""

    def decode(self, value: bytes | None, key: bytes | None) -> FastInteraction | None:
        return self.fast([value], [key])[0][0]

    def decode_many(self, values: list[bytes | None], keys: list[bytes | None]
                    ) -> list[FastInteraction | None]:
        return self.fast(values, keys)[0]

    def decode_batch(self, values: list[bytes | None], keys: list[bytes | None]
                     ) -> tuple[list[FastInteraction | None], list[str | None], list[int]]:
        return self.fast(values, keys)


def _cases(seed: int, n: int) -> list[tuple[bytes | None, bytes | None]]:
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None]] = []
    good = orjson.dumps(GOOD)
    for _ in range(n):
        pick = rng.random()
        if pick < 0.4:
            raw, key = _mutate(rng)
            out.append((raw, key if key is not None else b"m1"))
        elif pick < 0.7:
            out.append((good[:-1] + b"," + rng.choice(ODD_FIELDS) + b"}", b"m1"))
        elif pick < 0.8:
            out.append((rng.choice([b"", b" ", b"\n", good + b"\n", b"\n" + good,
                                    good + b"," + good, b'{"a":"', b'"}', good[:-1] + b"\n}",
                                    None]), rng.choice([b"m1", None, b"m\xff"])))
        else:
            doc = dict(GOOD, event_id=f"e{rng.randrange(10**6)}",
                       latency_ms=rng.lognormvariate(6, 0.4))
            if rng.random() < 0.3:
                doc["embedding"] = [rng.gauss(0, 1) for _ in range(8)]
            out.append((orjson.dumps(doc), b"m1"))
    return out


def test_decode_accepts_only_what_the_contract_accepts_with_the_same_values() -> None:
    fast = FastPath(64 * 1024)
    accepted = 0
    for raw, key in _cases(5, 3000):
        got = fast.decode(raw, key)
        if got is None:
            continue
        accepted += 1
        assert _expect(raw, key) == _values(got), raw
    assert accepted > 800  # the fast path is not trivially refusing everything


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_decode_many_equals_one_by_one_at_every_position(size: int) -> None:
    fast = FastPath(64 * 1024)
    for seed in range(12):
        cases = _cases(100 * size + seed, size)
        values = [v for v, _ in cases]
        keys = [k for _, k in cases]
        bulk = fast.decode_many(values, keys)
        one = [fast.decode(v, k) for v, k in cases]
        assert [None if b is None else _values(b) for b in bulk] == \
               [None if o is None else _values(o) for o in one]


@pytest.mark.parametrize("size", [1, 2, CHUNK, 3 * CHUNK + 7])
def test_decode_batch_names_each_failure_and_key_mismatch_in_order(size: int) -> None:
    """Failed decodes, keys naming another model (or none), both in one batch or
    neither: the positions, the model ids and the records of decoding one at a time."""
    fast = FastPath(64 * 1024)
    for seed in range(40):
        rng = random.Random(seed)
        cases = _cases(1000 * size + seed, size)
        # Keys of another (valid) model on records that decode: a mismatch the decode
        # alone does not see.
        share = rng.choice([0.0, 0.05, 0.5])
        keys = [b"m2" if rng.random() < share else k for _, k in cases]
        values = [v for v, _ in cases]
        its, ids, bad = fast.decode_batch(values, keys)
        one = [fast.decode(v, k) for v, k in zip(values, keys, strict=True)]
        assert bad == [i for i, o in enumerate(one) if o is None]
        assert ids == [None if o is None else o.model_id for o in one]
        assert [None if b is None else _values(b) for b in its] == \
               [None if o is None else _values(o) for o in one]


def test_records_that_only_parse_together_are_not_merged() -> None:
    """Two halves of an object, a value holding two objects, blank values: a JSON-lines
    or array reading of the batch would shift them into neighbours; the decoder must not."""
    fast = FastPath(64 * 1024)
    good = orjson.dumps(GOOD)
    doc2 = orjson.dumps(dict(GOOD, event_id="e2"))
    tricky = [
        [b'{"event_id":"e1","model_id":"m1",', b'"ts":1}'],
        [good + b"\n" + doc2, b""],
        [good + b"," + doc2, b" "],
        [good, b"", doc2],
        [good[:-1], b"}", doc2],
        # Each half starts with "{" and ends with "}"; together with the pair after
        # them, a batch-wide parse would see three well-formed records.
        [b'{"event_id":"e1","model_id":"m1","ts":1,"x":"}', b'{","y":1}', good + b" " + doc2],
        [b'{"event_id":"e1","model_id":"m1",', b'"ts":1}', good + doc2],
    ]
    for values in tricky:
        keys: list[bytes | None] = [b"m1"] * len(values)
        got = fast.decode_many(values, keys)  # type: ignore[arg-type]
        want = [fast.decode(v, b"m1") for v in values]
        assert [None if g is None else _values(g) for g in got] == \
               [None if w is None else _values(w) for w in want]
        for v, g in zip(values, got, strict=True):
            assert (g is None) == (not isinstance(_expect(v, b"m1"), tuple)) or g is None


def test_poison_in_a_chunk_costs_only_itself() -> None:
    fast = FastPath(64 * 1024)
    rng = np.random.default_rng(3)
    values = [orjson.dumps(dict(GOOD, event_id=f"e{i}", latency_ms=float(x)))
              for i, x in enumerate(rng.lognormal(6, 0.4, 500))]
    bad_at = [0, 17, 63, 64, 65, 200, 499]
    for k, i in enumerate(bad_at):
        values[i] = [b"{not json", b'{"event_id":"p","model_id":"m1","ts":1,"latency_ms":"x"}',
                     b'{"schema_version":9,"event_id":"p","model_id":"m1","ts":1}'][k % 3]
    got = fast.decode_many(values, [b"m1"] * len(values))  # type: ignore[arg-type]
    assert [i for i, g in enumerate(got) if g is None] == bad_at
    assert [g.event_id for g in got if g is not None] == \
           [f"e{i}" for i in range(500) if i not in bad_at]


def test_vectors_come_out_as_float32_bytes_and_overflow_refuses() -> None:
    fast = FastPath(64 * 1024)
    vec = [0.1 * i - 0.3 for i in range(16)]
    it = fast.decode(orjson.dumps(dict(GOOD, embedding=vec)), b"m1")
    assert it is not None and it.embedding == np.asarray(vec, dtype="<f4").tobytes()
    assert fast.decode(orjson.dumps(dict(GOOD, embedding=[3.5e38] * 8)), b"m1") is None
    assert fast.decode(orjson.dumps(GOOD), b"m2") is None  # key differs from model_id
    assert fast.decode(orjson.dumps(dict(GOOD, model_id="m 1")), b"m 1") is None
