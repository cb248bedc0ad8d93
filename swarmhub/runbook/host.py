"""A host the runbook works on: its connection, its roles, and a record of what a step did.

Every step speaks through `Host`: ``host.ok("…")`` when a probe found the wanted state,
``host.changed("…")`` after closing a gap. In plan mode (``--plan``) ``host.change`` only
records what *would* change and runs nothing.
"""

from __future__ import annotations

import io
import shlex
import threading
from dataclasses import dataclass, field
from typing import Any

from invoke.runners import Result

from swarmhub.errors import SwarmhubError
from swarmhub.mask import mask_line

_print_lock = threading.Lock()


@dataclass
class Tally:
    """How many checks found the host as wanted, changed it, or failed."""

    ok: int = 0
    changed: int = 0
    failed: int = 0


@dataclass
class Host:
    """One host of the deployment, reached over a checked SSH connection."""

    name: str
    roles: tuple[str, ...]
    connection: Any  # a swarmhub.ssh.VerifiedConnection
    plan: bool = False
    tally: Tally = field(default_factory=Tally)
    quiet: bool = False

    # --- speaking ---

    def say(self, kind: str, message: str) -> None:
        if self.quiet and kind == "ok":
            return
        with _print_lock:
            print(f"[{self.name}] {kind}: {message}", flush=True)

    def ok(self, message: str) -> bool:
        """The probe found the wanted state: nothing to do. Returns False (not changed)."""
        self.tally.ok += 1
        self.say("ok", message)
        return False

    def changed(self, message: str) -> bool:
        """Something was changed (or, in plan mode, would be). Returns True."""
        self.tally.changed += 1
        self.say("would change" if self.plan else "changed", message)
        return True

    def failed(self, message: str) -> None:
        self.tally.failed += 1
        self.say("FAILED", message)

    # --- running commands ---

    def run(
        self,
        command: str,
        *,
        sudo: bool = True,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run ``command`` (as root by default), output hidden; raise on failure when checking.

        Probes use this in plan mode too: they must not change anything.
        """
        if sudo:
            command = f"sudo -n sh -c {shlex.quote(command)}"
        result = self.connection.run(
            command, hide=True, warn=True, timeout=timeout, in_stream=False
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

    def change(self, message: str, command: str) -> bool:
        """Close a gap with ``command`` (skipped in plan mode) and report ``message``."""
        if not self.plan:
            self.run(command)
        return self.changed(message)

    def put_text(self, path: str, content: str | bytes, mode: str, owner: str = "root") -> None:
        """Write a file as root: uploaded over SFTP to a private temporary file, then moved into
        place (never on a command line, where a secret would show)."""
        data = content.encode() if isinstance(content, str) else content
        tmp = self.run("mktemp", sudo=False).stdout.strip()
        self.connection.put(io.BytesIO(data), remote=tmp)
        directory = shlex.quote(path.rsplit("/", 1)[0] or "/")
        self.run(
            f"mkdir -p {directory} && install -m {mode} -o {owner} -g {owner} {shlex.quote(tmp)} "
            f"{shlex.quote(path)}; status=$?; rm -f {shlex.quote(tmp)}; exit $status"
        )


def _short(command: str, limit: int = 120) -> str:
    command = command.replace("sudo -n sh -c ", "")
    return command if len(command) <= limit else command[: limit - 1] + "…"
