"""Metrics and alerts (monitor.metrics): Prometheus on the hub counts the servers of a login
storm of twenty, `invoke metrics` shows them, no monitoring port answers from outside or from a
student's kernel, a second cluster.all changes nothing; last (destructive), a node VM
powered off is one notification at a webhook sink, and one "resolved" once it is back.

The sink is test_4b's (a container on the sandbox's network); Alertmanager's Slack payloads
land in its alertmanager.jsonl, the agent's in alerts.jsonl.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swarmhub.ports import (
    ALERTMANAGER_PORT,
    BLACKBOX_PORT,
    CHP_METRICS_PORT,
    DASHBOARD_PORT,
    DOCKER_METRICS_PORT,
    NODE_EXPORTER_PORT,
    PROMETHEUS_PORT,
)
from swarmhub.student import KernelDied, Student
from tests.cli import docker, run
from tests.e2e.conftest import ADDRESSES, HUB, NODE_LIST, PROXY, env_with, on_hub, student
from tests.e2e.test_4_observe import wait_until_healthy
from tests.e2e.test_4b_monitor import Sink, sink  # noqa: F401 (the sink fixture)
from tests.e2e.test_7b_isolation import REACH

pytestmark = pytest.mark.e2e

MONITORING_PORTS = (
    PROMETHEUS_PORT,
    ALERTMANAGER_PORT,
    9094,  # Alertmanager's cluster gossip (turned off)
    BLACKBOX_PORT,
    NODE_EXPORTER_PORT,
    CHP_METRICS_PORT,
    DASHBOARD_PORT,  # the admins' dashboard's front: reached by chp on the hub alone
    DOCKER_METRICS_PORT,
)
USERS = ("metrics-ann", "metrics-bob", "metrics-cem")
# The login storm: 20 servers at once. The test env's nodes (each sees this machine's memory,
# 23 GiB here, and 2 cores) reserve 512M a server: 10 GiB in all, 2 a node start at once.
STORM = tuple(f"storm-{index:02}" for index in range(20))
WEBHOOK_PATH = "/hooks/metrics-secret-path"


def query(cluster: Path, expr: str) -> list[dict]:
    """An instant query of Prometheus, on the hub (it listens on its loopback only)."""
    answer = on_hub(
        cluster,
        f"curl -sS --get http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query "
        f"--data-urlencode 'query={expr}'",
    )
    return json.loads(answer)["data"]["result"]


def wait_for_value(cluster: Path, expr: str, at_least: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    value = float("nan")
    while time.monotonic() < deadline:
        result = query(cluster, expr)
        value = float(result[0]["value"][1]) if result else float("nan")
        if value >= at_least:
            return value
        time.sleep(3)
    raise AssertionError(f"{expr} = {value} after {timeout:.0f} s, wanted >= {at_least}")


@pytest.fixture(scope="module")
def alerting(cluster: Path, sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:  # noqa: F811
    """Alertmanager and the agent posting to the sink; back to no webhook at the end."""
    env = tmp_path_factory.mktemp("env") / "alerting.env"
    env.write_text(
        cluster.read_text()
        + f"ALERT_WEBHOOK_URL=http://{sink.address}:8080{WEBHOOK_PATH}\n"
        + "ALERT_MIN_INTERVAL=30\n"
    )
    result = run("invoke", "monitor.deploy", "monitor.metrics", env_file=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert WEBHOOK_PATH not in result.stdout + result.stderr
    assert "Alertmanager's routes: alertmanager.yml checked and installed" in result.stdout
    yield env
    result = run("invoke", "monitor.deploy", "monitor.metrics", env_file=cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed the swarmhub-agent" in result.stdout


SPAWNS = 'sum(jupyterhub_server_spawn_duration_seconds_count{status="success"})'
HUB_STARTED = 'max(process_start_time_seconds{job="jupyterhub"})'


def test_prometheus_counts_a_login_storm_of_twenty(cluster: Path, tmp_path: Path) -> None:
    # No culling while the twenty start (the test env culls a server idle for 60 s, and the
    # last ones wait in line longer than that): only the culler restarts, and back after.
    patient = env_with(cluster, tmp_path, "patient.env", ("CULL_TIMEOUT=60", "CULL_TIMEOUT=3600"))
    assert run("fab", "-H", HUB, "hub.deploy", env_file=patient).returncode == 0
    students = [student(name) for name in STORM]
    spawned = query(cluster, SPAWNS)
    before = float(spawned[0]["value"][1]) if spawned else 0.0
    # Prometheus's last scrape may be of a hub that an earlier test restarted since: then the
    # new hub counts from 0 (its start time tells).
    started = [r["value"][1] for r in query(cluster, HUB_STARTED)]

    def arrive(one: Student) -> None:
        one.login()
        one.start_server()

    started_at = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=len(students)) as pool:
            list(pool.map(arrive, students))
        print(f"{len(students)} servers started in {time.monotonic() - started_at:.0f} s")
        # the start-duration histogram counted every start (within 3 minutes: on a busy
        # machine the hub's scrapes can time out for a minute after a storm, Prometheus then
        # still holding a count of mid-storm)
        deadline = time.monotonic() + 180
        while True:
            same_hub = [r["value"][1] for r in query(cluster, HUB_STARTED)] == started
            counted = query(cluster, SPAWNS)
            value = float(counted[0]["value"][1]) if counted else 0.0
            wanted = before + len(STORM) if same_hub else len(STORM)
            if value >= wanted:
                break
            assert time.monotonic() < deadline, f"{SPAWNS} = {value}, wanted >= {wanted}"
            time.sleep(3)
        wait_for_value(
            cluster, "max_over_time(jupyterhub_running_servers[10m])", len(STORM), timeout=60
        )
        # every target answers: the node exporters, the Docker engines, the hub (its token),
        # chp, the proxy's TLS (within a few scrapes: one can fail on a busy machine, or
        # while the hub restarts after an earlier test)
        deadline = time.monotonic() + 60
        while True:
            up = {
                (r["metric"]["job"], r["metric"]["host"]): r["value"][1]
                for r in query(cluster, "up")
            }
            if all(value == "1" for value in up.values()) or time.monotonic() > deadline:
                break
            time.sleep(5)
        jobs = {"node", "docker", "jupyterhub", "chp", "proxy", "alertmanager"}
        assert {job for job, _ in up} >= jobs
        assert all(value == "1" for value in up.values()), up
        assert {host for job, host in up if job == "node"} == {HUB, PROXY, *NODE_LIST}
        assert {host for job, host in up if job == "docker"} == {HUB, *NODE_LIST}
        assert query(cluster, 'engine_daemon_container_states_containers{state="running"}')
        # each server's memory and CPU, by user (swarmhub-server-metrics on the nodes)
        for name in STORM[:3]:
            memory = f'swarmhub_server_memory_bytes{{user="{name}"}}'
            wait_for_value(cluster, memory, 1, timeout=60)
            limit = query(cluster, f'swarmhub_server_memory_limit_bytes{{user="{name}"}}')
            assert float(limit[0]["value"][1]) == 512 * 2**20, limit  # USER_MEM_LIMIT=512M
            assert query(cluster, f'swarmhub_server_cpu_seconds_total{{user="{name}"}}')
        assert query(cluster, "probe_ssl_earliest_cert_expiry"), "no certificate end date"

        # The hour's highest is "-" until Prometheus holds a minute or so of the storm (a
        # sandbox deployed just before, when this test runs alone): asked again until it is a
        # figure.
        deadline = time.monotonic() + 120
        while True:
            result = run("invoke", "metrics", env_file=cluster)
            row = next(line for line in result.stdout.splitlines() if line.startswith("running"))
            if row.split()[-1] != "-" or time.monotonic() > deadline:
                break
            time.sleep(10)
        assert int(row.split()[-1]) >= len(STORM), result.stdout  # the hour's highest
        # No alert but, in the shared suite, test_4b's OOM kill of a few minutes ago (it fires
        # for 5 minutes); exit 1 while one fires.
        firing = [line for line in result.stdout.splitlines() if line.startswith("! ")]
        assert all(line.startswith("! ServerOOMKilled ") for line in firing), result.stdout
        assert result.returncode == (1 if firing else 0), result.stdout + result.stderr
        assert firing or "alerts: none firing" in result.stdout
        # the ten using the most memory, of the twenty
        assert sum(name in result.stdout for name in STORM) >= 10, result.stdout
        # The spawner's own histograms counted every start too, the wait in line apart from
        # the start itself (asked last: they need no running server, and the suite's quick
        # culler leaves the figures above no time to spare).
        for histogram in ("swarmhub_spawn_queue_wait_seconds", "swarmhub_server_start_seconds"):
            wait_for_value(cluster, f"{histogram}_count", len(STORM), timeout=60)
        assert query(cluster, "swarmhub_spawn_queue_waiting")
    finally:
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda each: each.stop_server(), students))
        assert run("fab", "-H", HUB, "hub.deploy", env_file=cluster).returncode == 0


def test_the_backup_writes_its_age_for_prometheus(cluster: Path) -> None:
    assert run("invoke", "backup.run", env_file=cluster).returncode == 0
    # a series only while the last good backup is younger than 2 minutes: this one
    wait_for_value(
        cluster, "time() - swarmhub_backup_last_success_timestamp_seconds < 120", 0, timeout=60
    )


def test_no_monitoring_port_answers_from_outside(cluster: Path) -> None:
    for host in (PROXY, HUB, NODE_LIST[0]):
        for port in MONITORING_PORTS:
            with pytest.raises(OSError):
                socket.create_connection((ADDRESSES[host], port), timeout=3).close()


def test_no_monitoring_port_answers_a_students_kernel(cluster: Path) -> None:
    kernel = student("metrics-kim")
    kernel.login()
    kernel.start_server()
    try:
        targets = [
            (f"{host}:{port}", ADDRESSES[host], port)
            for host in (HUB, PROXY, *NODE_LIST)
            for port in MONITORING_PORTS
        ]
        found = json.loads(kernel.run_code(f"TARGETS = {targets!r}\n" + REACH))
        assert set(found.values()) == {"blocked"}, found
    finally:
        kernel.stop_server()


def test_a_second_cluster_all_changes_nothing(cluster: Path) -> None:
    result = run("invoke", "cluster.all", env_file=cluster, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    # Each change with the four lines before it (its step's header among them): the output's
    # end alone may not show the one change.
    lines = result.stdout.splitlines()
    at = [i for i, line in enumerate(lines) if "changed:" in line]
    changes = ["\n".join(lines[max(0, i - 4) : i + 1]) for i in at]
    assert not changes, "\n---\n".join(changes)


def test_metrics_off_stops_them_and_on_starts_them_again(cluster: Path, tmp_path: Path) -> None:
    off = tmp_path / "off.env"
    off.write_text(cluster.read_text() + "METRICS=off\n")
    result = run("invoke", "monitor.metrics", env_file=off)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stopped prometheus (METRICS=off)" in result.stdout
    assert "stopped swarmhub-dashboard.service (METRICS=off)" in result.stdout  # the admins'
    asked = run("invoke", "metrics", env_file=off)
    assert asked.returncode == 1 and "METRICS=off" in asked.stderr, asked.stderr
    result = run("invoke", "monitor.metrics", env_file=cluster)
    assert result.returncode == 0 and "started prometheus" in result.stdout, result.stdout
    assert "swarmhub-dashboard.service started" in result.stdout
    wait_for_value(cluster, 'sum(up{job="node"})', len(NODE_LIST) + 2, timeout=60)


def test_an_oom_kill_is_a_metric_naming_the_user_and_one_notification(
    alerting: Path,
    sink: Sink,  # noqa: F811
) -> None:
    user = "metrics-oona"
    oona = student(user)
    oona.login()
    oona.start_server()
    try:
        with pytest.raises(KernelDied):  # USER_MEM_LIMIT=512M in the test env
            oona.run_code("hog = bytearray(900 * 2**20)")
        sink.wait_for("alerts.jsonl", f"{user}'s server", timeout=30)  # the agent's, at once
        last = f'swarmhub_server_last_oom_kill_timestamp_seconds{{user="{user}"}}'
        wait_for_value(alerting, f"time() - {last} < 120", 0, timeout=60)  # this kill
        assert query(alerting, f'swarmhub_server_oom_kills_total{{user="{user}"}}')
        deadline = time.monotonic() + 60
        while True:
            result = run("invoke", "metrics", env_file=alerting)
            # this user's (test_4b's OOM kill, a few minutes ago, may be firing too)
            if f"{user}'s server was OOM-killed" in result.stdout:
                break
            assert time.monotonic() < deadline, result.stdout
            time.sleep(5)
        assert result.returncode == 1, result.stdout
        assert f"{user}'s server was OOM-killed on {NODE_LIST[0][:-1]}" in result.stdout
        assert f"first: invoke logs user:{user}" in result.stdout
        time.sleep(45)  # past Alertmanager's group_wait: the agent's alert is the only one
        assert not [e for e in sink.received("alertmanager.jsonl") if user in e["text"]]
        assert len([e for e in sink.received("alerts.jsonl") if user in e["text"]]) == 1
    finally:
        oona.stop_server()


def firing_and_resolved(sink: Sink, node: str) -> tuple[list[str], list[str]]:  # noqa: F811
    got = [entry["text"] for entry in sink.received("alertmanager.jsonl")]
    return [t for t in got if t.startswith("[FIRING")], [
        t for t in got if node in t and t.startswith("[RESOLVED")
    ]


def test_a_node_powered_off_is_one_notification(
    alerting: Path,
    sink: Sink,  # noqa: F811
    cluster: Path,
) -> None:
    node = NODE_LIST[-1]
    killed = time.time()
    docker("kill", node)
    try:
        deadline = time.monotonic() + 150
        while not firing_and_resolved(sink, node)[0]:
            assert time.monotonic() < deadline, "no notification within 150 s"
            time.sleep(2)
        firing, _ = firing_and_resolved(sink, node)
        assert "HostDown" in firing[0] and node in firing[0], firing
        assert "First: invoke status" in firing[0]
        result = run("invoke", "metrics", env_file=cluster)
        assert result.returncode == 1 and f"! HostDown {node}" in result.stdout, result.stdout
        time.sleep(60)  # nothing else about it (inhibited, grouped), nor from the agent
        assert len(firing_and_resolved(sink, node)[0]) == 1, sink.received("alertmanager.jsonl")
        from_agent = [e for e in sink.received("alerts.jsonl") if e["at"] >= killed]
        assert not [e for e in from_agent if node in e["text"]], from_agent
    finally:
        up = run("invoke", "sandbox.up", env_file=cluster)
        assert up.returncode == 0, up.stdout + up.stderr
    deadline = time.monotonic() + 180
    while not firing_and_resolved(sink, node)[1]:
        assert time.monotonic() < deadline, sink.received("alertmanager.jsonl")
        time.sleep(2)
    firing, resolved = firing_and_resolved(sink, node)
    assert (len(firing), len(resolved)) == (1, 1), sink.received("alertmanager.jsonl")
    wait_until_healthy(cluster)
    # The tests after this module find a cluster whose servers start on every node again.
    students = [student(name) for name in USERS]
    for each in students:
        each.login()
    try:
        with ThreadPoolExecutor(max_workers=len(students)) as pool:
            list(pool.map(lambda each: each.start_server(), students))
    finally:
        for each in students:
            each.stop_server()
