"""Test helpers over monitor state: a model's state as one self-contained record (the
state topic's records put back together are ``state_codec.LatestStates.of``)."""

from __future__ import annotations

from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.state_codec import encode_state


def state_of(proc: MonitorProcessor, model_id: str) -> bytes:
    """The model's state as one self-contained record; it covers every record admitted
    so far (flush the processor first)."""
    if proc._pending.get(model_id):
        raise RuntimeError("state_of() with interactions pending: flush() first")
    return encode_state(proc.models[model_id])
