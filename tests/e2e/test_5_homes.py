"""Student work is never lost: homes on the storage host follow a student from node to node,
outlive culling, and come back from backups; a restored hub database brings users back."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from swarmhub.student import Student
from tests.cli import run
from tests.e2e.conftest import (
    HUB,
    NODE_LIST,
    SETTINGS,
    hub_container_ids,
    node_of,
    on_hub,
    recap,
    student,
)

pytestmark = pytest.mark.e2e

HOMES = SETTINGS.homes_dir
SNAPSHOT = re.compile(r"^\d{8}T\d{6}Z$")
NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def invoke(cluster: Path, *argv: str) -> str:
    result = run("invoke", *argv, env_file=cluster, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def on(cluster: Path, host: str, command: str) -> str:
    result = run("fab", "-H", host, "--", command, env_file=cluster)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def server_gone(who: Student, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not who.api("GET", f"/users/{who.name}").json().get("servers"):
            return
        time.sleep(2)
    pytest.fail(f"the server of {who.name} did not stop within {timeout:.0f} s")


def stop(who: Student) -> None:
    who.stop_server()
    server_gone(who)


def logged_in(name: str) -> Student:
    who = student(name)
    who.login()
    return who


def test_every_node_mounts_the_homes_from_the_storage_host(cluster: Path) -> None:
    wanted = "fuse.sshfs" if SETTINGS.homes_backend == "sshfs" else "nfs4"
    for node in NODE_LIST:
        found = on(cluster, node, f"findmnt -n -o FSTYPE,SOURCE --mountpoint {HOMES}").split()
        assert found[0] == wanted and found[1].endswith(f"{SETTINGS.storage_name}:{HOMES}")
    # The hub's database stays on the hub's own disk, never on the homes' storage.
    fstype = on_hub(cluster, f"findmnt -n -o FSTYPE --target {SETTINGS.hub_data_dir}")
    assert not fstype.startswith("fuse") and not fstype.startswith("nfs")


def test_a_notebook_follows_its_student_to_another_node(cluster: Path) -> None:
    alice = logged_in("alice")
    alice.start_server()
    first = node_of(cluster, "alice")
    assert first in NODE_LIST
    alice.run_code(f"open('hw1.ipynb', 'w').write({NOTEBOOK!r})")
    stop(alice)
    invoke(cluster, "nodes.drain", first)
    try:
        alice.start_server()
        second = node_of(cluster, "alice")
        assert second in NODE_LIST and second != first
        out = alice.run_code(
            "import os; s = os.stat('hw1.ipynb'); "
            "print(open('hw1.ipynb').read() == " + repr(NOTEBOOK) + ", s.st_uid, os.getuid())"
        )
        assert out.split() == ["True", "1000", "1000"]  # there, and owned by her (jovyan)
    finally:
        invoke(cluster, "nodes.activate", first)
        stop(alice)
    owner = on_hub(cluster, f"sudo stat -c '%u:%g %a' {HOMES}/alice {HOMES}/alice/hw1.ipynb")
    home, notebook = owner.splitlines()
    assert home == "1000:100 700" and notebook.startswith("1000:100 ")


def test_a_culled_servers_files_are_there_at_the_next_start(cluster: Path) -> None:
    dave = logged_in("dave")
    dave.start_server()
    dave.run_code("open('notes.txt', 'w').write('before culling')")
    # CULL_TIMEOUT=60 and CULL_EVERY=15 in the test env: the idle culler stops it.
    server_gone(dave, timeout=300)
    dave.start_server()
    try:
        assert dave.run_code("print(open('notes.txt').read())").strip() == "before culling"
    finally:
        stop(dave)


def test_usage_lists_each_home(cluster: Path) -> None:
    out = invoke(cluster, "homes.usage")
    assert re.search(r"^(! )?alice\s+\S+", out, re.M), out


def test_backup_and_restore_of_a_students_files(cluster: Path) -> None:
    erin = logged_in("erin")
    erin.start_server()
    try:
        erin.run_code(
            "import os; os.makedirs('work', exist_ok=True); "
            "open('work/hw2.ipynb', 'w').write('v1'); open('essay.txt', 'w').write('draft 1')"
        )
        snapshot = invoke(cluster, "backup.run").strip().splitlines()[-1]
        assert SNAPSHOT.match(snapshot), snapshot
        assert snapshot in invoke(cluster, "backup.list")
        # A deleted file, and a file edited since the backup.
        erin.run_code("import os; os.remove('work/hw2.ipynb'); open('essay.txt', 'w').write('d2')")
        out = invoke(cluster, "backup.restore", "--user", "erin")
        assert f"kept essay.txt: the live file is newer than the copy in {snapshot}" in out, out
        check = erin.run_code(
            "import os; print(open('work/hw2.ipynb').read(), open('essay.txt').read(), "
            f"open('essay.txt.restored-{snapshot}').read(), os.stat('work/hw2.ipynb').st_uid)"
        )
        assert check.split() == ["v1", "d2", "draft", "1", "1000"]
        # A second restore changes nothing; --path restores only that file.
        again = invoke(cluster, "backup.restore", "--user", "erin", "--at", snapshot)
        assert "restored 0 file(s)" in again
        erin.run_code("import os; os.remove('work/hw2.ipynb')")
        one = invoke(cluster, "backup.restore", "--user", "erin", "--path", "work/hw2.ipynb")
        assert "restored 1 file(s)" in one
        assert erin.run_code("print(open('work/hw2.ipynb').read())").strip() == "v1"
    finally:
        stop(erin)


def test_a_bad_restore_is_one_clear_line(cluster: Path) -> None:
    result = run("invoke", "backup.restore", "--user", "nobody-here", env_file=cluster)
    assert result.returncode != 0
    assert "nobody-2dhere has no home in snapshot" in result.stderr, result.stderr
    result = run("invoke", "backup.restore", "--user", "erin", "--at", "x", env_file=cluster)
    assert result.returncode != 0 and "see invoke backup.list" in result.stderr


def test_a_restored_hub_database_brings_back_the_users(cluster: Path) -> None:
    admin = logged_in("admin")
    logged_in("bob")
    assert admin.api("GET", "/users/bob").status_code == 200
    snapshot = invoke(cluster, "backup.run").strip().splitlines()[-1]
    assert admin.api("DELETE", "/users/bob").status_code == 204
    assert admin.api("GET", "/users/bob").status_code == 404
    out = invoke(cluster, "backup.restore", "--hub-db", "--at", snapshot)
    assert f"hub database restored from {snapshot}" in out
    assert admin.api("GET", "/users/bob").status_code == 200
    # The database it replaced is kept aside, on the hub's disk.
    aside = on_hub(cluster, f"sudo ls {SETTINGS.hub_data_dir}")
    assert "jupyterhub.sqlite.replaced-" in aside


def test_the_backup_timer_is_scheduled(cluster: Path) -> None:
    out = on_hub(
        cluster,
        "systemctl is-enabled swarmhub-backup.timer; systemctl is-active swarmhub-backup.timer",
    )
    assert out.split() == ["enabled", "active"]


def test_a_second_run_with_homes_changes_nothing(cluster: Path) -> None:
    before = hub_container_ids(cluster)
    out = invoke(cluster, "cluster.all")
    rows = recap(out)
    assert HUB in rows and set(NODE_LIST) <= set(rows)
    assert all(changed == 0 and failed == 0 for _, changed, failed in rows.values()), rows
    assert hub_container_ids(cluster) == before
