"""The README's client examples are the files in examples/, and they work: the publisher's
interactions become a drift event that the subscriber prints (real broker, real worker)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_kafka import wait_for

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"Publish interactions from your application": "examples/publish.py",
            "Subscribe to drift events": "examples/subscribe.py"}


def _code_of(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert len(blocks) == 1, section
    return blocks[0]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_readme_code_blocks_are_the_example_files(section: str) -> None:
    assert _code_of(section) == (ROOT / SECTIONS[section]).read_text()


@pytest.mark.kafka
def test_publish_example_drifts_and_the_subscribe_example_prints_it(
        run_worker, kafka_bootstrap, topic_prefix, tmp_path):
    env = {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "DRIFTLINE_TOPIC_PREFIX": topic_prefix, "EXAMPLE_MAX_EVENTS": "1"}
    worker = run_worker({"DRIFTLINE_WARMUP": "500", "DRIFTLINE_LOG_SAMPLE_RATE": "0"})
    out = tmp_path / "subscriber.out"
    with open(out, "wb") as fh:
        sub = subprocess.Popen([sys.executable, str(ROOT / "examples/subscribe.py")],
                               env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        pub = subprocess.run([sys.executable, str(ROOT / "examples/publish.py")], env=env,
                             capture_output=True, text=True, timeout=180, check=False)
        assert pub.returncode == 0, pub.stderr[-3000:]
        assert "refused before sending: bad_model_id" in pub.stdout
        assert "published 3000 interactions" in pub.stdout
        wait_for(lambda: sub.poll() is not None, 120, "the subscriber's first drift event",
                 worker)
        assert sub.returncode == 0, out.read_text()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(10)
    line = out.read_text().strip().splitlines()[-1]
    assert re.search(r" support-bot v1: behavior/latency \d+\.\d -> \d+\.\d \(severity", line), \
        line
    assert worker.health()["interactions_processed"] == 3000
