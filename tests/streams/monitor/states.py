"""Test helpers over monitor state: a model's state as one self-contained record, and the
state topic's records put back together (what a restore reads)."""

from __future__ import annotations

from collections.abc import Iterable

from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.state_codec import LatestStates, encode_state


def state_of(proc: MonitorProcessor, model_id: str) -> bytes:
    """The model's state as one self-contained record; it covers every record admitted
    so far (flush the processor first)."""
    if proc._pending.get(model_id):
        raise RuntimeError("state_of() with interactions pending: flush() first")
    return encode_state(proc.models[model_id])


def latest_states(records: Iterable[tuple[bytes | None, bytes | None, int]]
                  ) -> dict[str, tuple[int, bytes]]:
    """Each model's latest state from the state topic's records ``(key, value,
    partition)`` in log order (see :class:`LatestStates`)."""
    latest = LatestStates()
    for key, value, partition in records:
        latest.add(key, value, partition)
    return latest.result()
