"""Monitor state records: one model's monitor and the input offsets applied to it, as the
bytes of ``driftline.monitor-state`` (compacted, keyed by ``model_id``).

A state record is a 5-byte prefix (version, length of the header), a JSON header and the
monitor's snapshot (:mod:`driftline.detectors.state`). The header says which input offset
of each topic the state covers (a restarted worker skips records at or below it, so each
record changes a model once), the embedding dimension in force and which big snapshot
arrays live in records of their own ("apart"), by generation.

A reference (a sample of latencies, the embedding centroids) is most of a model's state
and stays the same from the end of a warm-up to the next deploy; stored apart, it is
written once rather than at every checkpoint. :func:`checkpoint_records` orders a
checkpoint's records so that the latest state record always finds the fields it refers
to, wherever a crash cuts the checkpoint; :class:`LatestStates` puts states back together
from the topic.

Versions: 1 and 2 wrote the header with one-letter keys (``o``, ``d``, ``b``); 3 names
them. Every version this build wrote is read; an unknown one raises (the worker stops
rather than starting a model afresh over a state it cannot read).

A *seed* (``driftline seed``: seasonal profiles learned from the store's history, nothing
observed) is marked so in its header and never replaces a state a worker wrote, whichever
partition either is in: a seed is older than any state of its model.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
from driftline.detectors import ModelMonitor, state
from driftline.detectors.segmented import SegmentedMonitor, restore_monitor
from driftline.detectors.segments import SegmentPlan

STATE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_PREFIX = struct.Struct("<BI")  # version, length of the JSON header
# A snapshot array at least this big is by default stored in a record of its own: a
# model's references (a sample of latencies, the embedding centroids) and their seasonal
# bins.
APART_BYTES = 1024


class StateError(ValueError):
    """A state record this build cannot read, or one that refers to a field the state
    topic does not hold."""


@dataclass(frozen=True, slots=True)
class HeaderKeys:
    """The names of a state header's entries."""

    offsets: str
    embedding_dim: str
    apart: str


HEADER = HeaderKeys(offsets="offsets", embedding_dim="embedding_dim", apart="apart")
SEED = "seed"  # header entry of a seed (version 3; absent otherwise)
_SHORT_HEADER = HeaderKeys(offsets="o", embedding_dim="d", apart="b")  # versions 1 and 2


@dataclass
class ModelState:
    """A model's monitor and what it has seen, as the processor keeps it."""

    monitor: ModelMonitor | SegmentedMonitor
    offsets: dict[str, int]  # source topic -> last offset applied
    partition: int
    dim: list[Any] | None = None  # [model_version, embedding dimension] once seen
    # Fields stored apart: name -> (generation, digest of the stored bytes); the last
    # generation used; digests of the big fields kept inline at the last checkpoint.
    blobs: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    generation: int = 0
    last: dict[str, bytes] = field(default_factory=dict)
    touched: int = 0  # the processor's batch number when the model was last seen
    seeded: bool = False  # written by `driftline seed`, not by a worker


def blob_key(model_id: str, name: str, generation: int) -> bytes:
    """The key of a snapshot field stored apart (model ids cannot contain NUL)."""
    return f"{model_id}\0{name}\0{generation}".encode()


def is_blob_key(key: bytes) -> bool:
    return b"\0" in key


def _digest(v: np.ndarray) -> bytes:
    """Of an array's dtype, shape and data, read in place."""
    h = hashlib.blake2b(f"{v.dtype.str}{v.shape}".encode(), digest_size=16)
    h.update(np.ascontiguousarray(v).data)
    return h.digest()


