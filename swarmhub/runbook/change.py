"""What a step says about a host: the wanted state is there (`Ok`), or here is a `Change` that
closes the gap — its message, the commands and file writes, and what follows it.

A step never changes a host itself. It is a generator over a read-only view of the host that
yields these; the session executes the changes in apply mode and only lists them in plan
mode (pyinfra's shape), so that plan and apply cannot disagree about what a run does.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True)
class FileWrite:
    """A file the change writes: uploaded beside ``path`` and renamed into place (a run cut
    short never leaves it half-written)."""

    path: str
    content: bytes
    mode: str = "0644"
    owner: str = "root"
    group: str = ""  # empty: the owner's name

    @staticmethod
    def of(path: str, content: str | bytes, mode: str = "0644", owner: str = "root") -> FileWrite:
        data = content.encode() if isinstance(content, str) else content
        return FileWrite(path, data, mode, owner)


@dataclass(frozen=True)
class Wait:
    """A follow-up of a change: poll ``command`` until it succeeds ("then wait for the hub to
    answer"); on timeout, the step fails with ``explain``'s output (the last log lines)."""

    message: str
    command: str
    timeout: float = 120
    interval: float = 1.0
    sudo: bool = True
    explain: str = ""


@dataclass(frozen=True)
class Change:
    """A change of a host: ``message`` says what, ``files`` are written first, then
    ``commands`` run in order (as root), then the ``then`` waits.

    ``host`` names another host than the step's own (the storage host's exports from the
    homes mount step): plan shows the change there. ``restarts`` names what the change
    restarts ("Docker", "the homes mount") where students' servers may run: the session
    counts the servers that would stop, says so, and applies such changes one node at a time
    (the node taking no new servers meanwhile) or refuses them.
    """

    message: str
    commands: tuple[str, ...] = ()
    files: tuple[FileWrite, ...] = ()
    then: tuple[Wait, ...] = ()
    host: str = ""
    restarts: str = ""
    # Its commands follow up its files (a reload, a restart) in a way the next run's probes
    # cannot see: the session records them on the host until they ran, so that a run cut
    # short between the files and the commands still runs them next time. False where the
    # result is a fact of its own (an image built, a commit published).
    follow_up: bool = True

    def __post_init__(self) -> None:
        # Accept lists for convenience; keep the dataclass hashable and immutable.
        for name in ("commands", "files", "then"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class Ok:
    """The probe found the wanted state: nothing to do."""

    message: str


@dataclass(frozen=True)
class Later:
    """A fact that exists only after an earlier change of this run (the compose version after
    the install, the join token after `swarm init`): plan says so instead of guessing."""

    message: str


@dataclass(frozen=True)
class Note:
    """A line for the person watching (a build takes minutes), neither ok nor a change."""

    message: str


@dataclass(frozen=True)
class Outcome:
    """What the session sends back into the step after a change: whether it was applied
    (False in plan mode) and the standard output of each of its commands."""

    applied: bool
    outputs: tuple[str, ...] = field(default=())

    @property
    def output(self) -> str:
        return self.outputs[-1] if self.outputs else ""


Item: TypeAlias = Change | Ok | Later | Note
# A step's body (and every helper it yields from): items out, outcomes in, a result at the end.
Steps: TypeAlias = Generator[Item, Outcome | None, Any]
