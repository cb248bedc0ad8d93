"""The recovery drill: the hub VM destroyed with all its disks, a bare VM of the same name
made by sandbox.up, and `invoke recover.hub` brings everything back from the backup host.

Destructive (the hub is rebuilt, its images built again: minutes): run on a sandbox of its
own whose env sets BACKUP_TARGET, e.g. SWARMHUB_E2E_ENV=tests/e2e/backup.env
.venv/bin/pytest -m e2e tests/e2e/test_5d_recover.py. With STORAGE_HOST apart
(tests/e2e/backup-storage.env) the homes are not the hub's: they stay on the storage host,
and the snapshot brings back the hub's part.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

from swarmhub.sandbox.commands import docker_volume_name
from tests.cli import docker, run
from tests.e2e.conftest import (
    CERT_FILE,
    HUB,
    NODE_LIST,
    PROXY,
    PROXY_URL,
    SETTINGS,
    node_of,
    on_hub,
    student,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not SETTINGS.backup_target,
        reason="needs an env file with BACKUP_TARGET (tests/e2e/backup.env)",
    ),
]

NOTEBOOK = json.dumps(
    {
        "cells": [{"cell_type": "code", "source": "print('recovered')", "metadata": {}}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
)


def invoke(env: Path, *argv: str, timeout: float = 900) -> str:
    result = run("invoke", *argv, env_file=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def hub_api(path: str, token: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    return session.get(
        f"{PROXY_URL}/hub/api{path}",
        headers={"Authorization": f"token {token}"},
        verify=str(CERT_FILE),
        timeout=30,
    )


def test_a_destroyed_hub_comes_back_with_every_students_work(sandbox: Path) -> None:
    out = invoke(sandbox, "cluster.all")
    assert "JupyterHub is up" in out
    cert = run("fab", "-H", PROXY, "--", "cat /etc/swarmhub/tls/fullchain.pem", env_file=sandbox)
    CERT_FILE.write_text(cert.stdout)
    admin = student("admin")
    admin.login()
    made = admin.api("POST", "/users/admin/tokens", json={"note": "before the loss"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    student("bob").login()
    alice = student("alice")
    alice.login()
    alice.start_server()
    alice.run_code(f"open('hw4.ipynb', 'w').write({NOTEBOOK!r})")
    alice.stop_server()
    # (With STORAGE_HOST apart, one line per part: "NAME (HOST: PART)"; the name alike.)
    snapshot = invoke(sandbox, "backup.run").strip().splitlines()[-1].split()[0]

    # The hub VM and its disks gone (the Docker engine's volume too); a bare VM of its name.
    docker("rm", "-f", HUB)
    docker("volume", "rm", docker_volume_name(SETTINGS.sandbox_name, HUB))
    invoke(sandbox, "sandbox.up")
    assert on_hub(sandbox, "command -v docker >/dev/null && echo yes || echo no") == "no"

    out = invoke(sandbox, "recover.hub", timeout=2400)
    assert re.search(rf"^{HUB} recovered in \d+ min \d+ s$", out, re.M), out[-2000:]
    assert f"restored {snapshot}: " in out, out[-3000:]
    # The hub's copy of the proxy's TLS material came back from the snapshot (backup.proxy).
    assert "the proxy's TLS material" in out, out[-3000:]
    if SETTINGS.storage_name != HUB:
        assert f"the homes stay on {SETTINGS.storage_name}" in out, out[-3000:]

    # alice logs in through the proxy, starts a server on a node, finds her notebook.
    alice = student("alice")
    alice.login()
    alice.start_server()
    assert node_of(sandbox, "alice") in NODE_LIST
    found = alice.run_code("print(open('hw4.ipynb').read())").strip()
    assert found == NOTEBOOK
    # The admin's API token made before the loss works; bob is still a user.
    users = hub_api("/users", token)
    assert users.status_code == 200, users.text
    assert {"admin", "bob", "alice"} <= {user["name"] for user in users.json()}
    # The new swarm: both nodes in it, no old jupyter-* service but alice's new one.
    services = on_hub(sandbox, "docker service ls --format '{{.Name}}'").split()
    assert services == ["jupyter-alice"], services
    nodes = on_hub(sandbox, "docker node ls --format '{{.Hostname}} {{.Status}}'").splitlines()
    assert sorted(nodes) == sorted([f"{HUB} Ready"] + [f"{n} Ready" for n in NODE_LIST]), nodes
    alice.stop_server()
    # The second run of the runbook changes nothing more on the nodes.
    again = invoke(sandbox, "cluster.all")
    assert "changed=0" in again


def test_a_new_proxy_gets_its_certificate_back(sandbox: Path) -> None:
    """After the drill (the hub's copy of the proxy's TLS material came from the snapshot):
    a proxy that lost its key and certificate serves the same ones again, not new ones."""
    before = CERT_FILE.read_text()
    assert "BEGIN CERTIFICATE" in before
    run("fab", "-H", PROXY, "--", "sudo rm -rf /etc/swarmhub/tls", env_file=sandbox)
    out = invoke(sandbox, "proxy.restore", "proxy.configure")
    assert "put back from" in out, out[-2000:]
    assert "self-signed TLS certificate" not in out, out[-2000:]
    cert = run("fab", "-H", PROXY, "--", "cat /etc/swarmhub/tls/fullchain.pem", env_file=sandbox)
    assert cert.stdout == before
    key = run(
        "fab", "-H", PROXY, "--", "sudo stat -c %a /etc/swarmhub/tls/privkey.pem", env_file=sandbox
    )
    assert key.stdout.strip() == "600"
