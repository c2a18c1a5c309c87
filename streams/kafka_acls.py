"""The ACLs driftline expects on a broker with an authorizer, as data and as commands.

Who may do what (``docs/security.md`` explains it; the tests apply exactly these with
Kafka's own ``kafka-acls`` and check what is refused):

* the **worker** principal reads the three input topics, writes driftline's outputs
  (drift events, dead letters, monitor state, retrain requests), reads back its state
  and the drift events (the retrain agent), may create driftline's topics, and owns
  the consumer groups and Faust's internal topics under its app id;
* the **deployer** principal alone writes model updates (a ``deployed`` record resets a
  model's baseline and closes its retrain jobs);
* the **producer** principals (the applications) write interactions and feedback.

Nothing else is granted, and Kafka denies what no ACL allows
(``allow.everyone.if.no.acl.found=false``, the default): no other principal can forge
drift events, overwrite state or announce a deploy.

Run ``python -m driftline.streams.kafka_acls`` to print the commands for other names.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Acl:
    """Allow ``principal`` the ``operations`` on the named resources."""

    principal: str
    operations: tuple[str, ...]
    resource: str  # "topic" | "group"
    names: tuple[str, ...]
    pattern: str = "literal"  # or "prefixed": every name that starts with one of names
    why: str = ""

    def args(self) -> list[str]:
        """The ``kafka-acls --add`` arguments of this grant (no connection options)."""
        out = ["--add", "--allow-principal", self.principal]
        for op in self.operations:
            out += ["--operation", op]
        if self.pattern != "literal":
            out += ["--resource-pattern-type", self.pattern]
        for name in self.names:
            out += [f"--{self.resource}", name]
        return out


@dataclass(frozen=True)
class AclLayout:
    """driftline's grants for one topic prefix and app id (``DRIFTLINE_TOPIC_PREFIX``,
    ``DRIFTLINE_APP_ID``) and the principals that play each part."""

    topic_prefix: str = "driftline"
    app_id: str = "driftline"
    worker: str = "User:driftline-worker"
    deployer: str = "User:driftline-deployer"
    producers: tuple[str, ...] = ("User:app-producer",)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    def grants(self) -> list[Acl]:
        t = self.topic
        inputs = (t("interactions"), t("feedback"), t("model-updates"))
        outputs = (t("drift-events"), t("dead-letters"), t("monitor-state"),
                   t("retrain-requests"))
        acls = [
            Acl(self.worker, ("Read",), "topic",
                (*inputs, t("drift-events"), t("monitor-state")),
                why="the monitor's inputs; the retrain agent reads drift events, the "
                    "monitor restores its state"),
            Acl(self.worker, ("Write",), "topic", outputs,
                why="only the worker writes drift events, dead letters, state and "
                    "retrain requests"),
            Acl(self.worker, ("Create",), "topic", (*inputs, *outputs),
                why="the worker creates missing topics at start (an admin may instead)"),
            Acl(self.worker, ("Read",), "group", (self.app_id,), "prefixed",
                why=f"consumer groups {self.app_id}, {self.app_id}-monitor, "
                    f"{self.app_id}-logger, {self.app_id}-deploys"),
            Acl(self.worker, ("Read", "Write", "Create"), "topic", (f"{self.app_id}-",),
                "prefixed", why="Faust's internal topics (its partition assignor)"),
            Acl(self.deployer, ("Write",), "topic", (t("model-updates"),),
                why="only the deploy pipeline announces new model versions"),
        ]
        acls += [Acl(p, ("Write",), "topic", (t("interactions"), t("feedback")),
                     why="applications publish interactions and feedback")
                 for p in self.producers]
        return acls

    def commands(self) -> list[list[str]]:
        """One ``kafka-acls`` argument list per grant, without connection options."""
        return [acl.args() for acl in self.grants()]

    def script(self, bootstrap: str = "$BOOTSTRAP",
               command_config: str = "admin.properties") -> str:
        """The grants as a shell script of ``kafka-acls.sh`` commands."""
        def q(*words: str) -> str:
            return " ".join(w if w.startswith("$") else shlex.quote(w) for w in words)

        out = []
        for acl in self.grants():
            args = acl.args()
            first = next(i for i, a in enumerate(args) if a in ("--topic", "--group"))
            lines = [q("kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config",
                       command_config), "  " + q(*args[:first])]
            lines += ["  " + q(*args[i:i + 2]) for i in range(first, len(args), 2)]
            out.append(f"# {acl.why}\n" + " \\\n".join(lines))
        return "\n\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    defaults = AclLayout()
    p = argparse.ArgumentParser(prog="python -m driftline.streams.kafka_acls",
                                description="print driftline's kafka-acls commands")
    p.add_argument("--topic-prefix", default=defaults.topic_prefix)
    p.add_argument("--app-id", default=defaults.app_id)
    p.add_argument("--worker", default=defaults.worker, help="the worker's principal")
    p.add_argument("--deployer", default=defaults.deployer, help="the deploy principal")
    p.add_argument("--producer", action="append", help="an application's principal "
                   "(repeatable)")
    p.add_argument("--bootstrap-server", default="$BOOTSTRAP")
    p.add_argument("--command-config", default="admin.properties")
    a = p.parse_args(argv)
    layout = AclLayout(a.topic_prefix, a.app_id, a.worker, a.deployer,
                       tuple(a.producer) if a.producer else defaults.producers)
    sys.stdout.write(layout.script(a.bootstrap_server, a.command_config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
