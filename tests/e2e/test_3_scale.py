"""Scale on the sandbox: nodes come and go, limits hold, a full cluster says so at once, and a
hub redeploy keeps every running server answering."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swarmhub import settings as env_settings
from swarmhub.sandbox.plan import plan_vms
from swarmhub.student import KernelDied, Student, StudentError
from tests.cli import run
from tests.e2e.conftest import env_with, hub_container_ids, node_of, on_hub, recap, student

pytestmark = pytest.mark.e2e


def availability(cluster: Path) -> dict[str, str]:
    out = on_hub(cluster, "docker node ls --format '{{.Hostname}} {{.Availability}}'")
    return dict(line.split() for line in out.splitlines())


def test_nodes_come_and_go(cluster: Path, tmp_path: Path) -> None:
    three = env_with(
        cluster,
        tmp_path,
        "three.env",
        ("NODE_HOSTS=t-node-1,t-node-2", "NODE_HOSTS=t-node-1,t-node-2,t-node-3"),
    )
    up = run("invoke", "sandbox.up", "--nodes", "3", env_file=cluster)
    assert up.returncode == 0, up.stderr
    # The env file is the source of truth: an unlisted node is refused.
    refused = run("invoke", "nodes.add", "t-node-3", env_file=cluster)
    assert refused.returncode != 0 and "not in NODE_HOSTS" in refused.stderr
    # Given with fab -H, as the bootcamp does: the other hosts still open their firewalls.
    added = run("fab", "-H", "t-node-3", "nodes.add", "t-node-3", env_file=three, timeout=900)
    assert added.returncode == 0, added.stdout[-2000:] + added.stderr
    addresses = {vm.name: vm.address for vm in plan_vms(env_settings.load(str(three)))}
    address = addresses["t-node-3"]
    for host in ("t-hub", "t-node-1", "t-proxy"):
        cluster_set = run(
            "fab", "-H", host, "--", "sudo nft list set inet swarmhub cluster", env_file=three
        )
        assert address in cluster_set.stdout, (host, cluster_set.stdout)
    rows = recap(added.stdout)
    assert rows["t-node-3"][1] > 0
    # Nothing else touched but the firewalls, which now let t-node-3 in, and Prometheus's
    # scrapes on the hub, which now include it (monitor.metrics, on by default).
    others = [
        line
        for line in added.stdout.splitlines()
        if "changed:" in line and not line.startswith("[t-node-3]")
    ]
    assert all(
        "firewall" in line or "nftables" in line or line.startswith("[t-hub] changed: Prometheus")
        for line in others
    ), others
    try:
        # With the other nodes paused, a new server can only land on t-node-3.
        for node in ("t-node-1", "t-node-2"):
            assert run("invoke", "nodes.drain", node, env_file=three).returncode == 0
        frank = student("frank")
        frank.login()
        frank.start_server()
        assert node_of(cluster, "frank") == "t-node-3"
        # A node with a server running refuses removal ...
        refused = run("invoke", "nodes.remove", "t-node-3", env_file=three)
        assert (
            refused.returncode != 0 and "still runs 1 server(s) (jupyter-frank)" in refused.stderr
        )
        frank.stop_server()
        # ... and once drained it takes no new servers.
        for node in ("t-node-1", "t-node-2"):
            assert run("invoke", "nodes.activate", node, env_file=three).returncode == 0
        assert run("invoke", "nodes.drain", "t-node-3", env_file=three).returncode == 0
        assert availability(cluster)["t-node-3"] == "Pause"
        gina = student("gina")
        gina.login()
        gina.start_server()
        assert node_of(cluster, "gina") in {"t-node-1", "t-node-2"}
        gina.stop_server()
        removed = run("invoke", "nodes.remove", "t-node-3", env_file=three)
        assert removed.returncode == 0, removed.stderr
        assert "t-node-3" not in availability(cluster)
        assert "take it out" in removed.stdout
        # Out of NODE_HOSTS (the test's own env), the other hosts' firewalls close to it and
        # Prometheus stops scraping it.
        closed = run("invoke", "firewall.configure", "monitor.metrics", env_file=cluster)
        assert closed.returncode == 0, closed.stdout[-2000:] + closed.stderr
        # A join left pending: t-node-3 joins while the hub's firewall drops it (it times out
        # and goes on in the background); nodes.add opens the firewalls, then finishes it.
        token = on_hub(cluster, "docker swarm join-token -q worker")
        pending = run(
            "fab",
            "-H",
            "t-node-3",
            "--",
            f"timeout 30 docker swarm join --token {token} {addresses['t-hub']}:2377; "
            "docker info --format '{{.Swarm.LocalNodeState}}'",
            env_file=three,
        )
        assert pending.stdout.strip().splitlines()[-1] == "pending", pending.stdout
        again = run("invoke", "nodes.add", "t-node-3", env_file=three, timeout=900)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr
        assert availability(cluster)["t-node-3"] == "Active"
        # Listed in the env file, the node is kept by the whole runbook as well.
        whole = run("invoke", "cluster.all", env_file=three, timeout=900)
        assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr
        assert run("invoke", "nodes.remove", "t-node-3", env_file=three).returncode == 0
        restored = run("invoke", "firewall.configure", "monitor.metrics", env_file=cluster)
        assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr
    finally:
        for node in ("t-node-1", "t-node-2"):
            run("invoke", "nodes.activate", node, env_file=cluster)


def test_a_kernel_over_its_memory_limit_is_stopped_by_it(cluster: Path) -> None:
    hana = student("hana")
    hana.login()
    hana.start_server()
    assert hana.run_code("print(len(bytearray(100 * 2**20)))").strip() == str(100 * 2**20)
    with pytest.raises(KernelDied):  # USER_MEM_LIMIT=512M in the test env
        hana.run_code("hog = bytearray(900 * 2**20); print('should not get here')")
    hana.stop_server()


def test_a_full_cluster_says_so_within_ten_seconds(cluster: Path, tmp_path: Path) -> None:
    # Each sandbox node sees this machine's memory: reservations of 3/8 of it fit two per node.
    total_kib = int(
        next(
            line
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ).split()[1]
    )
    big = env_with(
        cluster,
        tmp_path,
        "big.env",
        ("USER_MEM_LIMIT=512M", f"USER_MEM_LIMIT={total_kib * 3 // 8}K"),
    )
    assert run("fab", "-H", "t-hub", "hub.deploy", env_file=big).returncode == 0
    # Six arrive together: four fit, and the two others hear it at once, while the four are
    # still starting (2 a node start at once: the line is full), not after their turn.
    students = [student(f"full-{index}") for index in range(6)]

    def arrive(one: Student) -> tuple[str, float]:
        one.login()
        asked = time.monotonic()
        try:
            one.start_server()
        except StudentError as error:
            return str(error), time.monotonic() - asked
        return "", time.monotonic() - asked

    try:
        with ThreadPoolExecutor(max_workers=len(students)) as pool:
            answers = list(pool.map(arrive, students))
        refused = [
            (one, why, took) for one, (why, took) in zip(students, answers, strict=True) if why
        ]
        assert len(refused) == 2, answers
        for one, why, took in refused:
            assert "spawn refused" in why and took < 10, (one.name, why, took)
            page = one.http.get(f"{one.base_url}/hub/spawn-pending/{one.name}", timeout=30)
            assert "The cluster is full right now" in page.text
    finally:
        for one in students:
            one.stop_server()
        assert run("fab", "-H", "t-hub", "hub.deploy", env_file=cluster).returncode == 0


def test_a_login_storm_waits_in_line_and_everyone_gets_a_server(cluster: Path) -> None:
    # SPAWN_CONCURRENCY is empty in the test env: 2 a node, 4 servers start at once, and
    # each takes seconds (USER_CPU_LIMIT=0.5): the last ones wait in line for a while.
    students = [student(f"line-{index}") for index in range(10)]

    def arrive(one: Student) -> None:
        one.login()
        one.start_server()

    try:
        with ThreadPoolExecutor(max_workers=len(students)) as pool:
            list(pool.map(arrive, students))
        messages = [message for one in students for message in one.progress_messages]
        assert any("ahead of you in line" in m or "next in line" in m for m in messages)
        assert any("Your server is booting" in m for m in messages)
    finally:
        for one in students:
            one.stop_server()


def test_five_servers_keep_answering_through_a_hub_upgrade(cluster: Path, tmp_path: Path) -> None:
    # No culling while the five start (the test env culls after 60 s).
    patient = env_with(cluster, tmp_path, "patient.env", ("CULL_TIMEOUT=60", "CULL_TIMEOUT=3600"))
    assert run("fab", "-H", "t-hub", "hub.deploy", env_file=patient).returncode == 0
    students = [student(f"keep-{index}") for index in range(5)]
    for one in students:
        one.login()
        one.start_server()
    before = hub_container_ids(cluster)
    # A new hub version: the same image under a new name stands for a rebuilt one ...
    hub_ref = on_hub(cluster, "docker inspect --format '{{.Config.Image}}' jupyterhub")
    on_hub(
        cluster, f"docker tag {hub_ref} {hub_ref.replace('/swarmhub/hub:', '/swarmhub/hub-next:')}"
    )
    # ... and a changed setting, in one redeploy.
    upgraded = env_with(
        cluster,
        tmp_path,
        "upgraded.env",
        ("CULL_TIMEOUT=60", "CULL_TIMEOUT=3600"),
        ("USER_CPU_LIMIT=0.5", "USER_CPU_LIMIT=0.4"),
    )
    upgraded.write_text(upgraded.read_text() + "HUB_IMAGE=swarmhub/hub-next\n")
    try:
        redeploy = run("fab", "-H", "t-hub", "hub.deploy", env_file=upgraded)
        assert redeploy.returncode == 0, redeploy.stdout + redeploy.stderr
        after = hub_container_ids(cluster)
        assert after["jupyterhub"] != before["jupyterhub"]
        assert after["chp"] == before["chp"]
        assert "hub-next" in on_hub(
            cluster, "docker inspect --format '{{.Config.Image}}' jupyterhub"
        )
        for one in students:
            assert one.run_code("print(1 + 1)").strip() == "2"
    finally:
        for one in students:
            one.stop_server()
        assert run("fab", "-H", "t-hub", "hub.deploy", env_file=cluster).returncode == 0
