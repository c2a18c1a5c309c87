"""Settings: one typed object, every field read from one environment variable.

Secrets are held as ``Secret`` so that ``repr`` / logs never show them.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        # By value (so equal settings compare equal), in constant time.
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(),
                                                                 other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


def home(env: Mapping[str, str] | None = None) -> Path:
    """``DRIFTLINE_HOME`` of ``env`` (the process environment by default): the local
    broker's, the demo's and the embedded store's state. Unset or empty: ``~/.driftline``
    (an empty value means the default, as for every other variable)."""
    env = os.environ if env is None else env
    return Path(env.get("DRIFTLINE_HOME") or Path.home() / ".driftline")


@dataclass(frozen=True)
class Settings:
    """driftline configuration. Each field's ``env`` metadata names its variable."""

    kafka_bootstrap: str = field(default="127.0.0.1:9092",
                                 metadata={"env": "DRIFTLINE_KAFKA_BOOTSTRAP"})
    # Kafka security, for every client driftline opens (``driftline.streams.kafka_clients``):
    # PLAINTEXT, SSL (TLS; mTLS with a client certificate), SASL_PLAINTEXT or SASL_SSL.
    # File settings are PEM paths, empty = unset (the CA: the system's trust store).
    kafka_security_protocol: str = field(default="PLAINTEXT",
                                         metadata={"env": "DRIFTLINE_KAFKA_SECURITY_PROTOCOL"})
    kafka_sasl_mechanism: str = field(default="SCRAM-SHA-512",
                                      metadata={"env": "DRIFTLINE_KAFKA_SASL_MECHANISM"})
    kafka_sasl_username: str = field(default="",
                                     metadata={"env": "DRIFTLINE_KAFKA_SASL_USERNAME"})
    kafka_sasl_password: Secret = field(default_factory=lambda: Secret(""),
                                        metadata={"env": "DRIFTLINE_KAFKA_SASL_PASSWORD"})
    kafka_ssl_cafile: str = field(default="", metadata={"env": "DRIFTLINE_KAFKA_SSL_CAFILE"})
    kafka_ssl_certfile: str = field(default="",
                                    metadata={"env": "DRIFTLINE_KAFKA_SSL_CERTFILE"})
    kafka_ssl_keyfile: str = field(default="", metadata={"env": "DRIFTLINE_KAFKA_SSL_KEYFILE"})
    kafka_ssl_key_password: Secret = field(default_factory=lambda: Secret(""),
                                           metadata={"env": "DRIFTLINE_KAFKA_SSL_KEY_PASSWORD"})
    topic_prefix: str = field(default="driftline", metadata={"env": "DRIFTLINE_TOPIC_PREFIX"})
    partitions: int = field(default=4, metadata={"env": "DRIFTLINE_PARTITIONS"})
    replication: int = field(default=1, metadata={"env": "DRIFTLINE_REPLICATION"})
    app_id: str = field(default="driftline", metadata={"env": "DRIFTLINE_APP_ID"})
    web_port: int = field(default=6066, metadata={"env": "DRIFTLINE_WEB_PORT"})
    web_host: str = field(default="127.0.0.1", metadata={"env": "DRIFTLINE_WEB_HOST"})
    data_dir: Path = field(default_factory=lambda: home() / "data",
                           metadata={"env": "DRIFTLINE_DATA_DIR"})
    warmup: int = field(default=2000, metadata={"env": "DRIFTLINE_WARMUP"})
    max_payload_bytes: int = field(default=64 * 1024,
                                   metadata={"env": "DRIFTLINE_MAX_PAYLOAD_BYTES"})
    batch_size: int = field(default=5000, metadata={"env": "DRIFTLINE_BATCH_SIZE"})
    commit_interval_s: float = field(default=1.0,
                                     metadata={"env": "DRIFTLINE_COMMIT_INTERVAL_S"})
    store_batch_size: int = field(default=500, metadata={"env": "DRIFTLINE_STORE_BATCH_SIZE"})
    batch_within_s: float = field(default=0.1, metadata={"env": "DRIFTLINE_BATCH_WITHIN_S"})
    # While the monitor is behind, a model's interactions are fed to its detectors in runs
    # of ``run_min`` or after ``run_hold_s`` (each run has a fixed cost; checkpoints feed
    # every run, so the hold is at most ``commit_interval_s``). Caught up: at once.
    run_min: int = field(default=512, metadata={"env": "DRIFTLINE_RUN_MIN"})
    run_hold_s: float = field(default=1.0, metadata={"env": "DRIFTLINE_RUN_HOLD_S"})
    # Snapshot arrays this big (a model's reference sample, its embedding centroids) are
    # kept in state records of their own, rewritten only when they change.
    state_apart_bytes: int = field(default=2048,
                                   metadata={"env": "DRIFTLINE_STATE_APART_BYTES"})
    max_model_labels: int = field(default=100, metadata={"env": "DRIFTLINE_MAX_MODEL_LABELS"})
    log_sample_rate: float = field(default=1.0, metadata={"env": "DRIFTLINE_LOG_SAMPLE_RATE"})
    # Store: DATABASE_URL wins over Supabase; with neither, an embedded Postgres under data_dir.
    database_url: Secret = field(default_factory=lambda: Secret(""),
                                 metadata={"env": "DATABASE_URL"})
    supabase_url: str = field(default="", metadata={"env": "SUPABASE_URL"})
    supabase_key: Secret = field(default_factory=lambda: Secret(""),
                                 metadata={"env": "SUPABASE_SERVICE_ROLE_KEY"})
    # Retrain triggers.
    webhook_url: str = field(default="", metadata={"env": "DRIFTLINE_WEBHOOK_URL"})
    webhook_secret: Secret = field(default_factory=lambda: Secret(""),
                                   metadata={"env": "DRIFTLINE_WEBHOOK_SECRET"})
    # One deadline per webhook attempt: connect, send, status and the whole answer.
    webhook_timeout_s: float = field(default=10.0,
                                     metadata={"env": "DRIFTLINE_WEBHOOK_TIMEOUT_S"})
    retrain_command: str = field(default="", metadata={"env": "DRIFTLINE_RETRAIN_COMMAND"})
    cooldown_s: float = field(default=3600.0, metadata={"env": "DRIFTLINE_COOLDOWN_S"})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ) if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name in env and env[name] != "":
                raw = env[name]
                if f.type in ("int", int, "float", float):
                    kind = int if f.type in ("int", int) else float
                    try:
                        values[f.name] = kind(raw)
                    except ValueError:
                        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}"
                                         ) from None
                elif f.type in ("Path", Path):
                    values[f.name] = Path(raw)
                elif f.type in ("Secret", Secret):
                    values[f.name] = Secret(raw)
                else:
                    values[f.name] = raw
        if "data_dir" not in values:
            values["data_dir"] = home(env) / "data"
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def topic(self, name: str) -> str:
        """Full topic name, e.g. ``driftline.interactions``."""
        return f"{self.topic_prefix}.{name}"


TOPICS = ("interactions", "feedback", "model-updates", "drift-events", "dead-letters",
          "monitor-state",
          "retrain-requests")
