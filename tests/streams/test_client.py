"""The Publisher refuses what the contract refuses, before anything is sent."""

from __future__ import annotations

import math

import pytest
from driftline.streams.client import InvalidEvent, Publisher


@pytest.mark.parametrize(("send", "record", "reason"), [
    ("interaction", {"event_id": "e\x00", "model_id": "m1", "ts": 1}, "nul_character"),
    ("interaction", {"event_id": "e1", "model_id": "m1\n", "ts": 1}, "bad_model_id"),
    ("interaction", {"event_id": "e1", "model_id": "m1", "ts": 1, "latency_ms": math.nan},
     "non_finite"),  # orjson would write null
    ("interaction", {"event_id": "e1", "model_id": "m1", "ts": 1,
                     "embedding": [1.0] * 7 + [math.inf]}, "non_finite"),
    ("feedback", {"event_id": "e1", "model_id": "m1", "ts": 1}, "missing_field"),
    ("interaction", {"event_id": "e1", "model_id": "m1", "ts": 1, "embedding": [1.0] * 7},
     "bad_embedding"),
])
async def test_publisher_raises_the_contracts_reason(send: str, record: dict, reason: str
                                                     ) -> None:
    pub = Publisher("127.0.0.1:1")  # never started: nothing may reach a broker
    with pytest.raises(InvalidEvent) as info:
        await getattr(pub, send)(record)
    assert info.value.reason == reason


async def test_publisher_names_the_field_and_refuses_a_bad_deploy() -> None:
    pub = Publisher("127.0.0.1:1")
    with pytest.raises(InvalidEvent, match="latency_ms is not finite") as info:
        await pub.interaction({"event_id": "e1", "model_id": "m1", "ts": 1,
                               "latency_ms": math.inf})
    assert info.value.reason == "non_finite"
    with pytest.raises(InvalidEvent, match="U\\+0000") as info:
        await pub.deployed("m1", "v\x00", ts=1.0)
    assert info.value.reason == "nul_character"
