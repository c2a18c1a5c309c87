"""Settings: one typed object, every field read from one environment variable.

Secrets are held as ``Secret`` so that ``repr`` / logs never show them.

The same variables can come from a TOML config file (``driftline.toml`` in the working
directory, or ``--config PATH`` / ``DRIFTLINE_CONFIG``) with the same names; see
:func:`layered`: command-line flags win over the environment, the environment over the
file, the file over the defaults.
"""

from __future__ import annotations

import hmac
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftline.detectors import MonitorConfig
    from driftline.detectors.segments import SegmentPlan


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
    # Target false alarms per event per signal (the detectors' thresholds are computed
    # for it); the worker and `driftline replay` use the same value.
    false_alarm_rate: float = field(default=1e-6, metadata={"env": "DRIFTLINE_FALSE_ALARM_RATE"})
    # How the detectors read production traffic (see detectors.MonitorConfig): "ar" learns
    # its dependence in the warm-up, "off" calibrates for independent draws; a seasonal
    # profile of this period (0: none) in this many bins; river detectors per signal.
    dependence: str = field(default="ar", metadata={"env": "DRIFTLINE_DEPENDENCE"})
    season_period_s: float = field(default=86_400.0,
                                   metadata={"env": "DRIFTLINE_SEASON_PERIOD_S"})
    season_bins: int = field(default=24, metadata={"env": "DRIFTLINE_SEASON_BINS"})
    detectors: str = field(default="", metadata={"env": "DRIFTLINE_DETECTORS"})
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
    state_apart_bytes: int = field(default=1024,
                                   metadata={"env": "DRIFTLINE_STATE_APART_BYTES"})
    max_model_labels: int = field(default=100, metadata={"env": "DRIFTLINE_MAX_MODEL_LABELS"})
    # Bounds under a flood of model ids: models held in memory (idle ones past it wait on
    # local disk in TMPDIR, their state being in the state topic; 0: no cap),
    # and how fast models never seen are admitted (a token bucket: per second, burst; 0:
    # all). A refused model's records go to the dead-letter topic (model_not_admitted).
    # A new model costs ~2.5 ms of the worker in all: 50/s keep a flood's to ~1/8 core.
    max_models: int = field(default=10_000, metadata={"env": "DRIFTLINE_MAX_MODELS"})
    model_admission_per_s: float = field(default=50.0,
                                         metadata={"env": "DRIFTLINE_MODEL_ADMISSION_PER_S"})
    model_admission_burst: int = field(default=1000,
                                       metadata={"env": "DRIFTLINE_MODEL_ADMISSION_BURST"})
    # Segments (detectors/segments.py): "KEY[,KEY...]" for every model and/or
    # "MODEL=KEY[,KEY...]" per model, ";"-separated; keys are model_version or
    # metadata.<name>. Each key watches its busiest DRIFTLINE_SEGMENT_VALUES values (the
    # rest as "other"); the model level keeps DRIFTLINE_SEGMENT_MODEL_SHARE of the
    # false-alarm budget, the keys share the rest. Worker and replay read the same.
    segments: str = field(default="", metadata={"env": "DRIFTLINE_SEGMENTS"})
    segment_values: int = field(default=20, metadata={"env": "DRIFTLINE_SEGMENT_VALUES"})
    segment_model_share: float = field(default=0.5,
                                       metadata={"env": "DRIFTLINE_SEGMENT_MODEL_SHARE"})
    # Distinct segment labels per model label in the metrics (then "other").
    max_segment_labels: int = field(default=64,
                                    metadata={"env": "DRIFTLINE_MAX_SEGMENT_LABELS"})
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
    # "segment": a segment's drift is decided and acted on for that segment alone (its
    # request names it, e.g. re-index only that segment's index); "model": it joins the
    # model's decision.
    retrain_scope: str = field(default="segment", metadata={"env": "DRIFTLINE_RETRAIN_SCOPE"})

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

    def monitor_config(self) -> MonitorConfig:
        """The detectors' settings of this configuration (the worker's and replay's)."""
        from driftline.detectors import MonitorConfig

        return MonitorConfig(warmup=self.warmup, target_false_alarm_rate=self.false_alarm_rate,
                             dependence=self.dependence, season_period_s=self.season_period_s,
                             season_bins=self.season_bins, detectors=self.detectors)

    def segment_plan(self) -> SegmentPlan:
        """Which models are segmented by which keys (the worker's and replay's)."""
        from driftline.detectors.segments import SegmentPlan

        return SegmentPlan.parse(self.segments, self.segment_values, self.segment_model_share)


