"""Write ``monitor-state-v2.json``: the state-topic records (base64 key and value, in log
order) of one model as the build before named state headers wrote them (version-2 records:
header keys ``o``/``d``/``b``, reference arrays stored apart), for
``tests/streams/monitor/test_state_codec.py``. Made at commit 32b7602 with::

    git worktree add --detach /tmp/v2tree 32b7602
    cd /tmp/v2tree && make .venv/.installed && .venv/bin/python /path/to/make_monitor_state_v2.py

Stream: model ``old-m`` (partition 2), 300 interactions with latency, output tokens and an
8-d embedding, a label at offset 0 of the feedback topic; checkpoints after 150 and 300
interactions with ``apart_bytes=256`` (so the references went apart at the second one).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import orjson
from driftline.detectors import MonitorConfig
from driftline.streams.metrics import Metrics
from driftline.streams.monitor.processor import STATE_VERSION, MonitorProcessor, Record
from prometheus_client import CollectorRegistry

TOPICS = ("t.interactions", "t.feedback", "t.model-updates")
MODEL, PARTITION, WARMUP = "old-m", 2, 100
assert STATE_VERSION == 2


def records() -> list[Record]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(300):
        doc = {"event_id": f"{MODEL}-{i}", "model_id": MODEL, "model_version": "v1",
               "ts": 1_767_225_600.0 + i,
               "latency_ms": round(float(rng.lognormal(math.log(500.0), 0.3)), 3),
               "output_tokens": int(rng.lognormal(math.log(150), 0.5)),
               "embedding": [round(float(x), 5) for x in rng.standard_normal(8)]}
        out.append(Record(TOPICS[0], PARTITION, i, MODEL.encode(), orjson.dumps(doc)))
    label = {"event_id": f"{MODEL}-3", "model_id": MODEL, "ts": 1_767_225_700.0,
             "correct": True}
    out.insert(160, Record(TOPICS[1], PARTITION, 0, MODEL.encode(), orjson.dumps(label)))
    return out


def main() -> None:
    proc = MonitorProcessor(
        interactions_topic=TOPICS[0], feedback_topic=TOPICS[1], updates_topic=TOPICS[2],
        monitor_config=MonitorConfig(warmup=WARMUP), metrics=Metrics(CollectorRegistry()),
        clock=lambda: 1_767_300_000.0, apart_bytes=256)
    recs = records()
    topic = []
    for part in (recs[:150], recs[150:]):
        proc.process(part)
        proc.flush()
        topic += proc.state_records(MODEL)
    proc.process(recs[-1:])  # (skipped: already applied)
    doc = [[base64.b64encode(k).decode(), None if v is None else base64.b64encode(v).decode()]
           for k, v in topic]
    Path(__file__).with_name("monitor-state-v2.json").write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
