"""Realistic interactions with known, injected drift — to Kafka or to JSONL files.

Every model has a profile (lognormal latency, skewed output lengths, rare refusals,
a base accuracy with labels inline or delayed, thumbs feedback, 384-d embeddings
from a topic mixture). Drifts are scheduled at a model's n-th interaction, abrupt or
ramped, and written as ground truth so detections can be scored.
"""

from __future__ import annotations

import asyncio
import base64
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

_NS = uuid.UUID("0b8f9c1e-5a3d-4c55-8f0e-2d7c9a6b1e42")
SIGNALS = {"latency": "behavior", "output_tokens": "behavior", "refusal": "behavior",
           "feedback": "behavior", "correct": "accuracy", "embedding": "embedding"}


@dataclass(frozen=True)
class ModelProfile:
    """How one model behaves before any drift."""

    model_id: str
    model_version: str = "v1"
    latency_median_ms: float = 800.0
    latency_sigma: float = 0.35  # of log latency
    tokens_median: float = 180.0
    tokens_sigma: float = 0.6
    refusal_rate: float = 0.02
    accuracy: float = 0.9
    label_inline_rate: float = 0.5  # share of interactions with `correct` inline
    label_delayed_rate: float = 0.3  # share labelled later via driftline.feedback
    label_delay: int = 200  # delayed labels arrive this many interactions later
    feedback_rate: float = 0.2
    embedding_dim: int = 384
    n_topics: int = 8


@dataclass(frozen=True)
class Drift:
    """A change injected into one model's stream from its ``start``-th interaction on.

    ``magnitude`` by signal: latency / output_tokens — factor on the median;
    refusal — new refusal rate; correct — new accuracy; embedding — share of traffic
    going to a topic never seen in the reference. ``ramp`` > 0 makes it gradual.
    """

    model_id: str
    signal: str
    start: int
    magnitude: float
    ramp: int = 0

    @property
    def kind(self) -> str:
        return SIGNALS[self.signal]

    def weight(self, i: int) -> float:
        if i < self.start:
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min(1.0, (i - self.start + 1) / self.ramp)


@dataclass
class Scenario:
    models: list[ModelProfile]
    events_per_model: int
    drifts: list[Drift] = field(default_factory=list)
    seed: int = 7
    start_ts: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    rate: float = 200.0  # interactions per second of simulated time, all models
    embedding_format: str = "json"  # or "b64"

    def truth(self) -> list[dict[str, Any]]:
        return [{**asdict(d), "kind": d.kind,
                 "start_event_id": event_id(self.seed, d.model_id, d.start)}
                for d in self.drifts]


def event_id(seed: int, model_id: str, index: int) -> str:
    return str(uuid.uuid5(_NS, f"{seed}/{model_id}/{index}"))


def demo_scenario(events_per_model: int = 4000, seed: int = 7) -> Scenario:
    """The demo's default: one drift of each kind, and one model that stays stable.

    The drifts start at 60% of the stream: after the warm-up (which must end before it,
    the embedding reference needs 1.5x ``DRIFTLINE_WARMUP``) and with room to detect.
    """
    start = int(events_per_model * 0.6)
    models = [
        ModelProfile("support-bot"),
        ModelProfile("search-ranker", refusal_rate=0.01),
        ModelProfile("qa-assistant", accuracy=0.92, label_inline_rate=0.6),
        ModelProfile("stable-model"),
    ]
    drifts = [
        Drift("support-bot", "latency", start, 1.5),
        Drift("search-ranker", "embedding", start, 0.3),
        Drift("qa-assistant", "correct", start, 0.7),
    ]
    return Scenario(models, events_per_model, drifts, seed=seed)


@dataclass(slots=True)
class Message:
    topic: str  # "interactions" | "feedback"
    key: bytes
    value: bytes
    model_id: str
    index: int


