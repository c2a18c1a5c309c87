"""docker-compose.yml, checked statically (no Docker daemon here): pinned images, Kafka at
the project's version, env var names of streams/config.py, ports and hosts consistent with
prometheus.yml and Grafana provisioning, mounts that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from driftline.streams import __version__
from driftline.streams.config import Settings
from driftline.streams.tooling.local_kafka import KAFKA_VERSION

SERVICES = {"kafka", "postgres", "migrate", "worker", "simulator", "prometheus", "grafana"}
APP_SERVICES = ("migrate", "worker", "simulator")
SETTINGS_ENV = {f.metadata["env"] for f in fields(Settings)}


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return doc


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    for name, svc in compose["services"].items():
        for dep in svc.get("depends_on", []):
            assert dep in SERVICES, (name, dep)


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, (name, image)
        assert re.search(r"\d", tag), f"{name}: tag {tag!r} names no version"
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert compose["services"]["postgres"]["image"].startswith("pgvector/pgvector:")
    for name in APP_SERVICES:
        assert compose["services"][name]["build"] == "."
        assert compose["services"][name]["image"] == f"driftline:{__version__}"


def test_dockerfile(repo_root: Path) -> None:
    text = (repo_root / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    assert "pip install ." in text
    # The installed package finds its migrations itself: no source tree on the path.
    assert "PYTHONPATH" not in text and "rm -rf /src" in text
    assert 'ENTRYPOINT ["driftline"]' in text and 'CMD ["worker"]' in text
    ignored = (repo_root / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_app_services_use_settings_env_names(compose: dict[str, Any]) -> None:
    commands = {"migrate": "migrate", "worker": "worker", "simulator": "simulate"}
    for name in APP_SERVICES:
        svc = compose["services"][name]
        unknown = set(env(svc)) - SETTINGS_ENV
        assert not unknown, f"{name}: not settings of streams/config.py: {unknown}"
        assert svc["command"][0] == commands[name]
    assert compose["services"]["simulator"]["command"][1:3] == ["--to", "kafka"]


def test_kafka_listeners_match_the_app(compose: dict[str, Any]) -> None:
    kafka = env(compose["services"]["kafka"])
    defaults = Settings()
    default_port = defaults.kafka_bootstrap.rsplit(":", 1)[1]
    listeners = dict(re.findall(r"(\w+)://[^:]*:(\d+)", kafka["KAFKA_LISTENERS"]))
    assert listeners["PLAINTEXT"] == default_port == "9092"
    assert listeners["CONTROLLER"] == "9093"
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    advertised = dict(re.findall(r"(\w+)://([^,]+)", kafka["KAFKA_ADVERTISED_LISTENERS"]))
    assert advertised["PLAINTEXT"] == f"localhost:{default_port}"
    for name in APP_SERVICES:
        bootstrap = env(compose["services"][name])["DRIFTLINE_KAFKA_BOOTSTRAP"]
        assert bootstrap in advertised.values() and bootstrap.startswith("kafka:"), name
        port = bootstrap.rsplit(":", 1)[1]
        assert port in listeners.values()
    assert f"{default_port}:{default_port}" in compose["services"]["kafka"]["ports"]


def test_database_url_points_at_postgres(compose: dict[str, Any]) -> None:
    pg = env(compose["services"]["postgres"])
    for name in APP_SERVICES:
        url = urlsplit(env(compose["services"][name])["DATABASE_URL"])
        assert (url.hostname, url.port) == ("postgres", 5432), name
        assert (url.username, url.password, url.path) == (
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "/" + pg["POSTGRES_DB"])
    migrate_deps = compose["services"]["worker"]["depends_on"]
    assert migrate_deps["migrate"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_the_worker_where_it_listens(compose: dict[str, Any],
                                                        repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "driftline"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    worker = env(compose["services"]["worker"])
    assert targets == [f"worker:{worker['DRIFTLINE_WEB_PORT']}"]
    assert worker["DRIFTLINE_WEB_HOST"] == "0.0.0.0"
    prom = compose["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert "9090:9090" in prom["ports"]


def test_grafana_provisioning_matches_the_mounts(compose: dict[str, Any],
                                                 repo_root: Path) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]
              if v.startswith("./")}
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    ds = yaml.safe_load((repo_root / "grafana/provisioning/datasources/prometheus.yml")
                        .read_text())["datasources"][0]
    url = urlsplit(ds["url"])
    assert url.hostname == "prometheus" and f"{url.port}:{url.port}" in \
        compose["services"]["prometheus"]["ports"]
    provider = yaml.safe_load((repo_root / "grafana/provisioning/dashboards/driftline.yml")
                              .read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    home = env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (repo_root / "grafana/dashboards" / Path(home).name).exists()


def test_mounts_exist_and_volumes_are_declared(compose: dict[str, Any],
                                               repo_root: Path) -> None:
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (repo_root / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_docker_compose_config(repo_root: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30, check=False).returncode != 0:
        pytest.skip("`docker compose` is not available")
    proc = subprocess.run([docker, "compose", "-f", str(repo_root / "docker-compose.yml"),
                           "config", "-q"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
