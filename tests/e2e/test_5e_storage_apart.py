"""Backups with the homes on a storage host apart from the hub: restic runs where the homes
are (the storage host snapshots them, not through the hub's network mount), the hub snapshots
its database, secrets and the proxy's TLS material, both to the same repository with the
same password; backup.run, backup.list, backup.restore (--user --path, --homes, --hub-db) and
health work as with the homes on the hub.

Runs on a sandbox whose env file sets STORAGE_HOST and BACKUP_TARGET
(tests/e2e/backup-storage.env, r-*; not run by scripts/test):
SWARMHUB_E2E_ENV=tests/e2e/backup-storage.env .venv/bin/pytest -m e2e \
    tests/e2e/test_5e_storage_apart.py
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from swarmhub.steps import backup
from swarmhub.student import Student
from tests.cli import run
from tests.e2e.conftest import CERT_FILE, PROXY, SETTINGS, on_hub, student

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not SETTINGS.backup_target or SETTINGS.storage_name == SETTINGS.hub_host,
        reason="needs an env file with STORAGE_HOST apart and BACKUP_TARGET "
        "(tests/e2e/backup-storage.env)",
    ),
]

STORAGE = SETTINGS.storage_name
BACKUP_HOST = SETTINGS.backup_host
REPOSITORY = urlsplit(SETTINGS.backup_target).path if SETTINGS.backup_target else ""
SNAPSHOT = re.compile(r"\d{8}T\d{6}Z")
MARKER = "swarmhub-marker-" + secrets.token_hex(8)
HOME = f"{SETTINGS.homes_dir}/alice"
METRIC = "/var/lib/prometheus/node-exporter/swarmhub_backup.prom"


def invoke(env: Path, *argv: str) -> str:
    result = run("invoke", *argv, env_file=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def on(env: Path, host: str, command: str, check: bool = True) -> str:
    result = run("fab", "-H", host, "--", command, env_file=env)
    assert not check or result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def deployed(sandbox: Path) -> Iterator[Path]:
    """The sandbox with its storage and backup hosts, deployed (converged by one more
    cluster.all)."""
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


def test_restic_runs_on_the_storage_host_with_the_same_secrets(deployed: Path) -> None:
    script = on(deployed, STORAGE, f"sudo grep -E '^(PART|RESTIC_HOST)=' {backup.SCRIPT}")
    assert script.splitlines() == ["PART=homes", "RESTIC_HOST=swarmhub-homes"]
    assert "PART=hub" in on_hub(deployed, f"sudo grep -E '^PART=' {backup.SCRIPT}")
    secrets_of = f"sudo stat -c '%a %U' {backup.PASSWORD} {backup.KEY}"
    digests = f"sudo sha256sum {backup.PASSWORD} {backup.KEY} | cut -d' ' -f1"
    assert on(deployed, STORAGE, secrets_of).splitlines() == ["600 root", "600 root"]
    assert on(deployed, STORAGE, digests) == on_hub(deployed, digests)  # the same repository
    # Both hosts' timers; `restic check` from the hub only.
    timers = f"systemctl is-active {backup.UNIT}.timer {backup.CHECK_UNIT}.timer || true"
    assert on_hub(deployed, timers).splitlines() == ["active", "active"]
    assert on(deployed, STORAGE, timers).splitlines()[0] == "active"
    assert on(deployed, STORAGE, timers).splitlines()[1] != "active"
    # The backup host takes the key from the storage host's address too.
    address = on(deployed, STORAGE, "hostname -I").split()[0]
    keys = on(deployed, BACKUP_HOST, f"sudo cat {backup.REPO_HOME}/.ssh/authorized_keys")
    assert address in keys.splitlines()[-1].split(" ")[0], keys


def test_backup_run_takes_both_parts_under_one_name(deployed: Path, alice: Student) -> None:
    alice.run_code(
        "import os; os.makedirs('work', exist_ok=True); "
        f"open('work/notes.txt', 'w').write({MARKER!r} * 20)"
    )
    out = invoke(deployed, "backup.run").strip().splitlines()
    lines = [line for line in out if SNAPSHOT.match(line)]
    assert len(lines) == 2, out
    name = lines[0].split()[0]
    assert lines == [
        f"{name} ({SETTINGS.hub_host}: the hub's part)",
        f"{name} ({STORAGE}: the homes)",
    ], out
    listed = [line.split() for line in invoke(deployed, "backup.list").splitlines()]
    holds = sorted(words[-1] for words in listed if words and words[0] == name)
    assert holds == ["homes", "hub"], listed
    # The file is on the storage host's own disk, in no file of the repository (encrypted).
    assert on(deployed, STORAGE, f"sudo grep -c {MARKER} {HOME}/work/notes.txt") == "1"
    found = run(
        "fab", "-H", BACKUP_HOST, "--", f"sudo grep -r -l {MARKER} {REPOSITORY}", env_file=deployed
    )
    assert found.returncode == 1 and not found.stdout.strip(), found.stdout
    # The textfile metric, on both hosts (node-exporter reads each).
    for host in (SETTINGS.hub_host, STORAGE):
        metric = on(deployed, host, f"cat {METRIC}")
        value = re.search(r"^swarmhub_backup_last_success_timestamp_seconds (\d+)$", metric, re.M)
        assert value and abs(time.time() - int(value.group(1))) < 300, (host, metric)


def test_a_deleted_file_comes_back_with_backup_restore_path(deployed: Path, alice: Student) -> None:
    alice.run_code("import os; os.remove('work/notes.txt')")
    gone = on(deployed, STORAGE, f"sudo test -e {HOME}/work/notes.txt && echo there || echo gone")
    assert gone == "gone"
    out = invoke(deployed, "backup.restore", "--user", "alice", "--path", "work/notes.txt")
    assert "restored 1 file(s)" in out, out
    count = alice.run_code("print(open('work/notes.txt').read().count('swarmhub-marker-'))")
    assert count.strip() == "20"
    # A live file that differs is never overwritten: the backup's copy goes beside it.
    alice.run_code("open('work/notes.txt', 'a').write('more')")
    out = invoke(deployed, "backup.restore", "--user", "alice", "--path", "work/notes.txt")
    assert "1 kept (live copy differs)" in out, out
    assert "more" in on(deployed, STORAGE, f"sudo cat {HOME}/work/notes.txt")
    on(deployed, STORAGE, f"sudo rm -f {HOME}/work/notes.txt.restored-*")


def test_at_names_the_snapshot_restored_and_a_name_of_none_is_one_line(deployed: Path) -> None:
    names = [
        words[0]
        for words in (line.split() for line in invoke(deployed, "backup.list").splitlines())
        if words and SNAPSHOT.fullmatch(words[0]) and words[-1] == "homes"
    ]
    first = names[0]
    out = invoke(deployed, "backup.restore", "--user", "alice", "--at", first)
    assert f"of alice from {first};" in out, out
    for flag in ("--user alice", "--hub-db"):
        result = run(
            "invoke", "backup.restore", *flag.split(), "--at", "20990101T000000Z", env_file=deployed
        )
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "no snapshot 20990101T000000Z" in lines[0], result.stderr


def test_every_home_comes_back_on_the_storage_host(deployed: Path, alice: Student) -> None:
    on(deployed, STORAGE, f"sudo rm -f {HOME}/work/notes.txt")
    out = invoke(deployed, "backup.restore", "--homes")
    # (notes.txt, and whatever else is gone since the snapshot; a live file that differs stays.)
    assert re.search(r"restored \d{8}T\d{6}Z: \d+ home\(s\) \([1-9]\d* file\(s\);", out), out
    assert on(deployed, STORAGE, f"sudo grep -c {MARKER} {HOME}/work/notes.txt") == "1"


def test_the_hub_database_comes_back_from_the_hubs_part(deployed: Path) -> None:
    out = invoke(deployed, "backup.restore", "--hub-db")
    assert "hub database restored from" in out, out
    refused = run("invoke", "backup.restore", "--homes", "--hub-db", env_file=deployed)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1


def test_health_names_both_parts(deployed: Path) -> None:
    result = run("invoke", "health", env_file=deployed, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backups ok (" in result.stdout, result.stdout
    assert re.search(rf"homes \({STORAGE}\) \d+ min ago", result.stdout), result.stdout
