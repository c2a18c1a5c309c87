"""The one batch decoder: raw Kafka values (and keys) in, typed records and rejects out.

Used by every consumer of driftline's input: the monitor (interactions, feedback,
deploys), the logger, ``driftline replay`` (lines of a file: no keys) and the retrain agent
(drift events). For interactions, msgspec decodes each value straight into
:class:`~driftline.streams.ingest.contract.InteractionRecord` and checks types and bounds
in C; the contract's string rules and the Kafka key are checked over the whole batch in
a few C calls. A record the fast decode is not certain of (anything unusual: a NUL
escape, an undeclared field, a control character in an id, invalid JSON...) goes to the
reference validator, which accepts it with the same values or names the reason. The fast
decode may be slower to say yes, never quicker to say it
(``tests/streams/ingest/test_differential.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import attrgetter, ne
from typing import Any, NamedTuple, TypeVar

import msgspec
from driftline.streams.ingest.contract import (
    MAX_PAYLOAD_BYTES,
    DriftEvent,
    Feedback,
    InteractionRecord,
    InvalidEvent,
    ModelUpdate,
    parse_drift_event,
    parse_feedback,
    parse_interaction,
    parse_model_update,
    ts_of_string,
    valid_model_id,
    vector_of_b64,
)
from driftline.streams.ingest.contract import Interaction as _Validated

T = TypeVar("T")
FastInteraction = InteractionRecord  # the name the processor's code grew up with

_MODEL_ID = attrgetter("model_id")
_EVENT_ID = attrgetter("event_id")
_VERSION = attrgetter("model_version")
# The memo's value for no key, a key that is no valid model id, a failed decode: equal to
# no decoded model id.
_NO_MODEL = object()
_NUL = b"\\u0000"
MAX_NESTING = 256  # brackets in a value with metadata the fast decode takes at its word


class Rejected(NamedTuple):
    """A record of a batch that breaks the contract: its position and why."""

    position: int
    reason: str
    message: str


class Decoded(NamedTuple):
    """A decoded batch of interactions: the records (None where rejected), their model
    ids (None where rejected) and the rejects, in order."""

    records: list[InteractionRecord | None]
    ids: list[str | None]
    rejects: list[Rejected]


def from_interaction(it: _Validated) -> InteractionRecord:
    """The decoder's form of a document the reference validator accepted."""
    o = it.obs
    return InteractionRecord(
        event_id=o.event_id, model_id=it.model_id, ts=o.ts, model_version=o.model_version,
        latency_ms=o.latency_ms, input_tokens=o.input_tokens, output_tokens=o.output_tokens,
        refusal=o.refusal, correct=o.correct, feedback=o.feedback,
        embedding=None if o.embedding is None else o.embedding.astype("<f4").tobytes())  # type: ignore[arg-type]


