"""Settings from the environment: types, defaults, secrets that never print."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest
from driftline.streams.config import (
    TOPICS,
    ConfigError,
    Secret,
    Settings,
    config_file,
    layered,
    problems,
    read_config_file,
    variables,
)

SECRETS = {"DATABASE_URL": "postgresql://u:hunter2-db@h/db",
           "SUPABASE_SERVICE_ROLE_KEY": "sb-hunter2-key",
           "DRIFTLINE_WEBHOOK_SECRET": "wh-hunter2-secret"}


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DRIFTLINE_HOME", raising=False)
    return home


def test_defaults_from_an_empty_env(_home: Path) -> None:
    s = Settings.from_env({})
    for f in dataclasses.fields(Settings):
        if f.name == "data_dir":
            continue
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory())  # type: ignore[operator]
        assert getattr(s, f.name) == default, f.name
    assert s.data_dir == _home / ".driftline" / "data"
    assert (s.kafka_bootstrap, s.topic_prefix, s.app_id) == (
        "127.0.0.1:9092", "driftline", "driftline")
    assert not s.database_url and not s.supabase_key and not s.webhook_secret


_SAMPLES = {"int": ("42", 42), "float": ("0.125", 0.125), "str": ("some text", "some text"),
            "Path": ("/srv/x", Path("/srv/x"))}


def test_every_field_is_read_from_its_variable_with_its_type() -> None:
    # Generic over the fields, so a field added later is covered too.
    for f in dataclasses.fields(Settings):
        var = f.metadata["env"]
        if f.type == "Secret":
            got = getattr(Settings.from_env({var: "s3cret"}), f.name)
            assert isinstance(got, Secret) and got.get() == "s3cret", var
            continue
        raw, want = _SAMPLES[str(f.type)]
        got = getattr(Settings.from_env({var: raw}), f.name)
        assert got == want and type(got) is type(want), var


def test_every_field_type_is_parsed() -> None:
    env = {
        "DRIFTLINE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "DRIFTLINE_TOPIC_PREFIX": "dl",
        "DRIFTLINE_PARTITIONS": "12", "DRIFTLINE_REPLICATION": "3",
        "DRIFTLINE_APP_ID": "dl-prod", "DRIFTLINE_WEB_PORT": "7000",
        "DRIFTLINE_WEB_HOST": "0.0.0.0", "DRIFTLINE_DATA_DIR": "/var/lib/dl",
        "DRIFTLINE_WARMUP": "2000", "DRIFTLINE_MAX_PAYLOAD_BYTES": "1048576",
        "DRIFTLINE_BATCH_SIZE": "64", "DRIFTLINE_BATCH_WITHIN_S": "0.05",
        "DRIFTLINE_MAX_MODEL_LABELS": "7", "DRIFTLINE_LOG_SAMPLE_RATE": "0.25",
        "SUPABASE_URL": "https://x.supabase.co", "DRIFTLINE_WEBHOOK_URL": "http://h/hook",
        "DRIFTLINE_RETRAIN_COMMAND": "make retrain", "DRIFTLINE_COOLDOWN_S": "90",
        **SECRETS,
    }
    s = Settings.from_env(env)
    assert s.kafka_bootstrap == "k1:9092,k2:9092" and s.topic_prefix == "dl"
    assert (s.partitions, s.replication, s.web_port, s.warmup) == (12, 3, 7000, 2000)
    assert all(type(v) is int for v in (s.partitions, s.replication, s.web_port, s.warmup,
                                         s.max_payload_bytes, s.batch_size,
                                         s.max_model_labels))
    assert (s.max_payload_bytes, s.batch_size, s.max_model_labels) == (1048576, 64, 7)
    assert (s.batch_within_s, s.log_sample_rate, s.cooldown_s) == (0.05, 0.25, 90.0)
    assert type(s.cooldown_s) is float
    assert s.data_dir == Path("/var/lib/dl") and isinstance(s.data_dir, Path)
    assert (s.app_id, s.web_host, s.supabase_url) == ("dl-prod", "0.0.0.0",
                                                      "https://x.supabase.co")
    assert (s.webhook_url, s.retrain_command) == ("http://h/hook", "make retrain")
    assert isinstance(s.database_url, Secret)
    assert s.database_url.get() == SECRETS["DATABASE_URL"]
    assert s.supabase_key.get() == SECRETS["SUPABASE_SERVICE_ROLE_KEY"]
    assert s.webhook_secret.get() == SECRETS["DRIFTLINE_WEBHOOK_SECRET"]
    assert s.topic("interactions") == "dl.interactions"


def test_every_field_names_its_own_variable() -> None:
    names = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert len(names) == len(set(names)) == len(dataclasses.fields(Settings))


def test_empty_values_mean_default() -> None:
    empty = {f.metadata["env"]: "" for f in dataclasses.fields(Settings)}
    assert Settings.from_env(empty) == Settings.from_env({})


def test_empty_driftline_home_means_default(monkeypatch: pytest.MonkeyPatch,
                                            _home: Path) -> None:
    assert Settings.from_env({"DRIFTLINE_HOME": ""}).data_dir == _home / ".driftline" / "data"
    assert Settings.from_env({"DRIFTLINE_HOME": "/srv/dl"}).data_dir == Path("/srv/dl/data")
    assert Settings.from_env({"DRIFTLINE_HOME": "/srv/dl", "DRIFTLINE_DATA_DIR": "/d"}
                             ).data_dir == Path("/d")
    # The process environment's DRIFTLINE_HOME counts only when no env is given.
    monkeypatch.setenv("DRIFTLINE_HOME", "/srv/os")
    assert Settings.from_env({}).data_dir == _home / ".driftline" / "data"
    assert Settings.from_env().data_dir == Path("/srv/os/data")
    assert Settings().data_dir == Path("/srv/os/data")
    monkeypatch.setenv("DRIFTLINE_HOME", "")
    assert Settings.from_env().data_dir == _home / ".driftline" / "data"


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_PARTITIONS", "9")
    monkeypatch.setenv("DRIFTLINE_WEBHOOK_SECRET", "s3")
    s = Settings.from_env()
    assert s.partitions == 9 and s.webhook_secret.get() == "s3"
    assert Settings.from_env({}).partitions == 4  # an explicit env ignores os.environ


def test_overrides_win_over_env() -> None:
    s = Settings.from_env({"DRIFTLINE_WARMUP": "900"}, warmup=300, topic_prefix="t")
    assert (s.warmup, s.topic_prefix) == (300, "t")


@pytest.mark.parametrize(("var", "value", "kind"), [
    ("DRIFTLINE_PARTITIONS", "four", "int"), ("DRIFTLINE_PARTITIONS", "4.5", "int"),
    ("DRIFTLINE_BATCH_WITHIN_S", "fast", "float")])
def test_malformed_numbers_are_refused(var: str, value: str, kind: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{var}='{value}' is not a valid {kind}")):
        Settings.from_env({var: value})


def test_unknown_variables_are_ignored() -> None:
    assert Settings.from_env({"DRIFTLINE_NO_SUCH": "1"}) == Settings.from_env({})


def test_secrets_never_print(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(SECRETS)
    texts = [repr(s), str(s), f"{s}", format(s), repr(dataclasses.asdict(s)),
             str(s.database_url), repr(s.supabase_key), f"{s.webhook_secret}"]
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", s, s)
    texts.append(caplog.text)
    for text in texts:
        for value in SECRETS.values():
            assert value not in text
        assert "hunter2" not in text
    assert "Secret('**********')" in repr(s)
    assert repr(Secret("")) == "Secret('')"
    assert bool(Secret("x")) and not bool(Secret(""))


def test_secrets_compare_by_value() -> None:
    assert Secret("a") == Secret("a") and hash(Secret("a")) == hash(Secret("a"))
    assert Secret("a") != Secret("b") and Secret("a") != "a"
    assert Secret("é") == Secret("é")
    assert Settings.from_env(SECRETS) == Settings.from_env(dict(SECRETS))
    assert Settings.from_env(SECRETS) != Settings.from_env({})


def test_topics() -> None:
    s = Settings.from_env({})
    assert [s.topic(t) for t in TOPICS][:3] == [
        "driftline.interactions", "driftline.feedback", "driftline.model-updates"]
    assert {"drift-events", "dead-letters", "retrain-requests"} <= set(TOPICS)


def test_a_malformed_number_names_its_variable(_home: Path) -> None:
    with pytest.raises(ValueError, match=r"DRIFTLINE_RUN_HOLD_S='soon' is not a valid float"):
        Settings.from_env({"DRIFTLINE_RUN_HOLD_S": "soon"})
    with pytest.raises(ValueError, match=r"DRIFTLINE_BATCH_SIZE='5k' is not a valid int"):
        Settings.from_env({"DRIFTLINE_BATCH_SIZE": "5k"})
    assert Settings.from_env({"DRIFTLINE_RUN_MIN": "64"}).run_min == 64


# -- the config file and the layering ---------------------------------------------------

_TOML_SAMPLES = {"int": ("42", 42), "float": ("0.0125", 0.0125),
                 "str": ('"some text"', "some text"), "Path": ('"/srv/x"', Path("/srv/x")),
                 "Secret": ('"s3cret"', Secret("s3cret"))}


def test_every_field_can_come_from_the_config_file(tmp_path: Path) -> None:
    # Generic over the fields: a field added later is read from the file with no change.
    for f in dataclasses.fields(Settings):
        var = f.metadata["env"]
        raw, want = _TOML_SAMPLES[str(f.type)]
        path = tmp_path / "driftline.toml"
        path.write_text(f"{var} = {raw}\n")
        assert getattr(Settings.from_env(layered({}, path).env), f.name) == want, var
        assert layered({}, path).sources == {var: str(path)}


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('DRIFTLINE_WARMUP = 100\nDRIFTLINE_PARTITIONS = 6\nDRIFTLINE_APP_ID = "f"\n'
                    'DRIFTLINE_HOME = "/srv/file"\n')
    env = {"DRIFTLINE_WARMUP": "200", "DRIFTLINE_PARTITIONS": "7", "DRIFTLINE_APP_ID": ""}
    layers = layered(env, path, {"DRIFTLINE_WARMUP": ("--warmup", "300")})
    s = layers.settings()
    assert (s.warmup, s.partitions, s.app_id) == (300, 7, "f")  # an empty env value is unset
    assert s.data_dir == Path("/srv/file/data")  # other variables from the file count too
    assert s.replication == 1
    assert layers.sources == {"DRIFTLINE_WARMUP": "flag --warmup",
                              "DRIFTLINE_PARTITIONS": "environment",
                              "DRIFTLINE_APP_ID": str(path), "DRIFTLINE_HOME": str(path)}


def test_config_file_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_file({}) is None
    (tmp_path / "driftline.toml").write_text("")
    assert config_file({}) == Path("driftline.toml")
    other = tmp_path / "other.toml"
    other.write_text("")
    assert config_file({"DRIFTLINE_CONFIG": str(other)}) == other
    assert config_file({"DRIFTLINE_CONFIG": "/nope.toml"}, str(other)) == other
    with pytest.raises(FileNotFoundError, match="No such config file"):
        config_file({"DRIFTLINE_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(("text", "match"), [
    ("DRIFTLINE_WARMUP = [1]", "must be a string, a number or a boolean"),
    ("[driftline]\nDRIFTLINE_WARMUP = 1", "unknown setting 'driftline'"),
    ("DRIFTLINE_WARMUP = ", "not valid TOML"),
    ("driftline_warmup = 5", "unknown setting 'driftline_warmup'"),
])
def test_bad_config_files_are_config_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(match)):
        read_config_file(path)


@pytest.mark.parametrize(("var", "value", "match"), [
    ("DRIFTLINE_WEB_PORT", "0", "is not a port"),
    ("DRIFTLINE_WARMUP", "19", "at least 20"),
    ("DRIFTLINE_FALSE_ALARM_RATE", "0", "must be in (0, 0.1)"),
    ("DRIFTLINE_FALSE_ALARM_RATE", "nan", "must be in (0, 0.1)"),
    ("DRIFTLINE_LOG_SAMPLE_RATE", "1.5", "between 0 and 1"),
    ("DRIFTLINE_PARTITIONS", "0", "at least 1"),
    ("DRIFTLINE_RUN_HOLD_S", "0", "more than 0"),
    ("DRIFTLINE_KAFKA_BOOTSTRAP", "k1:9092,k2", "host:port"),
    ("DRIFTLINE_KAFKA_BOOTSTRAP", "k1:９０９２", "host:port"),
])
def test_out_of_range_values_are_config_errors(var: str, value: str, match: str) -> None:
    pattern = re.escape(f"{var}={value!r} ") + ".*" + re.escape(match)
    with pytest.raises(ConfigError, match=pattern):
        layered({var: value}).settings()
    assert problems(Settings.from_env({})) == []


def test_the_variable_list_covers_every_name_in_the_source() -> None:
    root = Path(__file__).resolve().parents[2]
    names: set[str] = set()
    for folder in ("streams", "detectors"):
        for path in (root / folder).rglob("*.py"):
            names |= set(re.findall(r"\bDRIFTLINE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    names -= {"DRIFTLINE_CONFIG"}  # names the file itself
    assert names <= set(variables()), names - set(variables())
    assert len(variables()) == len(set(variables()))


def test_the_detectors_get_the_configured_warmup_and_budget() -> None:
    mc = Settings.from_env({"DRIFTLINE_WARMUP": "321",
                            "DRIFTLINE_FALSE_ALARM_RATE": "2e-5"}).monitor_config()
    assert (mc.warmup, mc.target_false_alarm_rate) == (321, 2e-5)