def _record(st: ModelState, refs: dict[str, int], fields: dict[str, state.Value]) -> bytes:
    doc: dict[str, Any] = {HEADER.offsets: st.offsets, HEADER.embedding_dim: st.dim,
                           HEADER.apart: refs}
    if st.seeded:
        doc[SEED] = True
    head = orjson.dumps(doc)
    return _PREFIX.pack(STATE_VERSION, len(head)) + head + state.encode(fields)


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header (with this build's names) and the snapshot bytes of a record."""
    if len(data) < _PREFIX.size:
        raise StateError("truncated monitor state record")
    version, n = _PREFIX.unpack_from(data)
    if version not in READABLE_VERSIONS:
        raise StateError(f"unsupported monitor state version {version}")
    if len(data) < _PREFIX.size + n:
        raise StateError("truncated monitor state record")
    try:
        raw = orjson.loads(data[_PREFIX.size:_PREFIX.size + n])
    except orjson.JSONDecodeError as exc:
        raise StateError(f"unreadable monitor state header: {exc}") from None
    keys = HEADER if version >= 3 else _SHORT_HEADER
    head = {HEADER.offsets: raw.get(keys.offsets) or {},
            HEADER.embedding_dim: raw.get(keys.embedding_dim),
            HEADER.apart: raw.get(keys.apart) or {}}
    if raw.get(SEED) is True:
        head[SEED] = True
    return head, data[_PREFIX.size + n:]


def is_seed(data: bytes) -> bool:
    """True for a state record ``driftline seed`` wrote (no worker has written one since)."""
    return bool(_split(data)[0].get(SEED))


def encode_state(st: ModelState) -> bytes:
    """A self-contained state record (every field inline; the header still names the
    generations of the fields stored apart, so a restore goes on from them)."""
    refs = {name: gen for name, (gen, _) in st.blobs.items()}
    return _record(st, refs, st.monitor.snapshot_fields())


def decode_state(data: bytes, partition: int, segments: SegmentPlan | None = None
                 ) -> ModelState:
    """Rebuild a model's state from a self-contained record (see :func:`inline_state`),
    segmented as ``segments`` now says."""
    head, snap = _split(data)
    try:
        fields = state.decode(snap)
        model_id = fields.get("model_id")
        plan = (segments.for_model(model_id) if segments and isinstance(model_id, str)
                else None)
        monitor = restore_monitor(fields, plan)
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"unreadable monitor snapshot: {exc}") from None
    # The record was a checkpoint: an array that comes out the same at the next one is
    # stored apart then, stored apart already or not.
    digests = {name: _digest(v) for name, v in fields.items() if isinstance(v, np.ndarray)}
    refs: dict[str, int] = head[HEADER.apart]
    st = ModelState(monitor, dict(head[HEADER.offsets]), partition, head[HEADER.embedding_dim])
    st.blobs = {name: (gen, digests[name]) for name, gen in refs.items()}
    st.generation = max(refs.values(), default=0)
    st.last = {name: d for name, d in digests.items() if name not in refs}
    return st


def inline_state(data: bytes, model_id: str, blobs: Mapping[bytes, bytes]) -> bytes:
    """A state record with the fields it stores apart put back in (from ``blobs``, the
    state topic's latest value per key): what :func:`decode_state` reads."""
    head, snap = _split(data)
    refs: dict[str, int] = head[HEADER.apart]
    if not refs:
        return data
    fields = state.decode(snap)
    for name, gen in refs.items():
        if name in fields:
            continue
        extra = blobs.get(blob_key(model_id, name, gen))
        if extra is None:
            raise StateError(f"the state of {model_id} needs {name!r} generation {gen}, "
                             "which the state topic does not hold")
        fields.update(state.decode(extra))
    raw = orjson.dumps(head)
    return _PREFIX.pack(STATE_VERSION, len(raw)) + raw + state.encode(fields)


def checkpoint_records(st: ModelState, model_id: str, apart_bytes: int = APART_BYTES
                       ) -> list[tuple[bytes, bytes | None]]:
    """The (key, value) records that bring the state topic up to the model's state, in
    the order they must be written to its partition: fields newly stored apart, the
    state record (keyed by the model id), then tombstones of the fields it no longer
    refers to. Updates ``st``'s generations.

    A big field goes apart once it came out the same at two checkpoints in a row (a
    reference, from the end of a warm-up to the next deploy); while it changes (a warm-up
    buffer filling) it stays in the state record."""
    fields = st.monitor.snapshot_fields()
    new: list[tuple[bytes, bytes | None]] = []
    gone: list[tuple[bytes, bytes | None]] = []
    refs: dict[str, int] = {}
    changing: dict[str, bytes] = {}
    for name, v in fields.items():
        if not isinstance(v, np.ndarray) or v.nbytes < apart_bytes:
            continue
        digest = _digest(v)
        had = st.blobs.get(name)
        if had is not None and had[1] == digest:
            refs[name] = had[0]
        elif had is None and st.last.get(name) == digest:  # as at the last checkpoint
            st.generation += 1
            new.append((blob_key(model_id, name, st.generation), state.encode({name: v})))
            st.blobs[name] = (st.generation, digest)
            refs[name] = st.generation
        else:  # new or changed: in the state record
            changing[name] = digest
    # Fields stored apart that changed, shrank or went: in the state record (or nowhere)
    # from now on.
    for name in [n for n in st.blobs if n not in refs]:
        gone.append((blob_key(model_id, name, st.blobs.pop(name)[0]), None))
    st.last = changing
    inline = {n: v for n, v in fields.items() if n not in refs}
    return [*new, (model_id.encode(), _record(st, refs, inline)), *gone]


