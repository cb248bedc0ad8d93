"""The run lock over real SSH: OpenSSH's sshd on the loopback, swarmhub's own connections.

No sandbox is needed: the test starts an sshd of its own on 127.0.0.1 (the one on PATH,
/usr/sbin/sshd, or the executable SWARMHUB_TEST_SSHD names) and skips when there is none.
What it proves is what the lock relies on: sshd ends the session when the run's process dies
(SIGKILL: its socket closes) and the process on the host then frees the flock; a run that
stalls (SIGSTOP: the socket stays open, the heartbeats stop) loses the lock after
stale_seconds, and learns it when it wakes up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmhub import ssh
from swarmhub.errors import SwarmhubError
from swarmhub.runbook.lock import LOCK_PATH, RunLock

pytestmark = pytest.mark.e2e

# SWARMHUB_TEST_LOCK_HOST and SWARMHUB_TEST_LOCK_SSH_CONFIG name a real hub instead (a
# sandbox hub, say: its sudo, its /run/lock); no run of swarmhub may be going on there.
TARGET_HOST = os.environ.get("SWARMHUB_TEST_LOCK_HOST")
HOST = TARGET_HOST or "lock-hub"
# The lock file of the test's own sshd: this machine's /run/lock is left alone.
LOCK_FILE = LOCK_PATH if TARGET_HOST else f"/tmp/swarmhub-lock-test-{os.getpid()}.lock"
# A sudo for the test's sshd sessions: the lock runs `sudo -n sh -c …` as on a real hub; the
# test's sshd runs as the test's user already.
FAKE_SUDO = '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n'


def find_sshd() -> str | None:
    named = os.environ.get("SWARMHUB_TEST_SSHD")
    if named:
        return named
    return shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def as_root_without_setup(command: list[str], folder: Path) -> list[str]:
    """``command`` in a mount namespace of its own: sshd started as root wants its
    privilege-separation user and /run/sshd, which the machine need not have; they exist
    there only, not on the machine."""
    passwd = folder / "passwd"
    passwd.write_text(
        Path("/etc/passwd").read_text() + "sshd:x:64999:65534::/run/sshd:/usr/sbin/nologin\n"
    )
    setup = (
        f"mount --bind {passwd} /etc/passwd && mount -t tmpfs tmpfs /run && "
        'mkdir -m 755 /run/sshd && exec "$@"'
    )
    return ["unshare", "--mount", "sh", "-c", setup, "sh", *command]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An sshd on the loopback and an ssh_config naming it HOST; yields the ssh_config."""
    if TARGET_HOST:
        yield Path(os.environ["SWARMHUB_TEST_LOCK_SSH_CONFIG"])
        return
    sshd = find_sshd()
    if not sshd:
        pytest.skip("no sshd (set SWARMHUB_TEST_SSHD to one)")
    if not (shutil.which("flock") and shutil.which("bash")):
        pytest.skip("needs flock and bash")
    folder = tmp_path_factory.mktemp("lock-hub")
    host_key = folder / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    client_key = folder / "client_ed25519"
    ssh.ensure_keypair(client_key, "lock-test")
    (folder / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text(FAKE_SUDO)
    (bin_dir / "sudo").chmod(0o755)
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"SetEnv PATH={bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
    command = [sshd, "-D", "-e", "-f", str(folder / "sshd_config")]
    if os.geteuid() == 0:
        command = as_root_without_setup(command, folder)
    with open(folder / "sshd.log", "w") as log:
        server = subprocess.Popen(command, stderr=log)
    entry = ssh.SshHost(
        name=HOST,
        address="127.0.0.1",
        user=os.environ.get("USER") or subprocess.getoutput("id -un"),
        port=port,
        identity_file=client_key,
        host_key=host_key.with_suffix(".pub").read_text().strip(),
    )
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(ssh.render_known_hosts([entry]))
    config = folder / "ssh_config"
    config.write_text(ssh.render_ssh_config([entry], known_hosts, "lock test"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(f"sshd did not start: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.1)
    yield config
    server.terminate()
    server.wait(timeout=10)
    Path(LOCK_FILE).unlink(missing_ok=True)


def connect(config: Path) -> ssh.VerifiedConnection:
    connection = ssh.connect(HOST, ssh_config=config)
    connection.open()
    return connection


# A run holding the lock in a process of its own, so that the test can kill or stop it; it
# says "held" once it has the lock and "lost" when it wakes up without it.
HOLDER_SCRIPT = """
import sys, time
from swarmhub import ssh
from swarmhub.runbook.lock import RunLock
connection = ssh.connect(sys.argv[2], ssh_config=sys.argv[1])
held = RunLock.acquire(connection, "tester@prov pid 1 (invoke cluster.all) since now",
                       path=sys.argv[4], stale_seconds=int(sys.argv[3]),
                       heartbeat_seconds=0.5)
print("held", flush=True)
while held.held:
    time.sleep(0.2)
print("lost", flush=True)
"""


def start_holder(config: Path, stale_seconds: int = 90) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(config), HOST, str(stale_seconds), LOCK_FILE],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "held\n"
    return process


def acquire_within(config: Path, seconds: float) -> tuple[RunLock, float]:
    """Take the lock, trying again until ``seconds`` have passed; (lock, seconds it took)."""
    started = time.monotonic()
    connection = connect(config)
    while True:
        try:
            return RunLock.acquire(
                connection, "next run", path=LOCK_FILE
            ), time.monotonic() - started
        except SwarmhubError as error:
            if "holds the lock" not in str(error) or time.monotonic() - started > seconds:
                raise
            time.sleep(0.2)


def test_a_second_run_stops_with_one_line_naming_the_first(hub: Path) -> None:
    first = RunLock.acquire(
        connect(hub), "tester@prov pid 1234 (invoke cluster.all) since X", path=LOCK_FILE
    )
    try:
        with pytest.raises(SwarmhubError) as refused:
            RunLock.acquire(connect(hub), "second", path=LOCK_FILE)
        line = str(refused.value)
        assert "\n" not in line
        assert line.startswith(
            f"{HOST}: another swarmhub run holds the lock: tester@prov pid 1234 "
            "(invoke cluster.all) since X; wait for it to end"
        )
        assert f"end it on {HOST}: sudo kill " in line
    finally:
        first.release()
    second, _ = acquire_within(hub, 5)  # released: the next one takes it at once
    second.release()


def test_a_killed_run_frees_the_lock_at_once(hub: Path) -> None:
    holder = start_holder(hub)
    with pytest.raises(SwarmhubError, match="holds the lock: tester@prov"):
        RunLock.acquire(connect(hub), "second", path=LOCK_FILE)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    taken, took = acquire_within(hub, 10)
    taken.release()
    assert took < 5


def test_a_stalled_run_loses_the_lock_and_knows_it(hub: Path) -> None:
    holder = start_holder(hub, stale_seconds=3)
    holder.send_signal(signal.SIGSTOP)  # connection open, no heartbeats
    try:
        taken, took = acquire_within(hub, 15)
        assert 1 < took < 10
    finally:
        holder.send_signal(signal.SIGCONT)
    assert holder.stdout.readline() == "lost\n"
    holder.wait(timeout=10)
    taken.release()


def test_closing_the_connection_releases(hub: Path) -> None:
    connection = connect(hub)
    RunLock.acquire(connection, "closing", path=LOCK_FILE)
    connection.close()  # what Session.close does at the end of a run
    taken, took = acquire_within(hub, 10)
    taken.release()
    assert took < 5
