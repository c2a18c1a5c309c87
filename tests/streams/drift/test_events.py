"""Drift events, schema v1: deterministic ids, every contract field, RFC 3339 times."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import datetime
from typing import Any

import pytest
from driftline.detectors.types import KINDS, Finding
from driftline.streams.drift.events import SCHEMA_VERSION, action_id, drift_event, drift_id, iso

FINDING = Finding(kind="behavior", signal="latency", detector="cusum_mean_up",
                  baseline=512.0, current=790.25, severity=4.5, event_id="e-3013",
                  ts=1_767_225_600.1234, model_version="v1")
V1_FIELDS = {"schema_version", "drift_id", "model_id", "model_version", "kind", "signal",
             "detector", "trigger_event_id", "detected_at", "baseline", "current", "severity"}
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def test_drift_id_is_deterministic_uuid5() -> None:
    a = drift_id("m1", FINDING)
    assert a == drift_id("m1", dataclasses.replace(FINDING))
    u = uuid.UUID(a)
    assert u.version == 5 and str(u) == a
    # Pinned: a change here would give every past detection a second identity.
    assert a == str(uuid.uuid5(uuid.UUID("6f1c2a52-4d0e-4f7a-9a57-3f1d1c0de1f7"),
                               "m1|v1|behavior|latency|cusum_mean_up|e-3013"))


@pytest.mark.parametrize(("model_id", "change"), [
    ("m2", {}),
    ("m1", {"model_version": "v2"}),
    ("m1", {"model_version": None}),
    ("m1", {"kind": "accuracy"}),
    ("m1", {"signal": "output_length"}),
    ("m1", {"detector": "cusum_mean_down"}),
    ("m1", {"event_id": "e-3014"}),
])
def test_drift_id_changes_with_each_identity_field(model_id: str,
                                                   change: dict[str, Any]) -> None:
    assert drift_id(model_id, dataclasses.replace(FINDING, **change)) != drift_id("m1", FINDING)


@pytest.mark.parametrize("change", [
    {"baseline": 1.0}, {"current": 2.0}, {"severity": 9.0}, {"ts": 1_767_300_000.0}])
def test_drift_id_ignores_measurements_and_time(change: dict[str, Any]) -> None:
    # A replay measures the same detection at another wall time: same identity.
    assert drift_id("m1", dataclasses.replace(FINDING, **change)) == drift_id("m1", FINDING)


def test_drift_id_fields_cannot_be_shifted_across_the_separator() -> None:
    # "a|b" + "c" must not collide with "a" + "b|c": model ids cannot hold "|".
    f = dataclasses.replace(FINDING, model_version="x")
    assert drift_id("m1", f) != drift_id("m1|x", dataclasses.replace(FINDING,
                                                                     model_version=None))


def test_drift_event_has_every_v1_field() -> None:
    ev = drift_event("m1", FINDING)
    assert set(ev) == V1_FIELDS
    assert ev == {
        "schema_version": 1, "drift_id": drift_id("m1", FINDING), "model_id": "m1",
        "model_version": "v1", "kind": "behavior", "signal": "latency",
        "detector": "cusum_mean_up", "trigger_event_id": "e-3013",
        "detected_at": "2026-01-01T00:00:00.123Z", "baseline": 512.0, "current": 790.25,
        "severity": 4.5,
    }
    assert SCHEMA_VERSION == 1
    assert ev["kind"] in KINDS


def test_drift_event_without_model_version() -> None:
    ev = drift_event("m1", dataclasses.replace(FINDING, model_version=None))
    assert ev["model_version"] is None
    assert set(ev) == V1_FIELDS


@pytest.mark.parametrize(("ts", "text"), [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1_767_225_600.0, "2026-01-01T00:00:00.000Z"),
    (1_767_225_600.999, "2026-01-01T00:00:00.999Z"),
    (1_767_225_600.0004, "2026-01-01T00:00:00.000Z"),
    (1_782_864_000.5, "2026-07-01T00:00:00.500Z"),  # no DST or local zone leaks in
    (253_402_300_799.0, "9999-12-31T23:59:59.000Z"),
])
def test_iso_is_rfc3339_utc_with_z(ts: float, text: str) -> None:
    got = iso(ts)
    assert got == text
    assert RFC3339_Z.match(got)
    back = datetime.fromisoformat(got.replace("Z", "+00:00")).timestamp()
    assert abs(back - ts) < 1e-3


def test_detected_at_is_the_trigger_time_not_the_wall_clock() -> None:
    a = drift_event("m1", FINDING)["detected_at"]
    b = drift_event("m1", dataclasses.replace(FINDING, ts=FINDING.ts + 60))["detected_at"]
    assert (a, b) == ("2026-01-01T00:00:00.123Z", "2026-01-01T00:01:00.123Z")


def test_action_id_is_deterministic_and_order_sensitive() -> None:
    a = action_id("d1", "d2")
    assert a == action_id("d1", "d2")
    assert re.fullmatch(r"[0-9a-f]{32}", a)
    assert a != action_id("d2", "d1")
    assert a != action_id("d1", "d3")
