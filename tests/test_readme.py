"""The README is a user guide that stays true: its commands, flags, exit codes and settings
are the CLI's, and it carries no benchmark history."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from driftline.streams import config
from driftline.streams.cli import Exit, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_guide_starts_with_the_quick_start_then_publish_and_subscribe() -> None:
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[:3] == ["Quick start", "Publish interactions from your application",
                            "Subscribe to drift events"]
    for topic in ("Install", "Commands", "Connect your own Kafka, Postgres or Supabase",
                  "Configuration", "Operations"):
        assert topic in headings
    assert "make demo" in _section("Quick start") and "make test" in _section("Quick start")
    assert "pip install" in _section("Install")


def test_commands_and_flags_are_the_clis() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    rows = re.findall(r"^\| `driftline (\w+)([^`]*)` \|", _section("Commands"), re.M)
    assert {name for name, _ in rows} == set(sub.choices)
    for name, rest in rows:
        known = {s for a in sub.choices[name]._actions for s in a.option_strings}
        for flag in re.findall(r"--[a-z-]+", rest):
            assert flag in known, (name, flag)


def test_exit_codes_are_the_clis() -> None:
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", _section("Commands"), re.M)]
    assert codes == [int(e) for e in Exit]


def test_every_setting_is_documented_and_nothing_else() -> None:
    table = _section("Configuration")
    documented = set(re.findall(r"`((?:DRIFTLINE|DATABASE|SUPABASE)_[A-Z_]+)`", table))
    assert documented == set(config.variables()) | {config.CONFIG_VARIABLE}


def test_no_benchmark_history_in_the_guide_or_the_benchmarks() -> None:
    for text in (README, (ROOT / "docs" / "benchmarks.md").read_text()):
        assert not re.findall(r"`[0-9a-f]{7,40}`", text)  # commit hashes
        assert "µs per record" not in text and "Tried and not kept" not in text
    assert "docs/benchmarks.md" in README


def test_every_reject_reason_is_documented() -> None:
    from driftline.streams.ingest.contract import REASONS

    contract = _section("Event contract (schema version 1, JSON, Kafka key = `model_id`)")
    assert [r for r in REASONS if f"`{r}`" not in contract] == []