TOPICS = ("interactions", "feedback", "model-updates", "drift-events", "dead-letters",
          "monitor-state",
          "retrain-requests")


# -- the config file and the layering ---------------------------------------------------

CONFIG_FILE = "driftline.toml"
CONFIG_VARIABLE = "DRIFTLINE_CONFIG"
# Variables read outside Settings (the local broker, the demo's and the store's home); a
# config file may set them too. tests/streams/test_config.py checks the list against
# every DRIFTLINE_* name in the source.
OTHER_VARIABLES = ("DRIFTLINE_HOME", "DRIFTLINE_KAFKA_PORT", "DRIFTLINE_KAFKA_CONTROLLER_PORT",
                   "DRIFTLINE_KAFKA_JVM_OPTS", "DRIFTLINE_CACHE", "DRIFTLINE_MAVEN_URL")


class ConfigError(ValueError):
    """A configuration driftline cannot use: a malformed value or file, an unknown name."""


def variables() -> tuple[str, ...]:
    """Every variable a config file may set: Settings' fields, then the others."""
    return tuple(f.metadata["env"] for f in fields(Settings)) + OTHER_VARIABLES


def config_file(env: Mapping[str, str], explicit: str | None = None) -> Path | None:
    """The config file in use: ``explicit`` (``--config``), else ``DRIFTLINE_CONFIG``, else
    ``./driftline.toml`` when it exists. A file named explicitly must exist
    (``FileNotFoundError`` otherwise)."""
    named = explicit or env.get(CONFIG_VARIABLE) or None
    if named is not None:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(2, "No such config file", str(path))
        return path
    path = Path(CONFIG_FILE)
    return path if path.is_file() else None


def read_config_file(path: Path) -> dict[str, str]:
    """The variables of a TOML config file, as the strings the environment would hold.

    Keys are the environment variables' names (``DRIFTLINE_WARMUP = 500``); strings,
    numbers and booleans are accepted. An unknown name is an error, so a typo does not
    pass silently.
    """
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    known = set(variables())
    out: dict[str, str] = {}
    for key, value in doc.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r} (`driftline config` lists "
                              "every setting)")
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            out[key] = value if isinstance(value, str) else repr(value)
        else:
            raise ConfigError(f"{path}: {key} must be a string, a number or a boolean, "
                              f"not a TOML {type(value).__name__}")
    return out


@dataclass(frozen=True)
class Layers:
    """The effective variables and where each came from."""

    env: dict[str, str]
    sources: dict[str, str]  # variable -> "flag --x" | "environment" | "<file>"
    file: Path | None = None

    def settings(self) -> Settings:
        """Settings of these variables; a malformed or out-of-range value is a
        :class:`ConfigError` naming the variable and where its value came from."""
        try:
            s = Settings.from_env(self.env)
        except ValueError as exc:
            raise ConfigError(self._where(str(exc))) from None
        found = problems(s)
        if found:
            name, problem = found[0]
            value = "'***'" if name in _SECRETS else repr(self.env.get(name, ""))
            raise ConfigError(self._where(f"{name}={value} {problem}"))
        return s

    def _where(self, message: str) -> str:
        name = message.split("=", 1)[0]
        source = self.sources.get(name)
        return f"{message} (from {source})" if source else message


