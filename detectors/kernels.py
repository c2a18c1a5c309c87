"""The compiled kernels: CUSUM banks scanned over a run of values, and the Bernoulli
run-length recursion. Each is tested against the readable definition it implements
(``detectors.cusum.reference_scan``; the recursion's own interpreted form, ``.py_func``).

numba compiles each function on first use and caches it on disk. The wrappers below take
the detectors as objects with ``s`` (statistic), ``run`` (steps since it last left zero)
and ``h`` (threshold), all integers in fixed point.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

import numba
import numpy as np

# How :func:`table_scan` finds the column of the increment table for a value.
BY_RANK = 0  # twice the mid-rank in a sorted reference of distinct values (+inf appended)
BY_RANK_TIES = 1  # the same in a reference with ties
BY_EVENT = 2  # 1 for an event (a value > 0.5), else 0


class Bank(Protocol):
    s: int
    run: int
    h: int


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True, nogil=True)(fn)


@_jit
def _scan_rows(inc: np.ndarray, state: np.ndarray) -> None:
    """Each row of ``inc`` through its detector: ``state`` holds (s, run, h, hit) per
    detector, updated in place up to the detector's first index reaching h (hit), or the
    end (hit stays -1)."""
    k, n = inc.shape
    for j in range(k):
        s = state[4 * j]
        run = state[4 * j + 1]
        h = state[4 * j + 2]
        for i in range(n):
            s += inc[j, i]
            if s > 0:
                run += 1
            else:
                s = 0
                run = 0
            if s >= h:
                state[4 * j + 3] = i
                break
        state[4 * j] = s
        state[4 * j + 1] = run


@_jit
def _table_scan_rows(x: np.ndarray, ref: np.ndarray, mode: int, table: np.ndarray,
                     state: np.ndarray, hit: np.ndarray) -> None:
    """A bank fed ``table[:, column(x_i)]`` value by value, the column found once for all
    detectors. ``state`` holds (s, run, h) per detector, updated in place up to the first
    value where one reaches h; ``hit`` then holds that value's index and the detector.
    BY_RANK columns are ``#(ref < x) + #(ref <= x)`` (binary searches like numpy's
    ``searchsorted``; ``ref`` sorted with +inf appended), BY_EVENT ``x > 0.5``."""
    n = ref.shape[0] - 1
    k = table.shape[0]
    for i in range(x.shape[0]):
        v = x[i]
        if mode == BY_EVENT:
            c = 1 if v > 0.5 else 0
        else:
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if ref[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            if mode == BY_RANK_TIES:
                r = lo
                hi = n
                while r < hi:
                    mid = (r + hi) // 2
                    if ref[mid] <= v:
                        r = mid + 1
                    else:
                        hi = mid
                c = lo + r
            else:
                c = 2 * lo + (1 if ref[lo] == v else 0)
        for j in range(k):
            s = state[3 * j] + table[j, c]
            if s > 0:
                state[3 * j + 1] += 1
            else:
                s = 0
                state[3 * j + 1] = 0
            state[3 * j] = s
        for j in range(k):
            if state[3 * j] >= state[3 * j + 2]:
                hit[0] = i
                hit[1] = j
                return


@_jit
def bernoulli_arls(a: int, p: float, h_max: int, up: bool) -> np.ndarray:
    """Exact ARL for every integer threshold 1..h_max of a Bernoulli grid CUSUM.

    ``up``: an event adds ``a``, a non-event subtracts 1; else a non-event adds 1 and an
    event subtracts ``a``. Alarm when the statistic reaches ``H``, starting at 0. Entry
    ``H-1`` is ARL(H). The chain is skip-free towards the threshold, so every ARL comes
    out of one linear recursion: ``L(s) = 1 + p L(s + step_event) + q L(s + step_non)``
    written from the top (up) or the bottom (down) with the unknown ``L(0) = c`` carried
    as ``alpha + beta * c`` and fixed by the reflecting boundary per threshold.
    """
    q = 1.0 - p
    n = h_max + 1
    out = np.full(h_max, np.inf)
    if up:
        # Index by distance m from the top (s = H-1-m); the arrays carry ``a`` leading
        # zeros (entry a + m holds L_m's terms, entry m those of L_{m-a}).
        al = np.zeros(a + n)
        be = np.zeros(a + n)
        be[a] = 1.0
        x, y = 0.0, 1.0
        for m in range(n - 1):
            x = (x - 1.0 - p * al[m]) / q
            y = (y - p * be[m]) / q
            al[a + m + 1] = x
            be[a + m + 1] = y
        for hh in range(1, h_max + 1):
            k = hh - 1
            da = al[a + k] - al[k]
            db = be[a + k] - be[k]
            if db == 0.0:
                continue
            c = (1.0 / p - da) / db
            out[hh - 1] = al[a + k] + be[a + k] * c
        return out
    al = np.zeros(n)
    be = np.zeros(n)
    be[0] = 1.0
    if n > 1:
        al[1] = -1.0 / q
        be[1] = 1.0
    for s in range(1, n - 1):
        j = s - a if s > a else 0
        al[s + 1] = (al[s] - 1.0 - p * al[j]) / q
        be[s + 1] = (be[s] - p * be[j]) / q
    for hh in range(1, h_max + 1):
        if be[hh] != 0.0:
            out[hh - 1] = -al[hh] / be[hh]
    return out


def scan_many(dets: Sequence[Bank], incs: list[np.ndarray] | np.ndarray
              ) -> list[tuple[int, int, int]]:
    """Each detector's (first index reaching h or -1, s, run) over its row of integer
    increments (a (k, n) array or k arrays); the detectors are not changed."""
    if not dets:
        return []
    if isinstance(incs, np.ndarray):
        if incs.dtype.kind not in "iu":
            raise TypeError(f"CUSUM increments must be integers, not {incs.dtype}")
        inc = np.ascontiguousarray(incs, dtype=np.int64)
    else:
        inc = np.empty((len(incs), incs[0].shape[0]), dtype=np.int64)
        for j, row in enumerate(incs):
            if row.dtype.kind not in "iu":
                raise TypeError(f"CUSUM increments must be integers, not {row.dtype}")
            inc[j] = row
    state = np.array([x for d in dets for x in (d.s, d.run, d.h, -1)], dtype=np.int64)
    _scan_rows(inc, state)
    out = state.tolist()
    return list(zip(out[3::4], out[0::4], out[1::4], strict=True))


_NO_REF = np.full(1, np.inf)


def table_scan(dets: Sequence[Bank], x: np.ndarray, table: np.ndarray, mode: int,
               ref: np.ndarray = _NO_REF) -> list[tuple[int, int, int]]:
    """:func:`scan_many` of the increments ``table[:, column(x)]`` in one pass, up to the
    bank's first alarm: only that detector's entry carries the index (the others' are -1,
    with their statistic at that value). A signal re-baselines on the first alarm, so the
    later ones :func:`scan_many` would find are never read."""
    if table.dtype != np.int64 or not table.flags.c_contiguous:
        raise TypeError("a CUSUM increment table must be C-contiguous int64")
    state = np.array([v for d in dets for v in (d.s, d.run, d.h)], dtype=np.int64)
    hit = np.array([-1, -1], dtype=np.int64)
    _table_scan_rows(np.ascontiguousarray(x, dtype=np.float64), ref, mode, table, state, hit)
    out = state.tolist()
    at, first = hit.tolist()
    return [(at if j == first else -1, out[3 * j], out[3 * j + 1]) for j in range(len(dets))]


@cache
def compile_all() -> None:
    """Compile (or load from numba's cache) every kernel now, not at the first threshold a
    monitor needs or in its first run."""

    class _D:
        s, run, h = 0, 0, 1

    bernoulli_arls(1, 0.5, 4, True)
    scan_many([_D()], np.zeros((1, 1), dtype=np.int64))
    table_scan([_D()], np.zeros(1), np.zeros((1, 2), dtype=np.int64), BY_RANK,
               np.array([0.0, np.inf]))
