"""A cheap admission check for the common case of a well-formed interaction.

``accepts`` returns True only for documents that ``schema.parse_interaction`` certainly
accepts; anything unusual (RFC 3339 ``ts``, ``embedding_b64``, a string where a number
belongs, a literal ``true``/``false`` it cannot account for…) returns False and takes the
full validator, which names the exact reason. Being a strict subset is what keeps one
contract: the fast path may be slower to say yes, never quicker to say it.
"""

from __future__ import annotations

import math
from typing import Any

from streams.schema import _MODEL_ID as MODEL_ID_RE
from streams.schema import (
    MAX_EMBEDDING_DIM,
    MAX_TS,
    MIN_EMBEDDING_DIM,
    SCHEMA_VERSION,
)

_STRINGS = ("event_id", "model_version")
_COUNTS = ("output_tokens", "input_tokens")
_BOOLS = ("refusal", "correct")


class ModelIds:
    """Memo of model ids already matched against the contract's pattern."""

    def __init__(self, limit: int = 100_000) -> None:
        self._ok: dict[str, bool] = {}
        self._limit = limit

    def ok(self, model_id: str) -> bool:
        hit = self._ok.get(model_id)
        if hit is None:
            hit = bool(MODEL_ID_RE.match(model_id))
            if len(self._ok) < self._limit:
                self._ok[model_id] = hit
        return hit


def accepts(doc: Any, raw: bytes, key: bytes | None, ids: ModelIds) -> bool:
    """True only if ``parse_interaction(raw, key)`` would accept ``doc`` (decoded ``raw``)."""
    if type(doc) is not dict:
        return False
    sv = doc.get("schema_version")
    if sv is not None and not (type(sv) is int and sv == SCHEMA_VERSION):
        return False
    mid = doc.get("model_id")
    if type(mid) is not str or not ids.ok(mid):
        return False
    if key is not None and key != mid.encode():
        return False
    for name in _STRINGS:
        v = doc.get(name)
        if v is None:
            if name == "event_id":
                return False
        elif type(v) is not str or not 0 < len(v) <= 256:
            return False
    ts: Any = doc.get("ts")
    t = type(ts)
    if not ((t is float and 0.0 <= ts <= MAX_TS) or (t is int and 0 <= ts <= MAX_TS)):
        return False  # (a NaN/inf float fails the range test; strings go the slow way)
    meta = doc.get("metadata")
    if meta is not None and type(meta) is not dict:
        return False
    lat: Any = doc.get("latency_ms")
    if lat is not None:
        t = type(lat)
        if not ((t is float and math.isfinite(lat) and lat >= 0) or (t is int and lat >= 0)):
            return False
    for name in _COUNTS:
        v = doc.get(name)
        if v is not None and not (type(v) is int and v >= 0):
            return False
    bools = 0
    for name in _BOOLS:
        v = doc.get(name)
        if v is not None:
            if type(v) is not bool:
                return False
            bools += 1
    fb = doc.get("feedback")
    if fb is not None and not (type(fb) is int and -1 <= fb <= 1):
        return False
    if doc.get("embedding_b64") is not None:
        return False
    emb = doc.get("embedding")
    if emb is not None:
        if type(emb) is not list or not MIN_EMBEDDING_DIM <= len(emb) <= MAX_EMBEDDING_DIM:
            return False
        # numpy turns a bool inside the vector into 1.0 without a word. Every JSON
        # true/false is a literal token in ``raw``; if there are more tokens than the
        # top-level bools account for, one may sit in the vector: let the validator look.
        if raw.count(b"true") + raw.count(b"false") != bools:
            return False
    return True
