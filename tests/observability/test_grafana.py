"""Grafana provisioning and the driftline dashboard: structure, conventions, dashboard-linter.

The structural checks follow grafana/dashboard-linter's rules (templated datasource, job
and instance variables, panel datasource/title/description/units, $__rate_interval in
rate(), counters only inside rate/irate/increase, job and instance matchers); the real
linter runs too when it can be installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from driftline.detectors import KINDS, ModelMonitor, MonitorConfig

from tests.observability.conftest import exposed_labels

# Pinned grafana/dashboard-linter (go install through the Go module proxy).
DASHBOARD_LINTER = "github.com/grafana/dashboard-linter@v0.1.1"
DS_UIDS = {"$datasource", "${datasource}"}
UNITS = {"none", "short", "ops", "s", "ms", "percentunit", "bool_yes_no", "bytes"}
SELECTOR = re.compile(r"\b(driftline_[a-z_]+)(\{[^}]*\})?")


def dashboards(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted((root / "grafana" / "dashboards").glob("*.json"))
    return [(p, json.loads(p.read_text())) for p in paths]


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


@pytest.fixture(scope="module")
def dashboard(repo_root: Path) -> dict[str, Any]:
    found = dashboards(repo_root)
    assert [p.name for p, _ in found] == ["driftline.json"]
    return found[0][1]


def test_provisioning_points_at_prometheus_and_the_dashboards(repo_root: Path) -> None:
    ds = yaml.safe_load((repo_root / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    prov = yaml.safe_load((repo_root / "grafana/provisioning/dashboards/driftline.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"], ds["label"]) == ("datasource", "prometheus", "Data source")
    for name in ("job", "instance", "model"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] in DS_UIDS, name
        assert v["label"] == name.capitalize() and v["multi"] and v["allValue"] == ".+", name
        assert v["refresh"] == 2, name  # reload on time range change
        assert re.fullmatch(r"label_values\(driftline_[a-z_]+(\{.*\})?, [a-z_]+\)", v["query"])
    assert variables["model"]["query"].endswith(", model)")


def test_panels_follow_the_linter_rules(dashboard: dict[str, Any]) -> None:
    labels = exposed_labels()
    for panel in query_panels(dashboard):
        title = panel["title"]
        assert title and panel.get("description"), title
        assert panel["datasource"]["uid"] in DS_UIDS, title
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, title
        assert panel["targets"], title
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"]["uid"] in DS_UIDS, title
            for metric, matchers in SELECTOR.findall(expr):
                assert metric in labels, f"{title}: {metric} is not a driftline metric"
                assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, \
                    f"{title}: {metric} lacks job/instance matchers"
                if "model" in labels[metric]:
                    assert 'model=~"$model"' in matchers, f"{title}: {metric} ignores $model"
            for rng in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
                assert rng == "$__rate_interval", f"{title}: rate over {rng}"
            for counter in re.findall(r"(\w*)\(?(driftline_[a-z_]+_total)\{", expr):
                assert counter[0] in {"rate", "irate", "increase"}, f"{title}: bare {counter[1]}"


def test_one_row_per_drift_kind_with_signals_against_baselines(dashboard: dict[str, Any]) -> None:
    rows: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        else:
            current.append(panel)
    for kind in KINDS:
        panels = rows[f"{kind.capitalize()} drift"]
        exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
        assert f'kind="{kind}"' in exprs
        for metric in ("driftline_signal_current", "driftline_signal_baseline",
                       "driftline_detector_statistic", "driftline_detector_threshold",
                       "driftline_drift_events_total"):
            assert metric in exprs, (kind, metric)


def test_signals_are_the_monitors_signals(dashboard: dict[str, Any]) -> None:
    """A ``signal="..."`` filter names a signal the monitor reports, in its own kind."""
    kinds = {name: st.kind for name, st in
             ModelMonitor("m", MonitorConfig(warmup=50)).stats().items()}
    exprs = [t["expr"] for p in query_panels(dashboard) for t in p["targets"]]
    named = [(k, sig) for e in exprs for k, sig in
             re.findall(r'kind="(\w+)",signal="(\w+)"', e)]
    assert named
    for kind, signal in named:
        assert kinds.get(signal) == kind, (kind, signal)


def test_required_panels_and_drift_annotation(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t["expr"] for p in query_panels(dashboard) for t in p["targets"])
    for needed in ("rate(driftline_interactions_processed_total",  # throughput
                   "histogram_quantile(0.99, sum by (le) "
                   "(rate(driftline_batch_processing_seconds_bucket",
                   "driftline_detection_lag_seconds_bucket", "driftline_consumer_lag_messages",
                   "driftline_dead_letters_published_total", "driftline_retrain_jobs_total",
                   "driftline_store_errors_total", "driftline_buffer_fill_ratio"):
        assert needed in exprs, needed
    (drift,) = [a for a in dashboard["annotations"]["list"] if a["name"] == "Drift events"]
    assert drift["datasource"]["uid"] in DS_UIDS and "driftline_drift_events_total" in drift["expr"]
    assert {"model", "kind", "signal"} <= set(drift["tagKeys"].split(","))


def _linter_binary(tmp_cache: Path) -> str:
    found = os.environ.get("DASHBOARD_LINTER") or shutil.which("dashboard-linter")
    if found:
        return found
    gobin = tmp_cache / "bin"
    if (gobin / "dashboard-linter").exists():
        return str(gobin / "dashboard-linter")
    go = shutil.which("go")
    if go is None:
        pytest.skip("dashboard-linter not installed and no `go` to install it")
    proc = subprocess.run([go, "install", DASHBOARD_LINTER], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "GOBIN": str(gobin)}, check=False)
    if proc.returncode != 0:
        pytest.skip(f"`go install {DASHBOARD_LINTER}` failed: {proc.stderr.strip()[-400:]}")
    return str(gobin / "dashboard-linter")


def test_dashboard_linter(repo_root: Path) -> None:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "driftline-tools"
    linter = _linter_binary(cache)
    for path, _ in dashboards(repo_root):
        proc = subprocess.run([linter, "lint", "--strict", str(path)], capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
