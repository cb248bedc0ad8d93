"""The runbook core's promises on the sandbox: plan shows what a run will do (a stopped hub
container included), a run cut short converges with one more, two changing runs never go at
once, a restart of Docker on a node never stops students' servers silently, and sizes reach
Docker as bytes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from swarmhub.runbook.lock import RunLock, holder_line
from swarmhub.runbook.session import open_host
from swarmhub.sizes import parse_size
from swarmhub.steps.docker_engine import provisioner_nameservers
from tests.cli import BIN, ROOT, run
from tests.e2e.conftest import (
    SETTINGS,
    cut_short,
    env_with,
    hub_container_ids,
    keep_busy,
    node_of,
    on_hub,
    recap,
    student,
)

pytestmark = pytest.mark.e2e


def running_task(cluster: Path, user: str) -> str:
    return on_hub(cluster, f"docker service ps jupyter-{user} -q --filter desired-state=running")


def hub_state(cluster: Path) -> str:
    return on_hub(cluster, "docker inspect --format '{{.State.Status}}' jupyterhub")


def test_a_stopped_hub_is_in_the_plan_and_a_deploy_cut_short_converges(cluster: Path) -> None:
    on_hub(cluster, "docker stop jupyterhub")
    try:
        plan = run("invoke", "hub.deploy", "--plan", env_file=cluster)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "[t-hub] would change: hub stack: started jupyterhub" in plan.stdout
        assert recap(plan.stdout)["t-hub"][1] == 1
        assert hub_state(cluster) == "exited"  # plan changed nothing
        # Ctrl-C while hub.deploy waits for the hub to answer; one more run converges.
        cut_short(cluster, "hub.deploy", after="== hub.deploy", wait=1.5, sig=signal.SIGINT)
    finally:
        again = run("invoke", "hub.deploy", env_file=cluster)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert hub_state(cluster) == "running"
    assert run("invoke", "hub.deploy", env_file=cluster).stdout.count("changed=0") == 1
    alice = student("alice")
    alice.login()
    alice.start_server()
    assert alice.run_code("print(6 * 7)").strip() == "42"


def test_two_changing_runs_at_once_the_second_stops_naming_the_first(cluster: Path) -> None:
    first = subprocess.Popen(
        [str(BIN / "invoke"), "cluster.all"],
        cwd=ROOT,
        env={**os.environ, "SWARMHUB_ENV": str(cluster)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:  # the lock is held from before the first step
            if line.startswith("== provision"):
                break
        second = run("invoke", "hub.deploy", env_file=cluster)
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert re.search(
            r"t-hub: another swarmhub run holds the lock: \S+ pid \d+ \(invoke cluster\.all\) "
            r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
            lines[0],
        ), lines[0]
        assert "== hub.deploy" not in second.stdout  # it stopped before any step
    finally:
        out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:]
    # The first run's lock is gone with it.
    assert run("invoke", "hub.deploy", env_file=cluster).returncode == 0


def test_a_plan_takes_no_lock_and_says_when_a_run_holds_it(cluster: Path) -> None:
    hub = open_host(SETTINGS, SETTINGS.hub_host, quiet=True)
    lock = RunLock.acquire(hub.connection, holder_line("invoke cluster.all"), hub=hub.name)
    try:
        plan = run("invoke", "hub.deploy", "--plan", env_file=cluster)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "note: another swarmhub run is changing the cluster" in plan.stdout
        refused = run("invoke", "hub.deploy", env_file=cluster)
        assert refused.returncode != 0 and "holds the lock" in refused.stderr
    finally:
        lock.release()
        hub.connection.close()
    assert run("invoke", "hub.deploy", env_file=cluster).returncode == 0


def test_a_restart_of_docker_on_a_node_is_said_refused_then_done_node_by_node(
    cluster: Path, tmp_path: Path
) -> None:
    servers = {}
    for name in ("hana", "ivan", "jon", "kim"):
        person = student(name)
        person.login()
        person.start_server()
        keep_busy(person)  # four starts on a busy machine outlast the suite's 60 s culler
        servers[name] = person
    where = {name: node_of(cluster, name) for name in servers}
    assert set(where.values()) == {"t-node-1", "t-node-2"}, where
    on_node_2 = sorted(n for n, node in where.items() if node == "t-node-2")
    on_node_1 = sorted(n for n, node in where.items() if node == "t-node-1")
    before = {n: running_task(cluster, n) for n in on_node_1}
    # The provisioner's nameservers, then one more inside the sandbox (only asked when those
    # fail): a daemon.json that differs, and DNS that keeps working.
    with open("/etc/resolv.conf") as resolv:
        dns = [*provisioner_nameservers(resolv.read()), "10.232.0.10"]
    changed = env_with(
        cluster, tmp_path, "dns.env", ("DOCKER_DNS=provisioner", f"DOCKER_DNS={','.join(dns)}")
    )
    try:
        plan = run("fab", "-H", "t-node-2", "docker.install", "--plan", env_file=changed)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        running_there = on_hub(
            cluster,
            "docker node ps t-node-2 --filter desired-state=running --format '{{.Name}}' "
            "| grep -c '^jupyter-'",
        )
        assert int(running_there) >= len(on_node_2)
        assert f"restarts Docker on t-node-2: {running_there} server(s) stop" in plan.stdout
        refused = run("fab", "-H", "t-node-2", "docker.install", env_file=changed)
        assert refused.returncode != 0
        assert "--restart-nodes" in refused.stderr and "jupyter-" in refused.stderr
        daemon = run("fab", "-H", "t-node-2", "--", "cat /etc/docker/daemon.json", env_file=cluster)
        assert "10.232.0.10" not in daemon.stdout  # refused: nothing changed
        done = run("fab", "-H", "t-node-2", "docker.install", "--restart-nodes", env_file=changed)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        assert "[t-node-2] changed: daemon.json (content): restarted docker" in done.stdout
        # The servers on the other node kept running: the same tasks.
        assert {n: running_task(cluster, n) for n in on_node_1} == before
        for name in on_node_1:
            assert servers[name].run_code("print('kept')").strip() == "kept"
        # The node went back to taking servers once Docker answered.
        availability = "docker node inspect --format '{{.Spec.Availability}}' t-node-2"
        assert on_hub(cluster, availability) == "active"
    finally:
        back = run("fab", "-H", "t-node-2", "docker.install", "--restart-nodes", env_file=cluster)
        assert back.returncode == 0, back.stdout[-2000:] + back.stderr
        for person in servers.values():
            with contextlib.suppress(Exception):  # a server on the restarted node may be gone
                person.stop_server()


def test_a_memory_limit_in_gb_reaches_docker_as_bytes(cluster: Path, tmp_path: Path) -> None:
    two = env_with(cluster, tmp_path, "2gb.env", ("USER_MEM_LIMIT=512M", "USER_MEM_LIMIT=2GB"))
    try:
        deployed = run("invoke", "hub.deploy", env_file=two)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr
        lena = student("lena")
        lena.login()
        lena.start_server()
        limits = "{{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}}"
        limit = on_hub(cluster, f"docker service inspect jupyter-lena --format '{limits}'")
        assert int(limit) == parse_size("2GiB") == 2 * 1024**3
        lena.stop_server()
    finally:
        assert run("invoke", "hub.deploy", env_file=cluster).returncode == 0
    assert "jupyterhub" in hub_container_ids(cluster)
