"""The worker process's Python runtime: how its cyclic garbage collector runs.

One home for it: the worker (``driftline worker``) and the benchmarks that measure the
monitor call :func:`tune_gc` once start-up is done.
"""

from __future__ import annotations

import gc

# Container allocations between two young-generation collections (CPython: 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Set the cyclic collector up for batch processing, once start-up is done.

    Everything alive now (modules, the app, numba's compiler) lives as long as the
    process: frozen, it stays out of the collector's full passes, which would otherwise
    walk it every time and pause the event loop for a tenth of a second or more.

    A batch keeps thousands of small containers alive until it is done (a tuple per
    record, the runs' lists). At CPython's 700 allocations per young collection each of
    them is walked several times and promoted to the older generations, whose collections
    then walk them again; at ``gen0`` most die by reference count before a collection
    sees them, and the cycles that exceptions leave behind (poison input) are still
    collected. The number is measured by ``bench/processor_speed.py --gc-gen0``.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
