"""Dead letters: a refused record as it was (key and value) with headers that say why and
where it came from, modelled on Kafka Connect's ``__connect.errors.*``.

Every stage that refuses a record (the monitor, the logger, the retrain agent) writes it
with :func:`dead_letter_record`, so a dead letter reads the same whoever refused it.
"""

from __future__ import annotations

from driftline.streams.ingest.records import Reject

H_REASON = "driftline.error.reason"
H_MESSAGE = "driftline.error.message"
H_TOPIC = "driftline.source.topic"
H_PARTITION = "driftline.source.partition"
H_OFFSET = "driftline.source.offset"
H_TRUNCATED = "driftline.error.truncated"
# A record as big as the broker takes (message.max.bytes, 1 MiB by default) no longer fits
# with the headers, and a dead letter the broker refuses would fail every checkpoint: past
# this size a dead letter keeps the first bytes, and H_TRUNCATED names the original size
# (the whole record stays at its source offset for the topic's retention).
DEAD_LETTER_MAX_BYTES = 1_000_000
MESSAGE_MAX_BYTES = 1000

Headers = list[tuple[str, bytes]]


def dead_letter_headers(rej: Reject) -> Headers:
    message = rej.message.encode()
    if len(message) > MESSAGE_MAX_BYTES:  # cut without splitting a UTF-8 sequence
        message = message[:MESSAGE_MAX_BYTES].decode(errors="ignore").encode()
    return [
        (H_REASON, rej.reason.encode()),
        (H_MESSAGE, message),
        (H_TOPIC, rej.record.topic.encode()),
        (H_PARTITION, str(rej.record.partition).encode()),
        (H_OFFSET, str(rej.record.offset).encode()),
    ]


def dead_letter_record(rej: Reject) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead letter of a reject: key, value (cut to fit if need be) and headers."""
    rec = rej.record
    key, value = rec.key, rec.value
    headers = dead_letter_headers(rej)
    size = len(key or b"") + len(value or b"")
    if size > DEAD_LETTER_MAX_BYTES:
        headers.append((H_TRUNCATED, str(size).encode()))
        room = DEAD_LETTER_MAX_BYTES - sum(len(k) + len(v) for k, v in headers)
        if key is not None and len(key) > room // 2:
            key = key[:room // 2]
        if value is not None:
            value = value[:room - len(key or b"")]
    return key, value, headers