class _ModelStream:
    def __init__(self, profile: ModelProfile, drifts: list[Drift], rng: np.random.Generator):
        self.p = profile
        self.drifts = {d.signal: d for d in drifts}
        self.rng = rng
        d = profile.embedding_dim
        # Topic centres in the embedding space; the extra one is never in the reference.
        centres = rng.standard_normal((profile.n_topics + 1, d)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        w = rng.dirichlet(np.full(profile.n_topics, 2.0))
        self.topic_weights = w
        self.noise = 0.9 / math.sqrt(d)
        self.delayed: list[tuple[int, str, bool]] = []

    def _w(self, signal: str, i: int) -> float:
        d = self.drifts.get(signal)
        return d.weight(i) if d else 0.0

    def interaction(self, i: int, ts: float, seed: int, b64: bool) -> dict[str, Any]:
        p, rng = self.p, self.rng
        doc: dict[str, Any] = {"event_id": event_id(seed, p.model_id, i),
                               "model_id": p.model_id, "model_version": p.model_version,
                               "ts": round(ts, 3)}
        w = self._w("latency", i)
        med = p.latency_median_ms * (self.drifts["latency"].magnitude ** w if w else 1.0)
        doc["latency_ms"] = round(float(rng.lognormal(math.log(med), p.latency_sigma)), 2)
        w = self._w("output_tokens", i)
        med = p.tokens_median * (self.drifts["output_tokens"].magnitude ** w if w else 1.0)
        doc["input_tokens"] = int(rng.lognormal(math.log(400), 0.8))
        refusal_rate = p.refusal_rate
        if (w := self._w("refusal", i)) > 0:
            refusal_rate += w * (self.drifts["refusal"].magnitude - p.refusal_rate)
        refusal = bool(rng.random() < refusal_rate)
        doc["refusal"] = refusal
        doc["output_tokens"] = (int(rng.integers(5, 30)) if refusal
                                else max(1, int(rng.lognormal(math.log(med), p.tokens_sigma))))
        acc = p.accuracy
        if (w := self._w("correct", i)) > 0:
            acc += w * (self.drifts["correct"].magnitude - p.accuracy)
        correct = bool(rng.random() < acc)
        u = rng.random()
        if u < p.label_inline_rate:
            doc["correct"] = correct
        elif u < p.label_inline_rate + p.label_delayed_rate:
            self.delayed.append((i + p.label_delay, doc["event_id"], correct))
        if rng.random() < p.feedback_rate:
            doc["feedback"] = 1 if (correct and rng.random() < 0.8) else (
                -1 if not correct and rng.random() < 0.7 else 0)
        share = self._w("embedding", i) * (self.drifts["embedding"].magnitude
                                           if "embedding" in self.drifts else 0.0)
        topic = (p.n_topics if rng.random() < share
                 else int(rng.choice(p.n_topics, p=self.topic_weights)))
        vec = self.centres[topic] + self.noise * rng.standard_normal(p.embedding_dim).astype(
            np.float32)
        vec /= np.linalg.norm(vec)
        if b64:
            doc["embedding_b64"] = base64.b64encode(vec.astype("<f4").tobytes()).decode()
        else:
            doc["embedding"] = vec
        doc["metadata"] = {"route": "chat" if topic % 2 else "search"}
        return doc

    def due_labels(self, i: int) -> list[tuple[str, bool]]:
        out = [(eid, c) for (at, eid, c) in self.delayed if at <= i]
        if out:
            self.delayed = [x for x in self.delayed if x[0] > i]
        return out


def generate(scenario: Scenario, clock: Callable[[], float] | None = None) -> Iterator[Message]:
    """All messages of the scenario in stream order (models interleaved, seeded)."""
    rng = np.random.default_rng(scenario.seed)
    streams = []
    for k, prof in enumerate(scenario.models):
        drifts = [d for d in scenario.drifts if d.model_id == prof.model_id]
        streams.append(_ModelStream(prof, drifts, np.random.default_rng([scenario.seed, k])))
    b64 = scenario.embedding_format == "b64"
    opts = orjson.OPT_SERIALIZE_NUMPY
    seq = 0
    for i in range(scenario.events_per_model):
        for k in rng.permutation(len(streams)):
            ms = streams[k]
            ts = clock() if clock else scenario.start_ts + seq / scenario.rate
            seq += 1
            mid = ms.p.model_id
            key = mid.encode()
            yield Message("interactions", key,
                          orjson.dumps(ms.interaction(i, ts, scenario.seed, b64), option=opts),
                          mid, i)
            for eid, correct in ms.due_labels(i):
                fb = {"event_id": eid, "model_id": mid, "ts": round(ts, 3), "correct": correct}
                yield Message("feedback", key, orjson.dumps(fb), mid, i)


class Progress:
    """A single updating progress line on stderr."""

    def __init__(self, total: int, label: str, stream: Any = None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self._first: int | None = None  # rate counts from the first update's value
        self._last = 0.0

        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        # On a terminal the line redraws 4x a second; in a log, a line every 5 seconds.
        if not force and now - self._last < (0.25 if self.tty else 5.0):
            return
        self._last = now
        if self._first is None:
            self._first, self.t0 = done, now
        rate = (done - self._first) / max(now - self.t0, 1e-9)
        if self.total:  # a total of 0 means unknown
            pct = 100.0 * done / self.total
            line = f"{self.label}: {done:,}/{self.total:,} ({pct:5.1f}%) {rate:,.0f}/s {extra}"
        else:
            line = f"{self.label}: {done:,} {extra} {rate:,.0f}/s"
        self.stream.write(f"\r{line}\033[K" if self.tty else line.rstrip() + "\n")
        self.stream.flush()

    def done(self, done: int, extra: str = "") -> None:
        self.update(done, extra, force=True)
        if self.tty:
            self.stream.write("\n")


def to_files(scenario: Scenario, out_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Write interactions.jsonl, feedback.jsonl and truth.json under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"interactions": out_dir / "interactions.jsonl",
             "feedback": out_dir / "feedback.jsonl", "truth": out_dir / "truth.json"}
    total = scenario.events_per_model * len(scenario.models)
    bar = Progress(total, "simulate") if progress else None
    n = 0
    with open(paths["interactions"], "wb") as fi, open(paths["feedback"], "wb") as ff:
        for m in generate(scenario):
            (fi if m.topic == "interactions" else ff).write(m.value + b"\n")
            if m.topic == "interactions":
                n += 1
                if bar:
                    bar.update(n)
    if bar:
        bar.done(n)
    paths["truth"].write_bytes(orjson.dumps(scenario.truth(), option=orjson.OPT_INDENT_2))
    return paths


async def to_kafka(scenario: Scenario, bootstrap: str, topic_prefix: str = "driftline",
                   rate: float = 0.0, progress: Callable[[int], None] | None = None,
                   live_ts: bool = True) -> int:
    """Publish the scenario to Kafka (keyed by model_id); ``rate`` > 0 paces it (events/s)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10,
                                max_batch_size=512 * 1024, acks="all",
                                enable_idempotence=True)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a producer that never started still holds its client
        raise
    sent = 0
    t0 = time.monotonic()
    try:
        pending = []
        for m in generate(scenario, clock=time.time if live_ts else None):
            pending.append(await producer.send(f"{topic_prefix}.{m.topic}", m.value, key=m.key))
            if m.topic == "interactions":
                sent += 1
                if rate > 0:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # pacing, not waiting for a condition
                if progress and sent % 200 == 0:
                    progress(sent)
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    if progress:
        progress(sent)
    return sent
