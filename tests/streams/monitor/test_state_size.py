"""The documented state sizes, measured: a model with 384-d embeddings holds ~80 KB of
monitor state while monitoring (embedding 34 KB, latency and output length 21 KB each: a
reference sample, its seasonal bins, the dependence history), under 1 MB during its
warm-up, and once its references settle a checkpoint writes ~11 KB of it (the references
went to records of their own)."""

from __future__ import annotations

import numpy as np
import orjson
from driftline.detectors import MonitorConfig, state
from driftline.streams.ingest.records import Record
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import MonitorProcessor
from driftline.streams.monitor.state_codec import APART_BYTES
from prometheus_client import CollectorRegistry

BATCH = 500  # interactions between two checkpoints


def _batches(n: int, seed: int = 3) -> list[list[Record]]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, 384)).astype(np.float32)
    out = []
    for a in range(0, n, BATCH):
        batch = []
        for i in range(a, a + BATCH):
            vec = centers[i % 16] + 0.3 * rng.standard_normal(384).astype(np.float32)
            doc = {"event_id": f"e{i}", "model_id": "m", "ts": 1.0 + i,
                   "latency_ms": float(rng.lognormal(6.0, 0.3)),
                   "output_tokens": int(rng.lognormal(5.0, 0.5)),
                   "refusal": bool(rng.random() < 0.05), "correct": bool(rng.random() < 0.9),
                   "embedding": vec.tolist()}
            batch.append(Record("t.i", 0, i, b"m", orjson.dumps(doc)))
        out.append(batch)
    return out


def test_state_sizes_with_384d_embeddings_at_the_default_warmup() -> None:
    config = MonitorConfig()  # warm-up 2,000: embeddings 1,000 for k-means + 2,000 held out
    proc = MonitorProcessor(interactions_topic="t.i", feedback_topic="t.f",
                            updates_topic="t.u", monitor_config=config,
                            metrics=Metrics(CollectorRegistry()), clock=lambda: 0.0,
                            apart_bytes=APART_BYTES)
    warming: list[int] = []  # the state record at each checkpoint of the warm-up
    settled: list[int] = []  # bytes written per checkpoint once every signal monitors
    for batch in _batches(6000):
        proc.process(batch)
        proc.flush()
        written = proc.state_records("m")  # one checkpoint: what goes to the state topic
        monitor = proc.models["m"].monitor
        if any(s.phase == "warmup" for n, s in monitor.stats().items()
               if n in ("latency", "output_length", "embedding")):
            warming.append(len(dict(written)[b"m"]))
        else:
            settled.append(sum(len(v or b"") + len(k) for k, v in written))
    assert len(warming) == 5 and len(settled) == 7
    # Warm-up: at most the k-means buffer (1,000 float16 vectors) and the raw references.
    assert max(warming) < 1_000_000
    # Monitoring: the whole snapshot, and each signal's part of it.
    fields = monitor.snapshot_fields()
    assert 79_000 <= len(state.encode(fields)) < 81_000  # "80 KB"

    def kb(signal: str) -> int:
        own = {k: v for k, v in fields.items() if k.startswith(signal + ".")}
        return round(len(state.encode(own)) / 1000)

    assert (kb("embedding"), kb("latency"), kb("output_length")) == (34, 21, 21)
    # Settled: the references are stored apart, each checkpoint writes the rest.
    assert min(settled[:2]) > 16_000  # the first two after the warm-up move references apart
    assert all(10_000 <= b <= 11_500 for b in settled[2:]), settled  # "~11 KB"
