"""Prometheus config and alert rules: real promtool checks, unit tests and conventions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REQUIRED_ALERTS = {
    "DriftlineDriftDetected",
    "DriftlineRetrainFailing",
    "DriftlineNoInteractionsProcessed",
    "DriftlineConsumerLagHigh",
    "DriftlineDeadLettersRising",
    "DriftlineStoreUnavailable",
}


def _promtool(promtool: str, *args: str | Path) -> str:
    proc = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _alerts(repo_root: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted((repo_root / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(rule for rule in group["rules"] if "alert" in rule)
    return out


@pytest.mark.prometheus
def test_promtool_check_config(promtool: str, repo_root: Path) -> None:
    out = _promtool(promtool, "check", "config", repo_root / "prometheus" / "prometheus.yml")
    assert "SUCCESS" in out and "rule files found" in out


@pytest.mark.prometheus
def test_promtool_check_rules(promtool: str, repo_root: Path) -> None:
    files = sorted((repo_root / "prometheus" / "rules").glob("*.yml"))
    assert files
    out = _promtool(promtool, "check", "rules", *files)
    assert "SUCCESS" in out


@pytest.mark.prometheus
def test_promtool_test_rules(promtool: str, repo_root: Path) -> None:
    files = sorted((repo_root / "prometheus" / "tests").glob("*.yml"))
    assert files
    out = _promtool(promtool, "test", "rules", *files)
    assert "FAILED" not in out


def test_every_alert_is_complete_and_has_a_runbook_section(repo_root: Path) -> None:
    alerts = _alerts(repo_root)
    names = {a["alert"] for a in alerts}
    assert REQUIRED_ALERTS <= names
    runbook = (repo_root / "docs" / "runbook.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    for alert in alerts:
        name = alert["alert"]
        assert "for" in alert, name
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        ann = alert["annotations"]
        assert ann["summary"] and ann["description"], name
        assert ann["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbook.md has no section '{name}'"


def test_every_alert_has_a_promtool_unit_test(repo_root: Path) -> None:
    tested: dict[str, set[str]] = {}
    for path in (repo_root / "prometheus" / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                kind = "fires" if check["exp_alerts"] else "quiet"
                tested.setdefault(check["alertname"], set()).add(kind)
    for alert in _alerts(repo_root):
        assert "fires" in tested.get(alert["alert"], set()), f"no firing test: {alert['alert']}"


def test_scrape_config_targets_the_worker(repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["driftline"]["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["rules/*.yml"]


@pytest.mark.parametrize("expr_metric", [
    "driftline_drift_events_total", "driftline_retrain_jobs_total",
    "driftline_interactions_processed_total", "driftline_consumer_lag_messages",
    "driftline_dead_letters_published_total", "driftline_store_up",
])
def test_alerts_use_metrics_the_worker_exposes(repo_root: Path, expr_metric: str) -> None:
    from driftline.streams.metrics import Metrics
    from prometheus_client import CollectorRegistry

    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.add(family.name)
        names.add(family.name + "_total")
    assert expr_metric in names
    assert any(expr_metric in a["expr"] for a in _alerts(repo_root))