def layered(environ: Mapping[str, str], file: Path | None = None,
            flags: Mapping[str, tuple[str, str]] | None = None) -> Layers:
    """Merge ``file`` < ``environ`` < ``flags`` (variable -> (flag, value)); an empty
    environment value means unset, as everywhere."""
    env: dict[str, str] = {}
    sources: dict[str, str] = {}
    if file is not None:
        for key, value in read_config_file(file).items():
            env[key], sources[key] = value, str(file)
    for key, value in environ.items():
        if value != "" or key not in env:
            env[key] = value
            if value != "":
                sources[key] = "environment"
    for key, (flag, value) in (flags or {}).items():
        env[key], sources[key] = value, f"flag {flag}"
    return Layers(env, sources, file)


_AT_LEAST_ONE = ("partitions", "replication", "batch_size", "store_batch_size", "run_min",
                 "max_model_labels", "max_payload_bytes", "season_bins",
                 "max_segment_labels", "model_admission_burst")
_POSITIVE = ("commit_interval_s", "batch_within_s", "run_hold_s")


_SECRETS = {f.metadata["env"] for f in fields(Settings) if f.type in ("Secret", Secret)}


def problems(s: Settings) -> list[tuple[str, str]]:
    """``(variable, what is wrong)`` for values of the right type but out of range."""
    env = {f.name: f.metadata["env"] for f in fields(Settings)}
    out: list[tuple[str, str]] = []
    if s.database_url and not s.database_url.get().startswith(("postgres://",
                                                                "postgresql://")):
        out.append((env["database_url"], "is not a postgresql:// URL"))
    for name in ("supabase_url", "webhook_url"):
        value = getattr(s, name)
        if value and not value.startswith(("https://", "http://")):
            out.append((env[name], "is not an http(s):// URL"))
    if s.supabase_url and not s.supabase_key and not s.database_url:
        out.append((env["supabase_url"], f"needs {env['supabase_key']} as well"))
    for server in s.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            out.append((env["kafka_bootstrap"], "is not a list of host:port"))
            break
    if not 1 <= s.web_port <= 65535:
        out.append((env["web_port"], "is not a port (1-65535)"))
    if s.warmup < 20:
        out.append((env["warmup"], "is too short: a warm-up needs at least 20 interactions"))
    if not 0.0 < s.false_alarm_rate < 0.1 or math.isnan(s.false_alarm_rate):
        out.append((env["false_alarm_rate"], "must be in (0, 0.1): false alarms per event "
                    "per signal, e.g. 1e-6"))
    if s.dependence not in ("ar", "off"):
        out.append((env["dependence"], "must be ar (learn the traffic's dependence) or off"))
    if not s.season_period_s >= 0:
        out.append((env["season_period_s"], "must be 0 (no profile) or a period in seconds"))
    if s.detectors:
        from driftline.detectors import MonitorConfig

        try:
            MonitorConfig(detectors=s.detectors)
        except ValueError as exc:
            out.append((env["detectors"], str(exc).removeprefix("detectors: ")))
    if not 0.0 <= s.log_sample_rate <= 1.0:
        out.append((env["log_sample_rate"], "must be between 0 and 1"))
    if not 1 <= s.segment_values <= 1000:
        out.append((env["segment_values"], "must be within 1-1000"))
    if not 0.0 < s.segment_model_share < 1.0:
        out.append((env["segment_model_share"], "must be in (0, 1): the model level's share "
                    "of the false-alarm budget"))
    else:
        try:
            s.segment_plan()
        except ValueError as exc:
            out.append((env["segments"], str(exc)))
    if s.retrain_scope not in ("segment", "model"):
        out.append((env["retrain_scope"], "must be 'segment' or 'model'"))
    if not s.cooldown_s >= 0:
        out.append((env["cooldown_s"], "must be 0 or more seconds"))
    if s.max_models < 0:
        out.append((env["max_models"], "must be 0 (no cap) or a number of models"))
    if not s.model_admission_per_s >= 0:
        out.append((env["model_admission_per_s"],
                    "must be 0 (admit every model) or new models per second"))
    out += [(env[n], "must be at least 1") for n in _AT_LEAST_ONE if getattr(s, n) < 1]
    out += [(env[n], "must be more than 0") for n in _POSITIVE if not getattr(s, n) > 0]
    return out
