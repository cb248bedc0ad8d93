"""The run lock: its commands as exact strings, its answers, and the command itself run in
local shells the way sshd runs it on the hub (two at once, the first one's channel closed,
stalled or killed)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from swarmhub.errors import SwarmhubError
from swarmhub.runbook import lock

HOLDER = "root@prov pid 1234 (invoke cluster.all) since 2026-12-01 11:40:02 UTC"


def test_holder_line_names_user_host_pid_command_and_utc_time() -> None:
    when = datetime(2026, 12, 1, 11, 40, 2, tzinfo=UTC)
    line = lock.holder_line("invoke cluster.all", user="root", host="prov", pid=1234, now=when)
    assert line == HOLDER


def test_holder_line_is_one_bounded_line() -> None:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    line = lock.holder_line("invoke\ncluster.all " + "x" * 300, user="u", host="h", pid=1, now=when)
    assert "\n" not in line
    assert "(invoke cluster.all xxx" in line
    assert len(line) <= lock.HOLDER_LIMIT


def test_holder_line_defaults_to_this_process() -> None:
    line = lock.holder_line("invoke cluster.all")
    assert f" pid {os.getpid()} (invoke cluster.all) since " in line
    assert line.endswith(" UTC")


def test_lock_command_exact() -> None:
    assert lock.lock_command(HOLDER) == (
        "flock -n -E 75 /run/lock/swarmhub-run.lock bash -c "
        '\'printf "%s %s\\n" "$$" "$1" > /run/lock/swarmhub-run.lock; echo locked; '
        "while IFS= read -r -t 90 _; do :; done' swarmhub-run-lock "
        "'root@prov pid 1234 (invoke cluster.all) since 2026-12-01 11:40:02 UTC' "
        "|| { status=$?; [ $status -eq 75 ] && { [ -s /run/lock/swarmhub-run.lock ] || sleep 1; "
        'printf "busy %s\\n" "$(head -n 1 /run/lock/swarmhub-run.lock)"; }; exit $status; }'
    )


def test_lock_command_quotes_a_holder_with_quotes() -> None:
    command = lock.lock_command("it's me (invoke x)", "/tmp/l", 5)
    assert "swarmhub-run-lock 'it'\"'\"'s me (invoke x)' ||" in command
    assert "read -r -t 5 _" in command


def test_lock_state_command_exact() -> None:
    assert lock.lock_state_command() == (
        "if [ ! -e /run/lock/swarmhub-run.lock ] || flock -n /run/lock/swarmhub-run.lock true; "
        'then echo free; else printf "busy %s\\n" "$(head -n 1 /run/lock/swarmhub-run.lock)"; fi'
    )


def test_as_root_is_how_host_run_wraps_a_command() -> None:
    assert lock.as_root("echo 'a b'") == "sudo -n sh -c 'echo '\"'\"'a b'\"'\"''"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("locked\n", lock.LockAnswer("locked")),
        ("free", lock.LockAnswer("free")),
        (f"busy 5678 {HOLDER}\n", lock.LockAnswer("busy", holder=HOLDER, remote_pid="5678")),
        ("busy ", lock.LockAnswer("busy", holder="an unknown run (the lock file says nothing)")),
        ("", lock.LockAnswer("error", detail="")),
        (
            "sudo: a password is required",
            lock.LockAnswer("error", detail="sudo: a password is required"),
        ),
    ],
)
def test_parse_lock_answer(line: str, expected: lock.LockAnswer) -> None:
    assert lock.parse_lock_answer(line) == expected


def test_busy_message_is_the_one_line_a_second_run_stops_with() -> None:
    answer = lock.parse_lock_answer(f"busy 5678 {HOLDER}")
    assert lock.busy_message("sam-hub", answer) == (
        "sam-hub: another swarmhub run holds the lock: root@prov pid 1234 (invoke cluster.all) "
        "since 2026-12-01 11:40:02 UTC; wait for it to end (a killed run frees it within 90 s); "
        "if it is stuck, end it on sam-hub: sudo kill 5678"
    )


# --- the command itself, in local shells (what sshd runs on the hub, without sudo) ---

needs_tools = pytest.mark.skipif(
    not (shutil.which("flock") and shutil.which("bash")), reason="needs flock and bash"
)


class Holder:
    """One lock_command in a local shell; its stdin stands for the run's SSH channel."""

    def __init__(self, path: Path, holder: str, stale: int = 90) -> None:
        self.process = subprocess.Popen(
            ["sh", "-c", lock.lock_command(holder, str(path), stale)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.first_line = self.process.stdout.readline()

    def close_channel(self) -> None:
        self.process.stdin.close()

    def wait(self) -> int:
        return self.process.wait(timeout=10)


def take(path: Path, holder: str, stale: int = 90) -> Holder:
    taken = Holder(path, holder, stale)
    assert taken.first_line == "locked\n"
    return taken


@needs_tools
def test_a_second_run_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    first = take(path, HOLDER)
    second = Holder(path, "someone else")
    assert second.wait() == lock.BUSY_EXIT
    answer = lock.parse_lock_answer(second.first_line)
    assert answer.state == "busy" and answer.holder == HOLDER
    assert answer.remote_pid.isdigit()
    first.close_channel()
    assert first.wait() == 0


@needs_tools
def test_the_lock_is_free_once_the_holders_channel_closes(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    first = take(path, "first")
    first.close_channel()  # sshd does this when the provisioner dies or its connection drops
    first.wait()
    second = take(path, "second")
    pid, holder = path.read_text().split(" ", 1)
    assert pid.isdigit() and holder == "second\n"
    second.close_channel()
    second.wait()


@needs_tools
def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    """The process named in the busy line is the one to kill: the lock goes with it."""
    path = tmp_path / "run.lock"
    first = take(path, "first")
    answer = lock.parse_lock_answer(Holder(path, "second").first_line)
    os.kill(int(answer.remote_pid), signal.SIGKILL)
    first.wait()
    take(path, "third").close_channel()


@needs_tools
def test_without_heartbeats_the_lock_frees_itself(tmp_path: Path) -> None:
    """A channel that stays open but silent (a stalled connection) holds it stale seconds."""
    path = tmp_path / "run.lock"
    first = take(path, "silent", stale=1)
    started = time.monotonic()
    assert first.wait() == 0
    assert time.monotonic() - started < 5
    take(path, "next").close_channel()


@needs_tools
def test_heartbeats_keep_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    first = take(path, "beating", stale=1)
    for _ in range(5):
        first.process.stdin.write("\n")
        first.process.stdin.flush()
        time.sleep(0.3)
    assert first.process.poll() is None
    assert Holder(path, "second").wait() == lock.BUSY_EXIT
    first.close_channel()
    first.wait()


@needs_tools
def test_lock_state_probe(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"

    def state() -> str:
        out = subprocess.run(
            ["sh", "-c", lock.lock_state_command(str(path))], capture_output=True, text=True
        )
        return out.stdout

    assert state() == "free\n"
    assert not path.exists()  # the probe does not make the file
    first = take(path, HOLDER)
    assert lock.parse_lock_answer(state()).holder == HOLDER
    first.close_channel()
    first.wait()
    assert state() == "free\n"


# --- RunLock on a fake channel ---


class FakeChannel:
    """A paramiko channel's surface that RunLock uses."""

    def __init__(self, answer: str, stderr: str = "") -> None:
        self.answer = answer
        self.stderr = stderr
        self.command = ""
        self.sent: list[bytes] = []
        self.closed = False
        self.exited = False

    def settimeout(self, _timeout: float | None) -> None:
        pass

    def exec_command(self, command: str) -> None:
        self.command = command

    def makefile(self, _mode: str) -> SimpleNamespace:
        return SimpleNamespace(readline=lambda: self.answer)

    def recv_stderr_ready(self) -> bool:
        return bool(self.stderr)

    def recv_stderr(self, _n: int) -> bytes:
        return self.stderr.encode()

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError("Socket is closed")
        self.sent.append(data)

    def exit_status_ready(self) -> bool:
        return self.exited

    def close(self) -> None:
        self.closed = True


def connection_with(channel: FakeChannel) -> SimpleNamespace:
    return SimpleNamespace(original_host="sam-hub", create_session=lambda: channel)


def test_acquire_runs_the_lock_command_as_root_and_beats() -> None:
    channel = FakeChannel("locked\n")
    held = lock.RunLock.acquire(connection_with(channel), HOLDER, heartbeat_seconds=0.01)
    assert channel.command == lock.as_root(lock.lock_command(HOLDER))
    deadline = time.monotonic() + 5
    while not channel.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert channel.sent[0] == b"\n"
    assert held.held
    held.ensure_held()
    held.release()
    assert channel.closed and not held.held


def test_acquire_refuses_with_the_holders_line() -> None:
    channel = FakeChannel(f"busy 5678 {HOLDER}\n")
    with pytest.raises(SwarmhubError) as error:
        lock.RunLock.acquire(connection_with(channel), "me")
    assert str(error.value) == lock.busy_message(
        "sam-hub", lock.LockAnswer("busy", holder=HOLDER, remote_pid="5678")
    )
    assert channel.closed


def test_acquire_says_why_the_command_failed() -> None:
    channel = FakeChannel("", stderr="sudo: a password is required\n")
    with pytest.raises(
        SwarmhubError,
        match=r"sam-hub: could not take the run lock "
        r"\(/run/lock/swarmhub-run.lock\): sudo: a password is required",
    ):
        lock.RunLock.acquire(connection_with(channel), "me")


def test_a_timed_out_answer_is_one_line() -> None:
    def no_answer() -> str:
        raise TimeoutError("timed out")

    channel = FakeChannel("")
    channel.makefile = lambda _mode: SimpleNamespace(readline=no_answer)
    with pytest.raises(SwarmhubError, match="sam-hub: could not take the run lock: timed out"):
        lock.RunLock.acquire(connection_with(channel), "me")


def test_a_lost_lock_stops_the_run() -> None:
    channel = FakeChannel("locked\n")
    held = lock.RunLock.acquire(connection_with(channel), HOLDER, heartbeat_seconds=60)
    channel.exited = True  # the process on the hub ended: no heartbeat for STALE_SECONDS
    with pytest.raises(SwarmhubError, match="sam-hub: this run lost its run lock"):
        held.ensure_held()
    held.release()


def test_run_lock_nests_within_one_process() -> None:
    channels: list[FakeChannel] = []

    def session() -> FakeChannel:
        channels.append(FakeChannel("locked\n"))
        return channels[-1]

    connection = SimpleNamespace(original_host="sam-hub", create_session=session)
    with lock.run_lock(connection, HOLDER) as outer:
        with lock.run_lock(connection, HOLDER) as inner:
            assert inner is outer
        assert not channels[0].closed
    assert len(channels) == 1 and channels[0].closed


def test_run_lock_releases_when_the_block_fails() -> None:
    channel = FakeChannel("locked\n")
    with pytest.raises(RuntimeError), lock.run_lock(connection_with(channel), HOLDER):
        raise RuntimeError("a step failed")
    assert channel.closed
    assert not lock._held


def test_heartbeat_failure_marks_the_lock_lost() -> None:
    channel = FakeChannel("locked\n")
    held = lock.RunLock.acquire(connection_with(channel), HOLDER, heartbeat_seconds=0.01)
    channel.closed = True
    deadline = time.monotonic() + 5
    while held._heartbeat.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not held.held
    held.release()


def test_threads_are_not_left_behind() -> None:
    before = threading.active_count()
    channel = FakeChannel("locked\n")
    lock.RunLock.acquire(connection_with(channel), HOLDER, heartbeat_seconds=0.01).release()
    assert threading.active_count() == before
