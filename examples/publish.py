"""Publish interactions, a label and a deploy to driftline (DRIFTLINE_KAFKA_BOOTSTRAP)."""

import asyncio
import os
import random
import time
import uuid

from driftline.streams.client import InvalidEvent, Publisher

BOOTSTRAP = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PREFIX = os.environ.get("DRIFTLINE_TOPIC_PREFIX", "driftline")


async def main() -> None:
    rng = random.Random(7)
    async with Publisher(BOOTSTRAP, topic_prefix=PREFIX, compression_type="zstd") as pub:
        await pub.deployed("support-bot", "v1", ts=time.time())
        for i in range(3000):
            slow = i >= 2000  # the model gets slower: a latency drift
            event_id = str(uuid.uuid4())
            await pub.interaction({
                "event_id": event_id, "model_id": "support-bot", "model_version": "v1",
                "ts": time.time(), "latency_ms": rng.lognormvariate(6.2 + slow, 0.3),
                "output_tokens": rng.randint(50, 400), "refusal": rng.random() < 0.02,
                "metadata": {"region": "eu-west-1"}})
            if i % 100 == 0:
                await pub.feedback({"event_id": event_id, "model_id": "support-bot",
                                    "ts": time.time(), "feedback": 1})
        try:
            await pub.interaction({"event_id": "x", "model_id": "support bot", "ts": 0})
        except InvalidEvent as exc:
            print(f"refused before sending: {exc.reason}: {exc.message}")
    print("published 3000 interactions")


if __name__ == "__main__":
    asyncio.run(main())
