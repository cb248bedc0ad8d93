"""The run lock on the hub: one changing swarmhub run at a time, whoever starts it from where.

The lock is ``flock`` on a file in the hub's /run/lock, held by a process on the hub that lives
exactly as long as the run's SSH channel to it: the run keeps the channel open and sends a
heartbeat line every HEARTBEAT_SECONDS; the process ends, and the kernel frees the lock, when
the channel closes (the run ended, was killed, or its connection dropped: sshd closes the
session and the process reads end-of-file) or when no heartbeat came for STALE_SECONDS (a
connection that died without a word, a provisioner that slept). A lock left by a killed run
is therefore never "taken over" by guessing: it is free as soon as nothing holds it. A reboot
of the hub empties /run/lock.

The lock file holds who took it (user@host, pid, command, UTC time) and the pid of the
process on the hub; a second run reads it and stops with one line naming them.
The file is never removed: removing a lock file that another process has open would let two
runs each lock a different file of the same name.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paramiko

from swarmhub.errors import SwarmhubError

LOCK_PATH = "/run/lock/swarmhub-run.lock"
# flock's exit status when the lock is taken (-E): EX_TEMPFAIL, "try again later".
BUSY_EXIT = 75
HEARTBEAT_SECONDS = 20
# Longer than a few missed heartbeats, short enough that a dead run does not block the next
# one for long.
STALE_SECONDS = 90
# How long acquire() waits for the hub's first answer.
ANSWER_TIMEOUT = 30
# The holder text in the lock file is one line of at most this many characters.
HOLDER_LIMIT = 200


def holder_line(
    command: str | None = None,
    *,
    user: str | None = None,
    host: str | None = None,
    pid: int | None = None,
    now: datetime | None = None,
) -> str:
    """Who takes the lock: 'root@provisioner pid 1234 (invoke cluster.all) since 2026-12-01
    11:40:02 UTC'; each part defaults to this process's own."""
    if command is None:
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
    user = user or getpass.getuser()
    host = host or socket.gethostname().split(".")[0]
    pid = os.getpid() if pid is None else pid
    since = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    # One line on the hub and in the error: no control characters, bounded length.
    command = " ".join("".join(c if c.isprintable() else " " for c in command).split())
    if len(command) > 80:
        command = command[:79] + "…"
    line = f"{user}@{host} pid {pid} ({command}) since {since}"
    return line[:HOLDER_LIMIT]


def as_root(command: str) -> str:
    """``command`` run by sh as root, the way Host.run runs every command."""
    return f"sudo -n sh -c {shlex.quote(command)}"


def lock_command(holder: str, path: str = LOCK_PATH, stale_seconds: int = STALE_SECONDS) -> str:
    """Take the lock or say who has it: prints 'locked' and then holds it while heartbeat lines
    come on stdin; or prints 'busy PID HOLDER' and exits BUSY_EXIT."""
    quoted = shlex.quote(path)
    # Runs under flock, which it inherits the locked descriptor from: the file is rewritten
    # in place (same inode, so the lock stays), then bash waits for heartbeats. bash, not sh:
    # dash's read has no timeout; bash is essential on Debian and Ubuntu.
    holding = (
        f'printf "%s %s\\n" "$$" "$1" > {quoted}; echo locked; '
        f"while IFS= read -r -t {stale_seconds} _; do :; done"
    )
    # The holder writes its line just after taking the lock: if we are that quick, wait a
    # second for it rather than show an empty holder.
    busy = f'[ -s {quoted} ] || sleep 1; printf "busy %s\\n" "$(head -n 1 {quoted})"'
    return (
        f"flock -n -E {BUSY_EXIT} {quoted} bash -c {shlex.quote(holding)} swarmhub-run-lock "
        f"{shlex.quote(holder)} || {{ status=$?; [ $status -eq {BUSY_EXIT} ] && {{ {busy}; }}; "
        "exit $status; }"
    )


def lock_state_command(path: str = LOCK_PATH) -> str:
    """A probe for plan mode: prints 'free', or 'busy PID HOLDER' (it takes the lock for an
    instant only, when it is free)."""
    quoted = shlex.quote(path)
    return (
        f"if [ ! -e {quoted} ] || flock -n {quoted} true; then echo free; "
        f'else printf "busy %s\\n" "$(head -n 1 {quoted})"; fi'
    )


@dataclass(frozen=True)
class LockAnswer:
    """The hub's first line: the lock is ours, someone else's, or the command failed."""

    state: str  # "locked", "busy", "free" or "error"
    holder: str = ""
    remote_pid: str = ""
    detail: str = ""


def parse_lock_answer(line: str) -> LockAnswer:
    """The first line of lock_command's or lock_state_command's output."""
    line = line.strip()
    if line in ("locked", "free"):
        return LockAnswer(line)
    if line.startswith("busy"):
        pid, _, holder = line.removeprefix("busy").strip().partition(" ")
        if not pid.isdigit():  # an empty or foreign file: nothing to name
            return LockAnswer("busy", holder="an unknown run (the lock file says nothing)")
        return LockAnswer("busy", holder=holder.strip(), remote_pid=pid)
    return LockAnswer("error", detail=line)


def busy_message(hub: str, answer: LockAnswer) -> str:
    """The one line a second run stops with."""
    end = (
        f"; if it is stuck, end it on {hub}: sudo kill {answer.remote_pid}"
        if answer.remote_pid
        else ""
    )
    return (
        f"{hub}: another swarmhub run holds the lock: {answer.holder}; wait for it to end "
        f"(a killed run frees it within {STALE_SECONDS} s){end}"
    )


class RunLock:
    """The run lock on one hub, held through an SSH channel of a Fabric connection."""

    def __init__(self, hub: str, channel: Any, heartbeat_seconds: float) -> None:
        self.hub = hub
        self.channel = channel
        self._stop = threading.Event()
        self._lost = False
        self._heartbeat = threading.Thread(
            target=self._beat, args=(heartbeat_seconds,), name=f"run-lock-{hub}", daemon=True
        )
        self._heartbeat.start()

    @classmethod
    def acquire(
        cls,
        connection: Any,
        holder: str,
        *,
        hub: str | None = None,
        path: str = LOCK_PATH,
        sudo: bool = True,
        stale_seconds: int = STALE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        timeout: float = ANSWER_TIMEOUT,
    ) -> RunLock:
        """Take the lock on ``connection``'s host, or raise SwarmhubError naming its holder."""
        hub = hub or connection.original_host
        command = lock_command(holder, path, stale_seconds)
        try:
            # Fabric's own way to a new channel on the open connection (it opens it first).
            channel = connection.create_session()
            channel.settimeout(timeout)
            channel.exec_command(as_root(command) if sudo else command)
            line = channel.makefile("r").readline()
        except (OSError, EOFError, paramiko.SSHException) as error:  # timeouts are OSErrors
            raise SwarmhubError(f"{hub}: could not take the run lock: {error}") from None
        answer = parse_lock_answer(line)
        if answer.state == "locked":
            channel.settimeout(None)
            return cls(hub, channel, heartbeat_seconds)
        stderr = _stderr(channel)
        channel.close()
        if answer.state == "busy":
            raise SwarmhubError(busy_message(hub, answer))
        raise SwarmhubError(
            f"{hub}: could not take the run lock ({path}): {stderr or answer.detail or 'no answer'}"
        )

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.channel.sendall(b"\n")
            except Exception:  # the channel or the connection is gone: the lock with it
                self._lost = True
                return

    @property
    def held(self) -> bool:
        """The lock is still ours: the channel is open and the process on the hub alive."""
        return not (self._lost or self.channel.closed or self.channel.exit_status_ready())

    def ensure_held(self) -> None:
        """Raise SwarmhubError when the lock was lost (call it before each changing step)."""
        if not self.held:
            raise SwarmhubError(
                f"{self.hub}: this run lost its run lock (its connection to {self.hub} dropped, "
                f"or stalled for over {STALE_SECONDS} s): stopping before the next step; run "
                "again"
            )

    def release(self) -> None:
        """Free the lock: closing the channel ends the process on the hub, and its flock."""
        self._stop.set()
        # Already gone with the connection: nothing is held either way.
        with contextlib.suppress(Exception):
            self.channel.close()
        self._heartbeat.join(timeout=5)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _stderr(channel: Any) -> str:
    """The last line the hub wrote on stderr, if it has written any yet."""
    try:
        if not channel.recv_stderr_ready():
            return ""
        lines = channel.recv_stderr(4096).decode(errors="replace").strip().splitlines()
    except Exception:
        return ""
    return lines[-1] if lines else ""


_held: dict[str, tuple[RunLock, int]] = {}
_held_guard = threading.Lock()


@contextmanager
def run_lock(connection: Any, holder: str | None = None, **options: Any) -> Iterator[RunLock]:
    """Hold the run lock on ``connection``'s host for the ``with`` block.

    Nested uses in one process (a task that runs steps through another) share the one lock:
    a second flock from the same run would find the first and refuse.
    """
    hub = options.pop("hub", None) or connection.original_host
    with _held_guard:
        if hub in _held:
            lock, depth = _held[hub]
            _held[hub] = (lock, depth + 1)
        else:
            lock = RunLock.acquire(connection, holder or holder_line(), hub=hub, **options)
            _held[hub] = (lock, 1)
    try:
        yield lock
    finally:
        with _held_guard:
            lock, depth = _held[hub]
            if depth > 1:
                _held[hub] = (lock, depth - 1)
            else:
                del _held[hub]
                lock.release()
