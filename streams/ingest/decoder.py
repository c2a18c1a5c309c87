"""The hot path's decoder: one C call parses and checks a well-formed interaction.

``FastPath.decode`` returns an :class:`Interaction` only for payloads that
``schema.parse_interaction`` certainly accepts, with the same values; anything unusual
(RFC 3339 ``ts``, ``embedding_b64``, ``feedback: 1.0``, a deeply nested ``metadata``, a
vector beyond float32…) returns None and takes the full validator, which names the exact
reason. Being a strict subset is what keeps one contract: the fast path may be slower to
say yes, never quicker to say it (``tests/streams/test_fastpath.py`` fuzzes the pair).

msgspec does the parsing and the type and range checks against the struct below; the
rest (the Kafka key against ``model_id``, the model id pattern, float32 range of the
vector) costs a dict lookup or a ``struct.pack`` per record.
"""

from __future__ import annotations

import struct
from itertools import compress, repeat
from operator import attrgetter, ne
from typing import Annotated, Any, Literal

import msgspec
from driftline.streams.ingest.contract import _MODEL_ID as MODEL_ID_RE
from driftline.streams.ingest.contract import (
    MAX_EMBEDDING_DIM,
    MAX_TS,
    MIN_EMBEDDING_DIM,
    Interaction,
)
from msgspec import Meta

_MODEL_ID = attrgetter("model_id")
# The key memo's value for no key or a key that is no valid model id: equal to no decoded
# model id (nor to None, a failed decode's).
_NO_MODEL = object()

_Text = Annotated[str, Meta(min_length=1, max_length=256)]
# Bounds inside what both parsers read the same way (orjson turns integer literals
# beyond 64 bits into floats; msgspec refuses them for ``int`` fields).
_Count = Annotated[int, Meta(ge=0, le=2**62)]
_NonNeg = Annotated[float, Meta(ge=0.0, le=1e300)]


