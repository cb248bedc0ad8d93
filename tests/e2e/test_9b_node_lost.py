"""A node lost mid-lab: the hub knows within seconds that the servers on it are gone (the
spawner's poll reads the swarm's node states), a student coming back gets a new server on
another node with her files, and when the node returns nobody has two servers.

Destructive for a node (docker kill of its VM, brought back by sandbox.up): it runs near the
end of the suite, after the bootcamp's walkthrough, before the sandbox goes down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from swarmhub.student import Student
from tests.cli import docker, run
from tests.e2e.conftest import CERT_FILE, NODE_LIST, PROXY, node_of, on_hub, student

pytestmark = pytest.mark.e2e

BACK_WITHIN = 30  # seconds from the kill to the student's code running again


def invoke(env: Path, *argv: str) -> str:
    result = run("invoke", *argv, env_file=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def deployed(sandbox: Path) -> Path:
    out = invoke(sandbox, "cluster.all")
    assert "JupyterHub is up" in out
    cert = run("fab", "-H", PROXY, "--", "cat /etc/swarmhub/tls/fullchain.pem", env_file=sandbox)
    CERT_FILE.parent.mkdir(exist_ok=True)
    CERT_FILE.write_text(cert.stdout)
    return sandbox


def running_servers(env: Path, user: str) -> list[str]:
    """The nodes where a task of the user's service runs, as the swarm says."""
    out = on_hub(
        env,
        f"docker service ps jupyter-{user} --filter desired-state=running "
        "--format '{{.Node}} {{.CurrentState}}' 2>/dev/null || true",
    )
    return [line.split()[0] for line in out.splitlines() if "Running" in line]


def comes_back(alice: Student, dead: str, started: float) -> str:
    """Alice, coming back, until her code runs (on a node that is not ``dead``)."""
    while time.monotonic() - started < 120:
        model = alice.api("GET", "/users/alice").json()
        if not model.get("servers") and not model.get("pending"):
            break  # the hub knows her server is gone (and is done stopping it)
        time.sleep(0.5)
    alice.start_server(timeout=120)
    return alice.run_code("print(open('lab.txt').read())", timeout=60).strip()


def test_a_dead_nodes_student_runs_code_on_another_node_within_30_s(deployed: Path) -> None:
    alice = student("alice")
    alice.login()
    alice.start_server()
    alice.run_code("open('lab.txt', 'w').write('lab 3, part 1')")
    dead = node_of(deployed, "alice")
    assert dead in NODE_LIST
    alice.progress_messages.clear()  # those of her first start
    started = time.monotonic()
    docker("kill", dead)
    try:
        assert comes_back(alice, dead, started) == "lab 3, part 1"
        elapsed = time.monotonic() - started
        now_on = node_of(deployed, "alice")
        assert now_on in NODE_LIST and now_on != dead, now_on
        assert elapsed < BACK_WITHIN, f"back after {elapsed:.1f} s"
        # Why is said in the hub's log, and on her spawn page when the start is slow enough
        # for JupyterHub to show one (a start under 3 s goes straight to her server).
        logged = on_hub(deployed, "docker logs --since 5m jupyterhub 2>&1 | grep 'is gone'")
        assert f"server of alice is gone: its node {dead} is down" in logged
        if alice.progress_messages:
            said = " ".join(alice.progress_messages)
            assert f"its node {dead} is down" in said, alice.progress_messages
    finally:
        invoke(deployed, "sandbox.up")  # the killed VM started again
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = on_hub(deployed, f"docker node inspect {dead} --format '{{{{.Status.State}}}}'")
        if status == "ready":
            break
        time.sleep(2)
    assert status == "ready"
    # The returned node runs no second server for her: her old service went at the new start.
    time.sleep(10)
    assert running_servers(deployed, "alice") == [now_on]
    leftover = run(
        "fab", "-H", dead, "--", "docker ps -q --filter name=jupyter-alice", env_file=deployed
    )
    assert leftover.returncode == 0 and not leftover.stdout.strip(), leftover.stdout
    servers = alice.api("GET", "/users/alice").json()["servers"]
    assert list(servers) == [""] and servers[""]["ready"]
    alice.stop_server()
