"""Print driftline's drift events as they come (DRIFTLINE_KAFKA_BOOTSTRAP)."""

import asyncio
import os

from driftline.streams.client import Subscriber

BOOTSTRAP = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PREFIX = os.environ.get("DRIFTLINE_TOPIC_PREFIX", "driftline")
LIMIT = int(os.environ.get("EXAMPLE_MAX_EVENTS", "0"))  # 0: run until interrupted


async def main() -> None:
    seen = 0
    async with Subscriber(BOOTSTRAP, topic_prefix=PREFIX, group_id="drift-printer") as sub:
        async for event in sub:
            print(f"{event.detected_at:%H:%M:%S} {event.model_id} {event.model_version}: "
                  f"{event.kind}/{event.signal} {event.baseline:.1f} -> {event.current:.1f} "
                  f"(severity {event.severity:.2f}, drift_id {event.drift_id})", flush=True)
            seen += 1
            if seen == LIMIT:
                break


if __name__ == "__main__":
    asyncio.run(main())
