"""A host the runbook works on, as two sides: the read-only `HostView` a step probes, and the
`Host` the session changes on a step's behalf.

A step gets views only: they can run probes (commands whose exit code is an answer and which
change nothing) and nothing else. Only the session, executing a declared `Change`, runs
commands that change a host or writes files there.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from swarmhub.errors import SwarmhubError
from swarmhub.mask import mask_line
from swarmhub.runbook.change import FileWrite

_print_lock = threading.Lock()


class Result(Protocol):
    """What running a command answers (invoke's Result, or a test's canned answer)."""

    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool: ...

    @property
    def failed(self) -> bool: ...


@dataclass
class Answer:
    """A command's answer that did not come from invoke (a canned one, or a timeout)."""

    stdout: str = ""
    stderr: str = ""
    exited: int = 0

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def failed(self) -> bool:
        return not self.ok


@dataclass
class Tally:
    """How many checks found the host as wanted, changed it, or failed."""

    ok: int = 0
    changed: int = 0
    failed: int = 0


def as_root(command: str) -> str:
    return f"sudo -n sh -c {shlex.quote(command)}"


@dataclass
class Host:
    """One host of the deployment, reached over a checked SSH connection: what the session
    runs there, and the tally of what its steps found and did."""

    name: str
    roles: tuple[str, ...]
    connection: Any  # a swarmhub.ssh.VerifiedConnection (or a test's fake)
    tally: Tally = field(default_factory=Tally)
    quiet: bool = False
    # Follow-ups a run cut short left owed here (read when connecting; see session.py).
    pending: list[dict[str, Any]] = field(default_factory=list)

    def say(self, kind: str, message: str) -> None:
        if self.quiet and kind == "ok":
            return
        with _print_lock:
            print(f"[{self.name}] {kind}: {message}", flush=True)

    def failed(self, message: str) -> None:
        self.tally.failed += 1
        self.say("FAILED", message)

    def run(
        self,
        command: str,
        *,
        sudo: bool = True,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run ``command`` (as root by default), output hidden; raise on failure when checking."""
        wrapped = as_root(command) if sudo else command
        result = self.connection.run(
            wrapped, hide=True, warn=True, timeout=timeout, in_stream=False
        )
        if result.exited == -1:
            # Fabric's answer when the connection dropped mid-command (it would reconnect
            # silently at the next one): a probe's answer is unknown too, so both stop here.
            raise SwarmhubError(
                f"{self.name}: the SSH connection dropped during `{_short(mask_line(command))}`: "
                "run again once the host answers (a run cut short converges with one more)"
            )
        if check and result.failed:
            error = (result.stderr.strip() or result.stdout.strip()).splitlines()
            tail = error[-1] if error else f"exit {result.exited}"
            # A command may carry a secret (a swarm join token): the error line never does.
            raise SwarmhubError(
                f"{self.name}: `{_short(mask_line(command))}` failed: {mask_line(tail)}"
            )
        return result

    def probe(self, command: str, *, sudo: bool = True) -> Result:
        """Run a read-only check; its exit code is an answer, never an error."""
        return self.run(command, sudo=sudo, check=False)

    def file_differs(self, path: str, content: bytes, mode: str, owner: str) -> str:
        """'' when ``path`` holds ``content`` with ``mode`` and ``owner``; else what differs
        ('missing', 'content' or 'permissions'). One round trip."""
        meta, digest = parse_file_state(self.probe(file_state_command(path)).stdout)
        if digest is None:
            return "missing"
        if digest != hashlib.sha256(content).hexdigest():
            return "content"
        if meta != [mode.lstrip("0") or "0", owner]:
            return "permissions"
        return ""

    def write(self, file: FileWrite) -> None:
        """Write a file as root: uploaded over SFTP to a private temporary file (never on a
        command line, where a secret would show), installed beside the target and renamed
        over it, so that a run cut short leaves the old file or the new one, never half."""
        tmp = self.run("mktemp", sudo=False).stdout.strip()
        self.connection.put(io.BytesIO(file.content), remote=tmp)
        self.run(atomic_install_command(tmp, file))


def atomic_install_command(tmp: str, file: FileWrite) -> str:
    """Move an uploaded ``tmp`` to ``file.path`` with its mode and owner, atomically."""
    path = shlex.quote(file.path)
    new = shlex.quote(f"{file.path}.swarmhub-new")
    directory = shlex.quote(file.path.rsplit("/", 1)[0] or "/")
    group = file.group or file.owner
    return (
        f"mkdir -p {directory} && install -m {file.mode} -o {file.owner} -g {group} "
        f"{shlex.quote(tmp)} {new} && mv -f {new} {path}; status=$?; "
        f"rm -f {shlex.quote(tmp)}; [ $status -eq 0 ] || rm -f {new}; exit $status"
    )


class Facts(Protocol):
    """Where a view's answers come from: the session's hosts (recorded when asked to)."""

    def probe(self, host: str, command: str, sudo: bool) -> Result: ...

    def file_differs(self, host: str, path: str, content: bytes, mode: str, owner: str) -> str: ...


@dataclass
class HostView:
    """A step's read-only view of a host: its name, its roles, and probes."""

    name: str
    roles: tuple[str, ...]
    _facts: Facts

    def probe(self, command: str, *, sudo: bool = True) -> Result:
        """Run a read-only check on the host; its exit code is an answer, never an error."""
        return self._facts.probe(self.name, command, sudo)

    def file_differs(
        self, path: str, content: str | bytes, mode: str = "0644", owner: str = "root"
    ) -> str:
        """'' when ``path`` holds ``content`` with ``mode`` and ``owner``; else what differs
        ('missing', 'content' or 'permissions')."""
        data = content.encode() if isinstance(content, str) else content
        return self._facts.file_differs(self.name, path, data, mode, owner)

    def read(self, path: str) -> str:
        """A file's content ('' when it is missing or unreadable)."""
        result = self.probe(f"cat {shlex.quote(path)} 2>/dev/null")
        return result.stdout if result.ok else ""


def file_state_command(path: str) -> str:
    """One round trip for a file's mode, owner and SHA-256 (nothing when it is missing)."""
    quoted = shlex.quote(path)
    return f"stat -c '%a %U' {quoted} 2>/dev/null && sha256sum {quoted} 2>/dev/null"


def parse_file_state(output: str) -> tuple[list[str], str | None]:
    """([mode, owner], digest) from file_state_command's output; ([], None) when missing."""
    lines = output.splitlines()
    meta = lines[0].split() if lines else []
    digest = lines[1].split()[0] if len(lines) > 1 and lines[1].strip() else None
    return meta, digest


def _short(command: str, limit: int = 120) -> str:
    return command if len(command) <= limit else command[: limit - 1] + "…"
