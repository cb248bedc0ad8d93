"""Looking into the deployed test sandbox: status, logs, health and the diagnostic archive,
through the real command line."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.cli import BIN, ROOT, run
from tests.e2e.conftest import PASSWORD, VMS, on_hub, student

pytestmark = pytest.mark.e2e

SECRET_FILES = ("cookie_secret", "proxy_token", "crypt_key", "culler_token")


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def wait_until_healthy(cluster: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = run("invoke", "status", env_file=cluster)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {timeout:.0f} s:\n{result.stdout}")
        time.sleep(3)


def test_status_of_the_healthy_cluster(cluster: Path) -> None:
    result = run("invoke", "status", env_file=cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    assert last_line(result.stdout).startswith("healthy: 4 hosts up, ")
    for host in VMS:
        assert host in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("!")]


def test_status_as_json(cluster: Path) -> None:
    result = run("invoke", "status", "--json", env_file=cluster)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["healthy"] is True and document["problems"] == []
    assert {row["name"] for row in document["hosts"]} == set(VMS)
    assert {row["name"] for row in document["stack"]} >= {"chp", "jupyterhub", "cull"}
    assert document["proxy"][0]["cert_days_left"] > 14


def test_a_stopped_hub_is_named_and_comes_back(cluster: Path) -> None:
    on_hub(cluster, "docker stop jupyterhub")
    try:
        result = run("invoke", "status", env_file=cluster)
        assert result.returncode != 0
        assert "container jupyterhub exited" in last_line(result.stdout)
        marked = [line for line in result.stdout.splitlines() if line.startswith("!")]
        assert any("jupyterhub" in line for line in marked), result.stdout
        document = json.loads(run("invoke", "status", "--json", env_file=cluster).stdout)
        assert document["healthy"] is False
        down = run("invoke", "health", env_file=cluster)
        assert down.returncode == 1
        assert down.stdout.startswith("unhealthy: ") and "hub api" in down.stdout
    finally:
        on_hub(cluster, "docker start jupyterhub")
    wait_until_healthy(cluster)


def test_logs_of_the_hub_with_a_tail(cluster: Path) -> None:
    result = run("invoke", "logs", "hub", "--tail", "5", env_file=cluster)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
    assert "JupyterHub" in result.stdout


def test_logs_of_docker_name_every_docker_host(cluster: Path) -> None:
    result = run("invoke", "logs", "docker", "--tail", "3", env_file=cluster)
    assert result.returncode == 0, result.stderr
    prefixes = {line.split("]")[0] + "]" for line in result.stdout.splitlines()}
    assert prefixes == {"[t-hub]", "[t-node-1]", "[t-node-2]"}


def test_logs_of_the_proxy(cluster: Path) -> None:
    result = run("invoke", "logs", "proxy", "--tail", "5", env_file=cluster)
    assert result.returncode == 0, result.stderr
    assert "[t-proxy access.log] " in result.stdout


def test_logs_of_a_users_server(cluster: Path) -> None:
    grace = student("obs-grace")
    grace.login()
    grace.start_server()
    try:
        result = run("invoke", "logs", "user:obs-grace", "--tail", "200", env_file=cluster)
        assert result.returncode == 0, result.stderr
        assert "jupyter-obs-2dgrace" in result.stdout  # each line names the task and its node
        assert "/user/obs-grace/" in result.stdout
    finally:
        grace.stop_server()


def test_logs_of_a_user_without_a_server(cluster: Path) -> None:
    result = run("invoke", "logs", "user:obs-nobody", env_file=cluster)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: obs-nobody has no server (no swarm service jupyter-obs-2dnobody on t-hub): "
        "start one, or see the running ones with invoke status"
    ]


def sigint_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_logs_follow_streams_until_ctrl_c(cluster: Path) -> None:
    env = {**os.environ, "SWARMHUB_ENV": str(cluster)}
    follower = subprocess.Popen(
        [str(BIN / "invoke"), "logs", "hub", "--follow", "--tail", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        # As at a terminal: a suite started in the background (`bash .ci/run &`) ignores
        # SIGINT, and a Python started with SIGINT ignored never raises KeyboardInterrupt.
        preexec_fn=sigint_as_at_a_terminal,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in follower.stdout or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        lines.get(timeout=30)  # the last line so far: the stream is open
        # A request the hub logs (a 404) with a path found nowhere else.
        on_hub(cluster, "curl -s -o /dev/null http://127.0.0.1:8000/hub/api/obs-follow")
        deadline = time.monotonic() + 30
        while "obs-follow" not in lines.get(timeout=max(0.1, deadline - time.monotonic())):
            pass
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=15)
    # Ctrl-C closed the connection, and with it the remote `docker logs --follow`.
    time.sleep(1)
    assert "docker logs" not in on_hub(cluster, "ps -eo args | grep '[d]ocker logs' || true")


def test_health_is_one_line_and_fast(cluster: Path) -> None:
    started = time.monotonic()
    result = run("invoke", "health", env_file=cluster)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    # The backup repository (BACKUP_DIR/restic on the hub here) answers, with its last snapshot.
    assert line.startswith("healthy: proxy https ok, hub api ok, 2/2 nodes ready, backups ok ("), (
        line
    )
    assert took < 15, f"health took {took:.1f} s"


def test_diagnose_covers_every_host_and_holds_no_secret(cluster: Path, tmp_path: Path) -> None:
    archive_path = tmp_path / "report.tar.gz"
    result = run("invoke", "diagnose", "--output", str(archive_path), env_file=cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == str(archive_path)
    secrets = {
        name: on_hub(cluster, f"sudo cat /srv/swarmhub/secrets/{name}").strip()
        for name in SECRET_FILES
    }
    secrets["DUMMY_PASSWORD"] = PASSWORD
    assert all(len(value) >= 8 for value in secrets.values())
    with tarfile.open(archive_path) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        names = [m.name for m in members]
        texts = {m.name: archive.extractfile(m).read().decode(errors="replace") for m in members}  # type: ignore[union-attr]
    assert "report/status.json" in names
    assert json.loads(texts["report/status.json"])["healthy"] is True
    for host in VMS:
        assert any(name.startswith(f"report/hosts/{host}/") for name in names), host
    assert "report/hosts/t-hub/logs/jupyterhub.log" in names
    # the last hour's key figures (invoke metrics) and the alert rules
    assert "running servers" in texts["report/metrics.txt"], texts["report/metrics.txt"]
    assert "report/hosts/t-hub/config/etc/prometheus/swarmhub-rules.yml" in names
    assert "report/hosts/t-proxy/config/etc/nginx/sites-available/swarmhub" in names
    assert not [name for name in names if "/secrets/" in name]
    for name, value in secrets.items():
        leaks = [path for path, text in texts.items() if value in text]
        assert not leaks, f"the {name} secret is in {leaks}"
