"""A long benchmark's progress on stderr, so that its stdout stays the table it prints."""

from __future__ import annotations

import sys
import time


def progress(done: int, total: int, t0: float) -> None:
    """Tasks done so far and the seconds since ``t0`` (``time.perf_counter()``), on
    stderr: in place on a terminal, every tenth task and the last in a log."""
    line = f"[{done}/{total}] {time.perf_counter() - t0:5.0f} s"
    if sys.stderr.isatty():
        print(f"\r{line}", end="\n" if done == total else "", file=sys.stderr)
    elif done == total or done % max(total // 10, 1) == 0:
        print(line, file=sys.stderr)