class FastInteraction(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """An interaction as the detectors read it (``embedding``: packed float32 bytes).

    Unknown fields take the full validator: msgspec skips them without the checks
    orjson makes (UTF-8, numbers beyond double), and the contract puts extra data
    in ``metadata``, which is decoded (and so checked) here.
    """

    event_id: _Text
    model_id: str
    ts: Annotated[float, Meta(ge=0.0, le=MAX_TS)]
    schema_version: Literal[1] = 1
    model_version: _Text | None = None
    latency_ms: _NonNeg | None = None
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    refusal: bool | None = None
    correct: bool | None = None
    feedback: Annotated[int, Meta(ge=-1, le=1)] | None = None
    metadata: dict[str, Any] | None = None
    embedding: Annotated[list[float], Meta(min_length=MIN_EMBEDDING_DIM,
                                           max_length=MAX_EMBEDDING_DIM)] | None = None
    embedding_b64: None = None  # base64 vectors take the full validator


def from_interaction(it: Interaction) -> FastInteraction:
    """The fast path's form of a document the full validator accepted."""
    o = it.obs
    return FastInteraction(
        event_id=o.event_id, model_id=it.model_id, ts=o.ts, model_version=o.model_version,
        latency_ms=o.latency_ms, input_tokens=o.input_tokens, output_tokens=o.output_tokens,
        refusal=o.refusal, correct=o.correct, feedback=o.feedback,
        embedding=None if o.embedding is None else o.embedding.astype("<f4").tobytes())  # type: ignore[arg-type]


class FastPath:
    """Decodes interactions; keeps a memo of Kafka keys that are valid model ids."""

    def __init__(self, max_payload_bytes: int, key_memo: int = 100_000) -> None:
        self.limit = max_payload_bytes
        self._decode = msgspec.json.Decoder(FastInteraction).decode
        # Kafka key -> its model id, or _NO_MODEL.
        self._keys: dict[bytes | None, str | object] = {None: _NO_MODEL}
        self._key_memo = key_memo
        self._packers: dict[int, Any] = {}
        # Set once any vector passed: from then on runs check embedding dimensions.
        self.vectors_seen = False
        self._failed = 0  # decodes that failed in this batch (counted by _one)

    def _model_of_key(self, key: bytes | None) -> str | object:
        """The key's model id, or _NO_MODEL (no key, not UTF-8, outside the pattern)."""
        hit = self._keys.get(key)
        if hit is None:
            try:
                text = key.decode()  # type: ignore[union-attr]
            except UnicodeDecodeError:
                text = None
            hit = text if text is not None and MODEL_ID_RE.match(text) else _NO_MODEL
            if len(self._keys) < self._key_memo:
                self._keys[key] = hit
        return hit

    def decode(self, value: bytes | None, key: bytes | None) -> FastInteraction | None:
        """The interaction, with ``embedding`` as float32 bytes, or None (full validator)."""
        if value is None or key is None or len(value) > self.limit:
            return None
        it = self._one(value)
        if it is None:
            return None
        if self._model_of_key(key) != it.model_id:
            return None  # key mismatch or a model id outside the pattern
        return it

    def decode_many(self, values: list[bytes | None], keys: list[bytes | None]
                    ) -> list[FastInteraction | None]:
        """``decode`` of each (value, key), with the per-record work done in bulk."""
        return self.decode_batch(values, keys)[0]

    def decode_batch(self, values: list[bytes | None], keys: list[bytes | None]
                     ) -> tuple[list[FastInteraction | None], list[str | None], list[int]]:
        """:meth:`decode_many`, with each record's model id (None where the decode
        failed) and the positions that failed, in order.

        Past the decode every step is one C call over the batch: the keys' model ids
        from the memo, the decoded ones, one list comparison. A failed decode is found
        by a C search for its None (exactly as many searches as failures), then takes
        its key's model id for that comparison, which then fails only for a key that is
        not the model id -- rarer still, and found by one more C scan. (A scan of the
        whole batch for what differs cost ~8 us a failure at 1% of them; a Python loop
        over the batch cost as much as 10% of it.)
        (Not one JSON-lines call: msgspec reads a stream of values separated by any
        whitespace, so crafted records could parse into a neighbour's fields.)
        """
        self._failed = 0
        out = list(map(self._one, values))
        try:
            texts = list(map(self._keys.__getitem__, keys))
        except KeyError:  # a key not seen yet
            texts = list(map(self._model_of_key, keys))
        failed = self._failed
        bad: list[int] = []
        if failed:  # (None.model_id: None)
            ids: list[str | None] = list(map(getattr, out, repeat("model_id"), repeat(None)))
            i = -1
            for _ in range(failed):
                i = ids.index(None, i + 1)
                bad.append(i)
                ids[i] = texts[i]  # type: ignore[call-overload]
        else:
            ids = list(map(_MODEL_ID, out))
        if ids != texts:
            # A key that is not the model id (or no valid model id: _NO_MODEL) differs
            # from every decoded id; failed decodes compare equal here, their key's own id.
            bad = sorted(bad + list(compress(range(len(ids)), map(ne, ids, texts))))
        for i in bad:
            out[i] = None
            ids[i] = None
        return out, ids, bad

    def _one(self, value: bytes | None) -> FastInteraction | None:
        """Decode one value and pack its vector at once (a float list freed right away
        leaves its memory to the next one: twice as fast as holding a batch of them)."""
        if value is None or len(value) > self.limit:
            self._failed += 1
            return None
        try:
            it: FastInteraction = self._decode(value)
        except (msgspec.MsgspecError, ValueError, RecursionError):  # bad UTF-8, deep nesting
            self._failed += 1
            return None
        if it.embedding is None:
            return it
        self.vectors_seen = True
        if self._pack(it):
            return it
        self._failed += 1
        return None

    def _pack(self, it: FastInteraction) -> bool:
        """Replace the vector by its float32 bytes; False if beyond float32's range."""
        emb = it.embedding
        assert emb is not None
        n = len(emb)
        pack = self._packers.get(n)
        if pack is None:
            pack = self._packers[n] = struct.Struct(f"<{n}f").pack
        try:
            it.embedding = pack(*emb)  # type: ignore[assignment]
        except OverflowError:  # "non_finite" from the full validator
            return False
        return True
