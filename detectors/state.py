"""Compact, versioned, pickle-free bytes for monitor state.

Layout (all little-endian)::

    b"DLMS"  u8 version (=1)  u32 field count
    field*:  u8 name length, name (ASCII), u8 type, payload
      type 0 none    : -
      type 1 int     : i64
      type 2 float   : f64
      type 3 str     : u32 length, UTF-8
      type 4 ndarray : u8 dtype (1=f64, 2=f32, 3=i64, 4=f16, 5=u8 bytes), u8 ndim, u32 * ndim shape,
                       raw C-order data

Fields form a flat namespace (``"latency.ref"``, ``"latency.det.0.s"``...). The
bytes come back from a Kafka changelog, so nothing here executes or imports
anything named by the data.
"""

from __future__ import annotations

import struct
from typing import Union

import numpy as np

MAGIC = b"DLMS"
VERSION = 1

Value = Union[None, int, float, str, np.ndarray]  # noqa: UP007 - runtime alias
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f8"), 2: np.dtype("<f4"), 3: np.dtype("<i8"), 4: np.dtype("<f2"),
    5: np.dtype("u1")}
_CODES = {v: k for k, v in _DTYPES.items()}


_INT = struct.Struct("<Bq").pack
_FLOAT = struct.Struct("<Bd").pack
_KEYS: dict[str, bytes] = {}  # field name -> its length-prefixed ASCII (names repeat)


def _key(name: str) -> bytes:
    key = _KEYS.get(name)
    if key is None:
        raw = name.encode("ascii")
        key = struct.pack("<B", len(raw)) + raw
        if len(_KEYS) < 100_000:
            _KEYS[name] = key
    return key


def encode(fields: dict[str, Value]) -> bytes:
    """Serialise a flat dict of scalars, strings and arrays."""
    out = [MAGIC, struct.pack("<BI", VERSION, len(fields))]
    for name, v in fields.items():
        out.append(_key(name))
        t = type(v)
        if t is int:  # the common cases first, by exact type
            out.append(_INT(1, v))
        elif t is float:
            out.append(_FLOAT(2, v))
        elif v is None:
            out.append(b"\x00")
        elif isinstance(v, bool | int | np.integer):
            out.append(_INT(1, int(v)))  # type: ignore[arg-type]
        elif isinstance(v, float | np.floating):
            out.append(_FLOAT(2, float(v)))
        elif isinstance(v, str):
            raw = v.encode()
            out.append(struct.pack("<BI", 3, len(raw)) + raw)
        elif isinstance(v, np.ndarray):
            arr = np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("<"))
            code = _CODES.get(arr.dtype)
            if code is None:
                raise TypeError(f"state field {name}: unsupported dtype {v.dtype}")
            out.append(struct.pack(f"<BBB{arr.ndim}I", 4, code, arr.ndim, *arr.shape))
            out.append(arr.tobytes())
        else:
            raise TypeError(f"state field {name}: unsupported type {type(v).__name__}")
    return b"".join(out)


def decode(data: bytes) -> dict[str, Value]:
    """Parse bytes written by :func:`encode`; reject other formats and versions."""
    if len(data) < 9 or data[:4] != MAGIC:
        raise ValueError("not a driftline monitor snapshot (bad magic)")
    version, count = struct.unpack_from("<BI", data, 4)
    if version != VERSION:
        raise ValueError(f"unsupported monitor snapshot version {version} "
                         f"(this build reads version {VERSION})")
    pos = 9
    fields: dict[str, Value] = {}
    try:
        for _ in range(count):
            (klen,) = struct.unpack_from("<B", data, pos)
            name = data[pos + 1: pos + 1 + klen].decode("ascii")
            pos += 1 + klen
            (kind,) = struct.unpack_from("<B", data, pos)
            pos += 1
            if kind == 0:
                fields[name] = None
            elif kind == 1:
                fields[name] = struct.unpack_from("<q", data, pos)[0]
                pos += 8
            elif kind == 2:
                fields[name] = struct.unpack_from("<d", data, pos)[0]
                pos += 8
            elif kind == 3:
                (n,) = struct.unpack_from("<I", data, pos)
                fields[name] = data[pos + 4: pos + 4 + n].decode()
                pos += 4 + n
            elif kind == 4:
                code, ndim = struct.unpack_from("<BB", data, pos)
                shape = struct.unpack_from(f"<{ndim}I", data, pos + 2)
                pos += 2 + 4 * ndim
                dt = _DTYPES[code]
                nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
                if pos + nbytes > len(data):
                    raise ValueError("truncated array")
                fields[name] = np.frombuffer(data, dt, int(np.prod(shape)), pos).reshape(
                    shape).copy()
                pos += nbytes
            else:
                raise ValueError(f"unknown field type {kind}")
    except (struct.error, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt monitor snapshot: {exc}") from None
    if pos != len(data):
        raise ValueError("corrupt monitor snapshot: trailing bytes")
    return fields


class Reader:
    """Typed access to decoded fields under a prefix."""

    def __init__(self, fields: dict[str, Value], prefix: str = "") -> None:
        self._f = fields
        self._p = prefix

    def sub(self, prefix: str) -> Reader:
        return Reader(self._f, self._p + prefix + ".")

    def has(self, name: str) -> bool:
        return self._p + name in self._f

    def _get(self, name: str) -> Value:
        try:
            return self._f[self._p + name]
        except KeyError:
            raise ValueError(f"monitor snapshot lacks field {self._p + name}") from None

    def integer(self, name: str) -> int:
        v = self._get(name)
        if not isinstance(v, int):
            raise ValueError(f"snapshot field {self._p + name} is not an int")
        return v

    def real(self, name: str) -> float:
        v = self._get(name)
        if not isinstance(v, float):
            raise ValueError(f"snapshot field {self._p + name} is not a float")
        return v

    def text(self, name: str) -> str | None:
        v = self._get(name)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"snapshot field {self._p + name} is not a string")
        return v

    def array(self, name: str) -> np.ndarray:
        v = self._get(name)
        if not isinstance(v, np.ndarray):
            raise ValueError(f"snapshot field {self._p + name} is not an array")
        return v
