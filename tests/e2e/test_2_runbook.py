"""The runbook on bare sandbox VMs: cluster.all, then a student logs in through the proxy over
HTTPS, gets a server on a node and runs code in a kernel. A second run changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from swarmhub.student import StudentError
from tests.cli import run
from tests.e2e.conftest import (
    NODES,
    STATE_DIR,
    hub_container_ids,
    keep_busy,
    node_of,
    on_hub,
    recap,
    student,
)

pytestmark = pytest.mark.e2e


def test_a_student_logs_in_and_runs_code_on_a_node(cluster: Path) -> None:
    alice = student("alice")
    alice.login()
    alice.start_server()
    assert node_of(cluster, "alice") in NODES
    assert alice.run_code("print(6*7)").strip() == "42"


def test_a_wrong_password_is_refused(cluster: Path) -> None:
    with pytest.raises(StudentError, match="refused"):
        student("mallory", "not-the-password").login()


def test_several_users_spread_over_both_nodes(cluster: Path) -> None:
    students = [student(name) for name in ("bob", "dave", "erin")]
    for one in students:
        one.login()
        one.start_server()
    placed = {node_of(cluster, s.name) for s in students} | {node_of(cluster, "alice")}
    assert placed == NODES
    for one in students:
        one.stop_server()


def test_http_redirects_to_https(cluster: Path) -> None:
    import requests

    response = requests.get("http://10.232.0.11/hub/login", allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"] == "https://10.232.0.11/hub/login"


def test_a_second_run_changes_nothing_and_keeps_every_container(cluster: Path) -> None:
    before = hub_container_ids(cluster)
    result = run("invoke", "cluster.all", env_file=cluster)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    rows = recap(result.stdout)
    assert set(rows) == {"t-hub", "t-node-1", "t-node-2", "t-proxy"}
    assert all(changed == 0 and failed == 0 for _, changed, failed in rows.values()), rows
    assert hub_container_ids(cluster) == before


def test_plan_lists_a_change_and_makes_none(cluster: Path) -> None:
    limits = "/etc/security/limits.d/90-swarmhub.conf"
    run("fab", "-H", "t-node-1", "--", f"sudo rm -f {limits}", env_file=cluster)
    result = run("invoke", "provision", "--plan", env_file=cluster)
    assert result.returncode == 0, result.stderr
    assert "[t-node-1] would change: " in result.stdout
    assert recap(result.stdout)["t-node-1"][1] == 1
    assert run("fab", "-H", "t-node-1", "--", f"test -e {limits}", env_file=cluster).returncode
    result = run("fab", "-H", "t-node-1", "provision", env_file=cluster)
    assert result.returncode == 0 and "[t-node-1] changed: wrote open-file limits" in result.stdout


def test_a_hub_setting_change_restarts_only_the_hub(cluster: Path, tmp_path: Path) -> None:
    alice = student("alice")
    alice.login()
    alice.start_server()
    # A hub restart under load outlasts the suite's 60 s culler: what this test sees must be
    # the restart's doing, not the culler's.
    keep_busy(alice)
    before = hub_container_ids(cluster)
    changed_env = tmp_path / "changed.env"
    changed_env.write_text(cluster.read_text().replace("USER_CPU_LIMIT=0.5", "USER_CPU_LIMIT=0.4"))
    try:
        result = run("fab", "-H", "t-hub", "hub.deploy", env_file=changed_env)
        assert result.returncode == 0, result.stdout + result.stderr
        after = hub_container_ids(cluster)
        assert after["jupyterhub"] != before["jupyterhub"]
        assert after["chp"] == before["chp"] and after["cull"] == before["cull"]
        assert set(after) == set(before)  # users' servers run on nodes; the hub's stack is all
        # alice's server survived the hub's restart, and her route too.
        assert alice.run_code("print('still here')").strip() == "still here"
    finally:
        result = run("fab", "-H", "t-hub", "hub.deploy", env_file=cluster)
        alice.stop_server()
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_step_on_the_wrong_role_is_refused(cluster: Path) -> None:
    result = run("fab", "-H", "t-proxy", "hub.deploy", env_file=cluster)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "error: hub.deploy runs on the hub (t-hub), but t-proxy is the proxy in sandbox.env"
    )


def _env_with_ssh_config(cluster: Path, tmp_path: Path, config_text: str) -> Path:
    config = tmp_path / "ssh_config"
    config.write_text(config_text)
    env_file = tmp_path / "bad.env"
    env_file.write_text(
        cluster.read_text().replace("SSH_CONFIG=.sandbox-test/ssh_config", f"SSH_CONFIG={config}")
    )
    return env_file


def _limits_file_missing_on_hub(cluster: Path) -> None:
    run(
        "fab",
        "-H",
        "t-hub",
        "--",
        "sudo rm -f /etc/security/limits.d/90-swarmhub.conf",
        env_file=cluster,
    )


def _hub_unchanged_then_restore(cluster: Path) -> None:
    check = run(
        "fab",
        "-H",
        "t-hub",
        "--",
        "test -e /etc/security/limits.d/90-swarmhub.conf",
        env_file=cluster,
    )
    assert check.returncode != 0, "a host was changed although the run was refused"
    assert run("fab", "-H", "t-hub", "provision", env_file=cluster).returncode == 0


def test_an_unreachable_host_stops_the_run_before_any_change(cluster: Path, tmp_path: Path) -> None:
    config = (
        (STATE_DIR / "ssh_config")
        .read_text()
        .replace("HostName 10.232.0.22", "HostName 10.232.0.99")
    )
    env_file = _env_with_ssh_config(cluster, tmp_path, config)
    _limits_file_missing_on_hub(cluster)
    result = run("invoke", "provision", env_file=env_file, extra_env={})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: t-node-2: cannot reach it over SSH")
    _hub_unchanged_then_restore(cluster)


def test_a_wrong_key_stops_the_run_before_any_change(cluster: Path, tmp_path: Path) -> None:
    from swarmhub.ssh import ensure_keypair

    ensure_keypair(tmp_path / "wrong_key", "wrong")
    config = (
        (STATE_DIR / "ssh_config")
        .read_text()
        .replace(str(STATE_DIR / "id_ed25519"), str(tmp_path / "wrong_key"))
    )
    env_file = _env_with_ssh_config(cluster, tmp_path, config)
    _limits_file_missing_on_hub(cluster)
    result = run("invoke", "provision", env_file=env_file)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SSH refused the key for user admin" in lines[0]
    _hub_unchanged_then_restore(cluster)


def test_a_broken_env_file_touches_no_host(cluster: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "broken.env"
    env_file.write_text(cluster.read_text() + "SSH_PORT=twenty-two\n")
    result = run("invoke", "cluster.all", env_file=env_file)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"error: {env_file}: SSH_PORT=twenty-two: 'twenty-two' is not a whole number"
    )
    assert "==" not in result.stdout  # no step started


def test_an_idle_server_is_culled(cluster: Path) -> None:
    carol = student("carol")
    carol.login()
    carol.start_server()
    deadline = time.monotonic() + 180  # CULL_TIMEOUT=60, CULL_EVERY=15 in the test env
    while time.monotonic() < deadline:
        model = carol.api("GET", "/users/carol").json()
        if not model.get("servers"):
            break
        time.sleep(5)
    else:
        pytest.fail("carol's idle server was not culled within 180 s")
    assert "jupyter-carol" not in on_hub(cluster, "docker service ls --format '{{.Name}}'")
