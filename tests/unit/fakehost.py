"""A fake host for the steps' tests: it answers probes from canned facts, records what the
session executes there, and fails on any probe it was not given (pyinfra's test shape).

A step only probes (through its views); the session alone executes changes. So on a fake
host, everything `run` or `write` receives is a change the session executed, and the tests
compare it with the changes the step declared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmhub.mask import mask_line
from swarmhub.runbook.change import Change, FileWrite, Outcome
from swarmhub.runbook.host import Answer, Host
from swarmhub.runbook.session import (
    PENDING_DIR,
    Session,
    Step,
    StepContext,
    mark_pending_command,
    owes,
    pending_record,
)
from swarmhub.settings import Settings

FACTS_DIR = Path(__file__).resolve().parent / "facts"
# Content digests (image tags, config labels, file hashes) change with every edit of what a
# step renders; the facts do not depend on them.
_DIGEST = re.compile(r"\b(?:[0-9a-f]{64}|[0-9a-f]{16}|[0-9a-f]{12})\b")


def normalize(text: str, *, secrets: bool = True) -> str:
    """``text`` with digests (and, in commands, secrets) replaced, as fixtures keep them."""
    return _DIGEST.sub("<digest>", mask_line(text) if secrets else text)


class UndeclaredProbe(AssertionError):
    """A step asked a host something its facts do not answer."""


@dataclass
class FakeHost(Host):
    """A host whose answers are canned: ``probes`` maps a command to its answers (in order;
    the last one repeats) and ``files`` maps a path to what differs ('' when as wanted)."""

    answers: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    executed: list[tuple[str, str]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def probe(self, command: str, *, sudo: bool = True) -> Answer:
        key = normalize(command)
        self.asked.append(key)
        queue = self.answers.get(key)
        if not queue:
            raise UndeclaredProbe(f"{self.name}: no fact for the probe {key!r}")
        exited, stdout = queue.pop(0) if len(queue) > 1 else queue[0]
        return Answer(stdout=stdout, exited=exited)

    def file_differs(self, path: str, content: bytes, mode: str, owner: str) -> str:
        self.asked.append(f"file {path}")
        queue = self.files.get(path)
        if not queue:
            raise UndeclaredProbe(f"{self.name}: no fact for the file {path}")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def run(self, command: str, **_: Any) -> Answer:
        self.executed.append(("run", normalize(command)))
        return Answer()

    def write(self, file: FileWrite) -> None:
        self.executed.append(("write", file.path))


def fake_hosts(settings: Settings, probes: Iterable[dict[str, Any]]) -> dict[str, FakeHost]:
    """A fake host per host of the env file, answering ``probes`` (a fixture's)."""
    hosts = {name: FakeHost(name, roles, connection=None) for name, roles in settings.hosts.items()}
    for probe in probes:
        host = hosts[probe["host"]]
        if "file" in probe:
            host.files.setdefault(probe["file"], []).append(probe["differs"])
        else:
            answer = (probe["exit"], probe["stdout"])
            host.answers.setdefault(normalize(probe["command"]), []).append(answer)
    return hosts


@dataclass
class Run:
    """What a step declared and what the session executed, on fake hosts."""

    declared: list[tuple[str, Change]]
    hosts: dict[str, FakeHost]
    session: Session
    step: str

    def messages(self) -> list[list[str]]:
        return [[host, normalize(change.message, secrets=False)] for host, change in self.declared]

    def executed(self) -> list[tuple[str, str, str]]:
        return [(name, *item) for name, h in self.hosts.items() for item in h.executed]


class DeclaringSession(Session):
    """A session that also keeps every change its steps declared, in order."""

    declared: list[tuple[str, Change]]

    def execute(self, change: Change, origin: Host, context: StepContext) -> Outcome:
        self.declared.append((change.host or origin.name, change))
        return super().execute(change, origin, context)


def run_step(
    step: Step,
    settings: Settings,
    host: str,
    hosts: dict[str, FakeHost],
    *,
    plan: bool,
    restart_nodes: bool = False,
) -> Run:
    """Run ``step`` on ``host`` of ``hosts`` (fakes) in plan or apply mode."""
    session = DeclaringSession(
        settings,
        plan=plan,
        quiet=True,
        restart_nodes=restart_nodes,
        opener=lambda _settings, name: hosts[name],
    )
    session.declared = []
    session.run_step(step, [host])
    return Run(session.declared, hosts, session, step.name)


def expected_execution(run: Run) -> list[tuple[str, str, str]]:
    """What the session must have executed for the declared changes: per host, each change's
    files, then its commands (and, for a restart on a node, the pause around it)."""
    wanted: dict[str, list[tuple[str, str]]] = {name: [] for name in run.hosts}
    hub = run.session.settings.hub_host
    for host, change in run.declared:
        pause = bool(change.restarts) and "node" in run.hosts[host].roles
        paused = pause and _was_active(run.hosts[hub], host)
        if paused:
            wanted[hub].append(
                ("run", f"docker node update --availability pause {host} >/dev/null")
            )
        record = pending_record(change, run.step) if owes(change) else None
        if record:
            wanted[host].append(("run", normalize(mark_pending_command(record))))
        wanted[host] += [("write", f.path) for f in change.files]
        wanted[host] += [("run", normalize(c)) for c in change.commands]
        if record:
            wanted[host].append(("run", normalize(f"rm -f {PENDING_DIR}/{record['id']}.json")))
        if paused:
            wanted[hub].append(
                ("run", f"docker node update --availability active {host} >/dev/null")
            )
    return [(name, *item) for name, items in wanted.items() for item in items]


def _was_active(hub: FakeHost, node: str) -> bool:
    key = normalize(f"docker node inspect --format '{{{{.Spec.Availability}}}}' {node}")
    answers = hub.answers.get(key)
    return bool(answers) and answers[0] == (0, "active\n")


def load_fixture(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def with_tags(fixture: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The fixture with its recorded image tags ("tags": name -> tag, when it has them) made
    this machine's: a tag hashes the extra CAs' content, which differs between machines."""
    from swarmhub.steps.images import current_tags

    current = current_tags(settings)
    recorded = fixture.get("tags", {})
    text = json.dumps({k: v for k, v in fixture.items() if k != "tags"})
    for name, tag in recorded.items():
        if name in current and tag != current[name]:
            # Not \b: in the JSON text a tag may follow an escaped newline's "n".
            text = re.sub(rf"(?<![0-9a-f]){tag}(?![0-9a-f])", current[name], text)
    return json.loads(text)


class _FakeFacts:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def probe(self, host: str, command: str, sudo: bool) -> Answer:
        return self.host.probe(command, sudo=sudo)

    def file_differs(self, host: str, path: str, content: bytes, mode: str, owner: str) -> str:
        return self.host.file_differs(path, content, mode, owner)


def view_of(host: FakeHost) -> Any:
    """A step's read-only view of a fake host (for a step's helpers, without a session)."""
    from swarmhub.runbook.host import HostView

    return HostView(host.name, host.roles, _FakeFacts(host))


def declared(body: Any, *, applied: bool = True) -> list[Any]:
    """Every item a step's generator (or one of its helpers) yields, each change answered as
    applied (or, with ``applied`` False, as in plan mode)."""
    items, outcome = [], None
    try:
        while True:
            item = body.send(outcome)
            items.append(item)
            outcome = Outcome(applied, ("",) * len(getattr(item, "commands", ())))
    except StopIteration:
        return items


def answering(name: str, roles: tuple[str, ...], answers: dict[str, str], files: dict[str, str]):
    """A fake host answering each probe containing a key of ``answers`` with its text (exit 0)
    and each file of ``files`` with what differs."""

    class Matching(FakeHost):
        def probe(self, command: str, *, sudo: bool = True) -> Answer:
            self.asked.append(command)
            for key, text in answers.items():
                if key in command:
                    return Answer(stdout=text)
            raise UndeclaredProbe(f"{self.name}: no fact for the probe {command!r}")

    return Matching(name, roles, connection=None, files={p: [w] for p, w in files.items()})