def tombstones(st: ModelState, model_id: str) -> list[tuple[bytes, bytes | None]]:
    """The records that delete a model's state: its fields stored apart, then the state."""
    return [*[(blob_key(model_id, name, gen), None) for name, (gen, _) in st.blobs.items()],
            (model_id.encode(), None)]


class StateStore(Protocol):
    """Where :class:`LatestStates` keeps each model's latest record: a dict, or
    :class:`driftline.streams.monitor.spill.StateSpill` on disk."""

    def __setitem__(self, model_id: str, row: tuple[int, bytes]) -> None: ...
    def __getitem__(self, model_id: str) -> tuple[int, bytes]: ...
    def pop(self, model_id: str, default: None = None) -> tuple[int, bytes] | None: ...
    def __contains__(self, model_id: str) -> bool: ...
    def items(self) -> Iterable[tuple[str, tuple[int, bytes]]]: ...


class _DictStore(dict[str, tuple[int, bytes]]):
    """The in-memory :class:`StateStore` (a dict whose ``pop`` has the protocol's
    signature)."""

    def pop(self, model_id: str, default: None = None) -> tuple[int, bytes] | None:  # type: ignore[override]
        return super().pop(model_id, default)


class LatestStates:
    """Reads the state topic's records in log order, keeping only the latest per key (a
    topic not compacted yet holds every checkpoint); :meth:`result` puts each model's
    latest state together."""

    def __init__(self, states: StateStore | None = None) -> None:
        # Latest state record per model: a dict, or a store on disk for a topic too big
        # to hold in memory (see :meth:`settle`).
        self.states: StateStore = _DictStore() if states is None else states
        self.blobs: dict[bytes, bytes] = {}
        self._apart: set[str] = set()  # models whose latest state refers to blobs
        self._seeds: set[str] = set()  # models whose latest state is a seed

    @classmethod
    def of(cls, records: Iterable[tuple[bytes | None, bytes | None, int]]
           ) -> dict[str, tuple[int, bytes]]:
        """Each model's latest state from the state topic's records ``(key, value,
        partition)`` in log order: :meth:`add` each, then :meth:`result`."""
        latest = cls()
        for key, value, partition in records:
            latest.add(key, value, partition)
        return latest.result()

    def add(self, key: bytes | None, value: bytes | None, partition: int) -> None:
        if key is None:
            return
        if is_blob_key(key):
            if value is None:
                self.blobs.pop(key, None)
            else:
                self.blobs[key] = value
            return
        model_id = key.decode()
        if value is None:  # a tombstone: the model's state was deleted
            self.states.pop(model_id, None)
            self._apart.discard(model_id)
            self._seeds.discard(model_id)
            return
        head = _split(value)[0]
        if head.get(SEED):  # (is_seed, without splitting twice)
            if model_id in self.states and model_id not in self._seeds:
                return  # a worker's state, newer than any seed (read from another partition)
            self._seeds.add(model_id)
        else:
            self._seeds.discard(model_id)
        self.states[model_id] = (partition, value)
        if head[HEADER.apart]:
            self._apart.add(model_id)
        else:
            self._apart.discard(model_id)

    def result(self) -> dict[str, tuple[int, bytes]]:
        """Each model's latest state, self-contained, and its partition. A state that
        cannot be put together raises :class:`StateError`: starting that model afresh
        would let its next checkpoint overwrite the state with a new baseline."""
        return {model_id: (partition, inline_state(value, model_id, self.blobs))
                for model_id, (partition, value) in self.states.items()}

    def settle(self) -> None:
        """Make every state self-contained where it is (the fields it stores apart put
        back in), for a ``states`` store too big to copy into :meth:`result`'s dict; the
        same :class:`StateError` when a state cannot be put together."""
        for model_id in sorted(self._apart):
            partition, value = self.states[model_id]
            self.states[model_id] = (partition, inline_state(value, model_id, self.blobs))
        self._apart.clear()
