"""Backups off the hub with restic: encrypted in an SFTP repository on a backup host of the env
file, deduplicated, restored as before, and an unreachable backup host said in one line.

Runs on a sandbox whose env file sets BACKUP_TARGET (tests/e2e/backup.env):
SWARMHUB_E2E_ENV=tests/e2e/backup.env .venv/bin/pytest -m e2e tests/e2e/test_5b_restic.py
"""

from __future__ import annotations

import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from swarmhub import settings as env_settings
from swarmhub.steps import backup
from swarmhub.student import Student
from tests.cli import ROOT, docker, run
from tests.e2e.conftest import CERT_FILE, PROXY, SETTINGS, on_hub, student

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not SETTINGS.backup_target,
        reason="needs an env file with BACKUP_TARGET (tests/e2e/backup.env)",
    ),
]

BACKUP_HOST = SETTINGS.backup_host
REPOSITORY = urlsplit(SETTINGS.backup_target).path if SETTINGS.backup_target else ""
SNAPSHOT = re.compile(r"^\d{8}T\d{6}Z$")
MARKER = "swarmhub-marker-" + secrets.token_hex(8)
HOME = f"{SETTINGS.homes_dir}/alice"


def invoke(env: Path, *argv: str) -> str:
    # 1800 s, as the suite's own deploy: the module's first is a cold cluster.all, which took
    # longer than 900 s once beside the suite and two more sandboxes.
    result = run("invoke", *argv, env_file=env, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def on(env: Path, host: str, command: str, check: bool = True) -> str:
    result = run("fab", "-H", host, "--", command, env_file=env)
    assert not check or result.returncode == 0, result.stderr
    return result.stdout.strip()


def repository_bytes(env: Path) -> int:
    return int(on(env, BACKUP_HOST, f"sudo du -sb {REPOSITORY}").split()[0])


@pytest.fixture(scope="module")
def deployed(sandbox: Path) -> Iterator[Path]:
    """The sandbox with the backup host, deployed (converged by one more cluster.all)."""
    out = invoke(sandbox, "cluster.all")
    assert "JupyterHub is up" in out
    cert = run("fab", "-H", PROXY, "--", "cat /etc/swarmhub/tls/fullchain.pem", env_file=sandbox)
    CERT_FILE.parent.mkdir(exist_ok=True)
    CERT_FILE.write_text(cert.stdout)
    yield sandbox


@pytest.fixture(scope="module")
def alice(deployed: Path) -> Iterator[Student]:
    who = student("alice")
    who.login()
    who.start_server()
    yield who
    who.stop_server()


def test_the_secrets_are_0600_here_and_on_the_hub(deployed: Path) -> None:
    kept = ROOT / ".swarmhub" / env_settings.load(str(deployed)).hub_host
    for name in ("restic-password", "backup-sftp-key"):
        assert stat.S_IMODE((kept / name).stat().st_mode) == 0o600, name
    modes = on_hub(deployed, f"sudo stat -c '%a %U' {backup.PASSWORD} {backup.KEY}")
    assert modes.splitlines() == ["600 root", "600 root"]
    # The backup host lets the hub's key run SFTP only, from the hub only.
    keys = on(deployed, BACKUP_HOST, f"sudo cat {backup.REPO_HOME}/.ssh/authorized_keys")
    assert 'restrict,from="' in keys and 'command="/usr/lib/openssh/sftp-server"' in keys


def test_a_snapshot_is_encrypted_on_the_backup_host(deployed: Path, alice: Student) -> None:
    alice.run_code(f"open('notes.txt', 'w').write({MARKER!r} * 20)")
    name = invoke(deployed, "backup.run").strip().splitlines()[-1]
    assert SNAPSHOT.match(name), name
    assert name in invoke(deployed, "backup.list")
    # The marker is in alice's home on the hub, and in no file of the repository.
    assert on_hub(deployed, f"sudo grep -c {MARKER} {HOME}/notes.txt") == "1"
    files = int(on(deployed, BACKUP_HOST, f"sudo find {REPOSITORY} -type f | wc -l"))
    assert files > 5
    found = run(
        "fab", "-H", BACKUP_HOST, "--", f"sudo grep -r -l {MARKER} {REPOSITORY}", env_file=deployed
    )
    assert found.returncode == 1 and not found.stdout.strip(), found.stdout
    # Nothing of the repository on the hub itself.
    assert (
        on_hub(deployed, f"sudo test -e {SETTINGS.backup_dir}/restic && echo yes || echo no")
        == "no"
    )
    # The textfile metric the Prometheus issue reads: written now.
    metric = on_hub(deployed, "cat /var/lib/prometheus/node-exporter/swarmhub_backup.prom")
    value = re.search(r"^swarmhub_backup_last_success_timestamp_seconds (\d+)$", metric, re.M)
    assert value and abs(time.time() - int(value.group(1))) < 300, metric


def test_a_wrong_password_restores_nothing(deployed: Path, alice: Student) -> None:
    alice.run_code("import os; os.remove('notes.txt')")
    password = backup.PASSWORD
    on_hub(deployed, f"sudo cp -p {password} {password}.right && echo wrong | sudo tee {password}")
    try:
        result = run("invoke", "backup.restore", "--user", "alice", env_file=deployed)
    finally:
        on_hub(deployed, f"sudo mv -f {password}.right {password}")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "wrong password" in lines[0], result.stderr
    gone = on_hub(deployed, f"sudo test -e {HOME}/notes.txt && echo there || echo gone")
    assert gone == "gone"
    # With the right password, --path brings it back.
    out = invoke(deployed, "backup.restore", "--user", "alice", "--path", "notes.txt")
    assert "restored 1 file(s)" in out, out
    assert (
        alice.run_code("print(open('notes.txt').read().count('swarmhub-marker-'))").strip() == "20"
    )


def test_ten_more_megabytes_grow_the_repository_by_about_ten(
    deployed: Path, alice: Student
) -> None:
    before = repository_bytes(deployed)
    alice.run_code("import os; open('big.bin', 'wb').write(os.urandom(10 * 1024 * 1024))")
    try:
        invoke(deployed, "backup.run")
        grown = repository_bytes(deployed) - before
        # Random data does not compress: about 10 MiB, not the size of every home again.
        assert 9.5 * 2**20 < grown < 12.5 * 2**20, grown
    finally:
        alice.run_code("import os; os.remove('big.bin')")


KILLED = "swarmhub-killed-backup"


def kill_a_backup_holding_its_lock(env: Path) -> None:
    """Start a backup and SIGKILL it (no clean-up) once its lock is in the repository.

    Killed when its lock is seen, not after a fixed delay: 4 s was before restic had taken
    its lock on a busy machine, and could be after the backup's end on a quiet one.
    """
    on_hub(env, f"sudo systemd-run --quiet --collect --unit={KILLED} {backup.SCRIPT} run")
    locks = f"sudo ls {REPOSITORY}/locks | wc -l"
    deadline = time.monotonic() + 300
    while int(on(env, BACKUP_HOST, locks)) == 0:
        running = on_hub(env, f"systemctl is-active {KILLED} || true").strip()
        assert running in {"active", "activating"}, (
            f"the backup ended before its lock was seen: {running}"
        )
        assert time.monotonic() < deadline, "the backup took no lock in 300 s"
        time.sleep(0.5)
    # Every process of the unit (the script, restic, its ssh) at once.
    on_hub(env, f"sudo systemctl kill --signal=KILL {KILLED}")
    while on_hub(env, f"systemctl is-active {KILLED} || true").strip() in {
        "active",
        "deactivating",
    }:
        time.sleep(0.5)
    assert int(on(env, BACKUP_HOST, locks)) >= 1, "the killed backup's lock is gone"


def test_a_stale_lock_is_cleared_by_the_next_run(deployed: Path) -> None:
    # A backup killed mid-way (SIGKILL: no clean-up) leaves its lock in the repository.
    on_hub(deployed, f"sudo head -c 300M /dev/urandom | sudo tee {HOME}/stale.bin >/dev/null")
    try:
        kill_a_backup_holding_its_lock(deployed)
        result = run("invoke", "backup.run", env_file=deployed, timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        assert "pruning old ones failed" not in result.stdout + result.stderr
        assert on(deployed, BACKUP_HOST, f"sudo ls {REPOSITORY}/locks | wc -l") == "0"
    finally:
        on_hub(deployed, f"sudo rm -f {HOME}/stale.bin")


def test_an_unreachable_backup_host_is_one_line(deployed: Path) -> None:
    # A running server's runtime files go with it (the sandbox's culler is quick): not data.
    files = (
        f"sudo find {SETTINGS.homes_dir} {SETTINGS.hub_dir} -type f ! -name '*-journal' "
        "! -path '*/.local/share/jupyter/runtime/*' | sort"
    )
    before = set(on_hub(deployed, files).splitlines())
    docker("pause", BACKUP_HOST)
    try:
        result = run("invoke", "backup.run", env_file=deployed, timeout=300)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "does not answer" in lines[0], result.stderr
        # Nothing on the hub removed: every home's file, the database, the secrets.
        assert before <= set(on_hub(deployed, files).splitlines())
        health = run("invoke", "health", env_file=deployed, timeout=120)
        assert health.returncode == 1, health.stdout + health.stderr
        assert "backups" in health.stdout and "does not answer" in health.stdout, health.stdout
    finally:
        docker("unpause", BACKUP_HOST)
    health = run("invoke", "health", env_file=deployed, timeout=120)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "backups ok" in health.stdout, health.stdout
