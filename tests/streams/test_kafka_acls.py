"""The ACL layout as data, its kafka-acls commands, and the docs that show them."""

from __future__ import annotations

from pathlib import Path

from driftline.streams import kafka_acls
from driftline.streams.kafka_acls import AclLayout

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_only_the_worker_writes_outputs_and_only_the_deployer_model_updates() -> None:
    layout = AclLayout()
    writers: dict[str, set[str]] = {}
    for acl in layout.grants():
        if "Write" in acl.operations and acl.pattern == "literal":
            for name in acl.names:
                writers.setdefault(name, set()).add(acl.principal)
    assert writers == {
        "driftline.drift-events": {"User:driftline-worker"},
        "driftline.dead-letters": {"User:driftline-worker"},
        "driftline.monitor-state": {"User:driftline-worker"},
        "driftline.retrain-requests": {"User:driftline-worker"},
        "driftline.model-updates": {"User:driftline-deployer"},
        "driftline.interactions": {"User:app-producer"},
        "driftline.feedback": {"User:app-producer"},
    }
    prefixed = [(a.resource, a.names, a.operations) for a in layout.grants()
                if a.pattern == "prefixed"]
    # Prefixes only for the app id's groups and Faust's own topics: never a topic of driftline.
    assert prefixed == [("group", ("driftline",), ("Read",)),
                        ("topic", ("driftline-",), ("Read", "Write", "Create"))]


def test_commands_follow_the_names() -> None:
    layout = AclLayout(topic_prefix="prod", app_id="dl", worker="User:CN=w",
                       producers=("User:a", "User:b"))
    cmds = layout.commands()
    assert cmds[0][:4] == ["--add", "--allow-principal", "User:CN=w", "--operation"]
    assert cmds[3] == ["--add", "--allow-principal", "User:CN=w", "--operation", "Read",
                       "--resource-pattern-type", "prefixed", "--group", "dl"]
    assert [c[2] for c in cmds[-2:]] == ["User:a", "User:b"]
    assert all(n.startswith(("prod.", "dl")) for c in cmds for i, n in enumerate(c)
               if i and c[i - 1] in ("--topic", "--group"))


def test_the_docs_show_the_commands_exactly(capsys) -> None:  # type: ignore[no-untyped-def]
    assert kafka_acls.main([]) == 0
    script = capsys.readouterr().out
    assert script == AclLayout().script()
    assert script in DOCS.read_text(), "docs/security.md: paste `python -m " \
        "driftline.streams.kafka_acls` output into its ACL block"
