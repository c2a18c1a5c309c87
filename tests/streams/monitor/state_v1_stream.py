"""The seeded input of the checked-in version-1 state record (``tests/data/``): plain
records of the three input topics, built with numpy and orjson only, so that the build
that wrote the record (before state version 2) and this one read the same bytes."""

from __future__ import annotations

import math

import numpy as np
import orjson

MODEL = "m1"
TOPICS = ("t.interactions", "t.feedback", "t.model-updates")
CUT = 400  # the v1 record holds the state after the first CUT interactions
TOTAL = 800
SHIFT_AT = 500  # latency doubles from this interaction on
WARMUP = 100


def records() -> list[tuple[str, int, bytes, bytes]]:
    """(topic, offset, key, value) for TOTAL interactions with every signal and a 16-d
    embedding, a delayed label for every fifth one (on the feedback topic), in order."""
    rng = np.random.default_rng(2024)
    out: list[tuple[str, int, bytes, bytes]] = []
    offsets = dict.fromkeys(TOPICS[:2], 0)
    centers = rng.standard_normal((4, 16))
    key = MODEL.encode()

    def add(topic: str, doc: dict[str, object]) -> None:
        out.append((topic, offsets[topic], key, orjson.dumps(doc)))
        offsets[topic] += 1

    for i in range(TOTAL):
        factor = 2.0 if i >= SHIFT_AT else 1.0
        emb = centers[i % 4] + 0.3 * rng.standard_normal(16)
        add(TOPICS[0], {
            "event_id": f"{MODEL}-{i}", "model_id": MODEL, "model_version": "v1",
            "ts": 1_767_225_600 + i,
            "latency_ms": round(float(rng.lognormal(math.log(400.0 * factor), 0.3)), 3),
            "output_tokens": int(rng.lognormal(math.log(150), 0.5)),
            "refusal": bool(rng.random() < 0.05), "feedback": int(rng.choice([-1, 0, 1])),
            "correct": bool(rng.random() < 0.9),
            "embedding": [round(float(x), 5) for x in emb]})
        if i % 5 == 4:
            add(TOPICS[1], {"event_id": f"{MODEL}-{i - 4}", "model_id": MODEL,
                            "ts": 1_767_225_600 + i, "correct": bool(rng.random() < 0.9)})
    return out


def split() -> tuple[list[tuple[str, int, bytes, bytes]], list[tuple[str, int, bytes, bytes]]]:
    """The records before the cut (up to and with interaction CUT - 1 and its labels) and
    after it."""
    recs = records()
    at = next(k for k, r in enumerate(recs)
              if r[0] == TOPICS[0] and orjson.loads(r[3])["event_id"] == f"{MODEL}-{CUT}")
    return recs[:at], recs[at:]