class BatchDecoder:
    """Decodes batches; keeps a memo of Kafka keys (and model ids) that are valid."""

    def __init__(self, max_payload_bytes: int = MAX_PAYLOAD_BYTES,
                 key_memo: int = 100_000) -> None:
        self.limit = max_payload_bytes
        self._decode = msgspec.json.Decoder(InteractionRecord).decode
        # Kafka key (or model id, for keyless input) -> its model id, or _NO_MODEL.
        self._keys: dict[Any, Any] = {None: _NO_MODEL}
        self._ids: dict[Any, Any] = {None: _NO_MODEL}
        self._memo = key_memo
        self._packers: dict[int, Any] = {}
        # Set once any vector passed: from then on runs check embedding dimensions.
        self.vectors_seen = False
        self._failed = 0  # fast decodes that failed in this batch (counted by _one)

    # -- interactions -------------------------------------------------------------------
    def interactions(self, values: Sequence[bytes | None],
                     keys: Sequence[bytes | None] | None = None) -> Decoded:
        """Decode a batch. With ``keys`` (Kafka), each key must be its record's model id
        (a record without a key is refused); without (a file), no key is checked."""
        out, ids, unsure = self.fast(values, keys)
        rejects: list[Rejected] = []
        for i in unsure:
            try:
                key = None
                if keys is not None:
                    key = keys[i]
                    if key is None:
                        raise InvalidEvent("missing_field", "message has no key (model_id)")
                it = from_interaction(parse_interaction(values[i], key, self.limit))
            except InvalidEvent as exc:
                rejects.append(Rejected(i, exc.reason, exc.message))
                continue
            out[i] = it
            ids[i] = it.model_id
            if it.embedding is not None:
                self.vectors_seen = True
        return Decoded(out, ids, rejects)

    def fast(self, values: Sequence[bytes | None], keys: Sequence[bytes | None] | None
             ) -> tuple[list[InteractionRecord | None], list[str | None], list[int]]:
        """The fast decode alone: records it is certain of (None elsewhere), their model
        ids, and the positions it left to the reference, in order.

        Past the per-record decode every step is one C call over the batch: a search of
        the joined values for a NUL escape, ``isprintable`` of the joined ids, the keys'
        model ids from the memo against the decoded ones (one list comparison). A failed
        decode is found by a C search for its None (as many searches as failures), then
        takes its key's model id for that comparison, which then fails only for a key
        that is not the model id -- found by one more C scan.
        (Not one JSON-lines call: msgspec reads a stream of values separated by any
        whitespace, so crafted records could parse into a neighbour's fields.)
        """
        self._failed = 0
        out = list(map(self._one, values))
        failed = self._failed
        if _NUL in b"".join(filter(None, values)):  # rare: which ones?
            for i, v in enumerate(values):
                if out[i] is not None and _NUL in v:  # type: ignore[operator]
                    out[i] = None
                    failed += 1
        good = filter(None, out)
        if not ("".join(map(_EVENT_ID, good)).isprintable()
                and "".join(filter(None, map(_VERSION, filter(None, out)))).isprintable()):
            for i, it in enumerate(out):  # rare: a control (or other unusual) character
                if it is not None and not (it.event_id.isprintable() and (
                        it.model_version is None or it.model_version.isprintable())):
                    out[i] = None
                    failed += 1
        if keys is None:
            ids = list(map(getattr, out, repeat("model_id"), repeat(None)))
            try:
                texts = list(map(self._ids.__getitem__, ids))
            except KeyError:  # a model id not seen yet
                texts = list(map(self._model_of_id, ids))
            unsure = list(compress(range(len(ids)), map(ne, ids, texts)))
            for i in unsure:
                out[i] = None
                ids[i] = None
            return out, ids, unsure
        try:
            texts = list(map(self._keys.__getitem__, keys))
        except KeyError:  # a key not seen yet
            texts = list(map(self._model_of_key, keys))
        bad: list[int] = []
        if failed:  # (None.model_id: None)
            ids = list(map(getattr, out, repeat("model_id"), repeat(None)))
            i = -1
            for _ in range(failed):
                i = ids.index(None, i + 1)
                bad.append(i)
                ids[i] = texts[i]
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

    def _model_of_key(self, key: bytes | None) -> Any:
        """The key's model id, or _NO_MODEL (no key, not UTF-8, outside the pattern)."""
        hit = self._keys.get(key)
        if hit is None:
            try:
                text = key.decode()  # type: ignore[union-attr]
            except UnicodeDecodeError:
                text = None
            hit = text if text is not None and valid_model_id(text) else _NO_MODEL
            if len(self._keys) < self._memo:
                self._keys[key] = hit
        return hit

    def _model_of_id(self, model_id: str | None) -> Any:
        """The model id itself if valid, else _NO_MODEL."""
        hit = self._ids.get(model_id)
        if hit is None:
            hit = model_id if valid_model_id(model_id) else _NO_MODEL  # type: ignore[arg-type]
            if len(self._ids) < self._memo:
                self._ids[model_id] = hit
        return hit

    def _one(self, value: bytes | None) -> InteractionRecord | None:
        """Decode one value and pack its vector at once (a float list freed right away
        leaves its memory to the next one: twice as fast as holding a batch of them)."""
        if value is None or len(value) > self.limit:
            self._failed += 1
            return None
        try:
            it: InteractionRecord = self._decode(value)
        except (msgspec.MsgspecError, ValueError, RecursionError):  # bad UTF-8, deep nesting
            self._failed += 1
            return None
        if (it.embedding is None and it.embedding_b64 is None and it.metadata is None
                and it.ts.__class__ is float):
            return it
        if self._finish(it, value):
            return it
        self._failed += 1
        return None

    def _finish(self, it: InteractionRecord, value: bytes) -> bool:
        """An RFC 3339 ``ts`` to epoch seconds, the vector to float32 bytes; False if the
        reference must decide (it names the reason)."""
        # msgspec reads deeper nesting than orjson (the reference) does: a deep
        # ``metadata`` takes the reference, which refuses past orjson's limit.
        if it.metadata is not None and value.count(b"{") + value.count(b"[") > MAX_NESTING:
            return False
        try:
            if isinstance(it.ts, str):
                it.ts = ts_of_string(it.ts)
            if it.embedding_b64 is not None:
                if it.embedding is not None:
                    return False
                it.embedding = vector_of_b64(it.embedding_b64)  # type: ignore[assignment]
                it.embedding_b64 = None
            elif it.embedding is not None:
                emb = it.embedding
                n = len(emb)
                pack = self._packers.get(n)
                if pack is None:
                    pack = self._packers[n] = struct.Struct(f"<{n}f").pack
                it.embedding = pack(*emb)  # type: ignore[assignment]
        except (InvalidEvent, OverflowError):  # OverflowError: beyond float32
            return False
        self.vectors_seen = True if it.embedding is not None else self.vectors_seen
        return True

    # -- the other record kinds (low volume: the reference, record by record) ------------
    def feedback(self, values: Sequence[bytes | None], keys: Sequence[bytes | None] | None
                 ) -> tuple[list[Feedback | None], list[Rejected]]:
        return _each(parse_feedback, values, keys, self.limit)

    def model_updates(self, values: Sequence[bytes | None],
                      keys: Sequence[bytes | None] | None
                      ) -> tuple[list[ModelUpdate | None], list[Rejected]]:
        return _each(parse_model_update, values, keys, self.limit)

    def drift_events(self, values: Sequence[bytes | None],
                     keys: Sequence[bytes | None] | None
                     ) -> tuple[list[DriftEvent | None], list[Rejected]]:
        return _each(parse_drift_event, values, keys, self.limit)


def _each(parse: Callable[[bytes | None, bytes | None, int], T],
          values: Sequence[bytes | None], keys: Sequence[bytes | None] | None, limit: int
          ) -> tuple[list[T | None], list[Rejected]]:
    out: list[T | None] = []
    rejects: list[Rejected] = []
    for i, value in enumerate(values):
        try:
            key = None
            if keys is not None:
                key = keys[i]
                if key is None:
                    raise InvalidEvent("missing_field", "message has no key (model_id)")
            out.append(parse(value, key, limit))
        except InvalidEvent as exc:
            out.append(None)
            rejects.append(Rejected(i, exc.reason, exc.message))
    return out, rejects
