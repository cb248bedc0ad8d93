"""The sandbox over real SSH and a real Docker engine: up, reach, up again, grow, down."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.sandbox.base_image import rootfs_tag, vm_tag
from tests.cli import ROOT, docker, run
from tests.e2e.conftest import SETTINGS, VMS, container_ids

pytestmark = pytest.mark.e2e

STATE_DIR = ROOT / ".sandbox-test"


def test_fab_runs_a_command_on_every_vm(sandbox: Path) -> None:
    for vm in VMS:
        result = run("fab", "-H", vm, "--", "hostname", env_file=sandbox)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == vm


def test_the_admin_user_has_sudo_and_no_docker_yet(sandbox: Path) -> None:
    result = run(
        "fab", "-H", "t-node-2", "--", "sudo true && ! command -v docker", env_file=sandbox
    )
    assert result.returncode == 0, result.stderr


def test_vms_are_fresh_debian_13_with_systemd(sandbox: Path) -> None:
    result = run(
        "fab",
        "-H",
        "t-hub",
        "--",
        ". /etc/os-release; echo $VERSION_CODENAME; ps -p 1 -o comm=; cat /etc/machine-id",
        env_file=sandbox,
    )
    codename, init, machine_id = result.stdout.split()
    assert (codename, init) == ("trixie", "systemd")
    other = run("fab", "-H", "t-proxy", "--", "cat /etc/machine-id", env_file=sandbox)
    assert other.stdout.strip() != machine_id


def test_vms_trust_the_extra_ca_bundle(sandbox: Path) -> None:
    result = run(
        "fab",
        "-H",
        "t-node-1",
        "--",
        "ls /usr/local/share/ca-certificates/swarmhub/ | grep -c crt",
        env_file=sandbox,
    )
    assert int(result.stdout.strip()) > 0


def test_vms_name_each_other(sandbox: Path) -> None:
    result = run("fab", "-H", "t-node-1", "--", "getent hosts t-proxy t-hub", env_file=sandbox)
    assert "10.232.0.11" in result.stdout and "10.232.0.10" in result.stdout


def test_a_second_up_recreates_nothing(sandbox: Path) -> None:
    before = container_ids(VMS)
    result = run("invoke", "sandbox.up", env_file=sandbox)
    assert result.returncode == 0, result.stderr
    assert "created" not in result.stdout
    assert container_ids(VMS) == before


def test_status_shows_every_vm_with_ssh_ok(sandbox: Path) -> None:
    result = run("invoke", "sandbox.status", env_file=sandbox)
    assert result.returncode == 0, result.stdout + result.stderr
    for vm in VMS:
        line = next(line for line in result.stdout.splitlines() if line.startswith(vm + " "))
        assert "running" in line and line.rstrip().endswith("ok")


def fab_with_known_hosts(tmp_path: Path, known_hosts: str) -> subprocess.CompletedProcess[str]:
    """`fab -H t-hub -- true` with the sandbox's ssh_config, but other known host keys."""
    (tmp_path / "known_hosts").write_text(known_hosts)
    config = (STATE_DIR / "ssh_config").read_text()
    config = config.replace(str(STATE_DIR / "known_hosts"), str(tmp_path / "known_hosts"))
    (tmp_path / "ssh_config").write_text(config)
    return run("fab", "-S", str(tmp_path / "ssh_config"), "-H", "t-hub", "--", "true")


def test_a_changed_host_key_is_refused(sandbox: Path, tmp_path: Path) -> None:
    known = (STATE_DIR / "known_hosts").read_text()
    other_key = (STATE_DIR / "id_ed25519.pub").read_text().split()[:2]  # any other key
    tampered = "".join(
        f"{line.split()[0]} {' '.join(other_key)}\n" for line in known.splitlines() if line
    )
    result = fab_with_known_hosts(tmp_path, tampered)
    assert result.returncode != 0
    assert "host key does not match" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_host_key_is_refused_not_accepted(sandbox: Path, tmp_path: Path) -> None:
    result = fab_with_known_hosts(tmp_path, "")
    assert result.returncode != 0
    assert "host key is not known" in result.stderr
    assert (tmp_path / "known_hosts").read_text() == ""


def test_more_nodes_leave_the_others_alone(sandbox: Path) -> None:
    before = container_ids(VMS)
    result = run("invoke", "sandbox.up", "--nodes", "3", env_file=sandbox)
    assert result.returncode == 0, result.stderr
    assert "t-node-3: created" in result.stdout
    assert container_ids(VMS) == before
    assert run("fab", "-H", "t-node-3", "--", "hostname", env_file=sandbox).stdout.strip() == (
        "t-node-3"
    )


def test_a_taken_address_range_is_one_clear_line(tmp_path: Path, sandbox: Path) -> None:
    env_file = tmp_path / "clash.env"
    env_file.write_text(
        sandbox.read_text()
        .replace("SANDBOX_NAME=swarmhub-test", "SANDBOX_NAME=swarmhub-clash")
        .replace(".sandbox-test", str(tmp_path / "state"))
    )
    result = run("invoke", "sandbox.up", env_file=env_file)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "error: the address range 10.232.0.0/24 (SANDBOX_SUBNET) is already used by docker "
        "network swarmhub-test-sandbox: set SANDBOX_SUBNET in clash.env to a free private range"
    )
    assert not docker("ps", "-aq", "--filter", "label=io.swarmhub.sandbox=swarmhub-clash")


def test_a_vm_that_does_not_come_up_in_time_shows_its_last_log_lines(
    tmp_path: Path, sandbox: Path
) -> None:
    # A VM whose sshd cannot start never comes up, however fast the machine: a short timeout
    # alone raced a fast boot (a CI machine booted the VMs within the second).
    broken = f"swarmhub/sandbox-rootfs:no-sshd-{uuid.uuid4().hex[:8]}"
    context = tmp_path / "broken"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {rootfs_tag(SETTINGS.sandbox_suite)}\n"
        "RUN mkdir -p /etc/systemd/system/ssh.service.d && printf "
        "'[Service]\\nExecStartPre=/bin/false\\n' > /etc/systemd/system/ssh.service.d/broken.conf\n"
    )
    docker("build", "--quiet", "--tag", broken, str(context))
    env_file = tmp_path / "slow.env"
    env_file.write_text(
        "HUB_HOST=slow-hub\nNODE_HOSTS=slow-node-1\nPROXY_HOST=slow-hub\n"
        "SANDBOX_NAME=swarmhub-slow\nSANDBOX_SUBNET=10.233.0.0/24\n"
        f"SANDBOX_DIR={tmp_path / 'state'}\nSANDBOX_BOOT_TIMEOUT=3\n"
        f"SANDBOX_BASE_IMAGE={broken}\n"
    )
    try:
        result = run("invoke", "sandbox.up", env_file=env_file)
        assert result.returncode != 0
        assert "did not come up within 3 s" in result.stderr
        assert "its last log lines:" in result.stderr
    finally:
        assert run("invoke", "sandbox.down", env_file=env_file).returncode == 0
        docker("rmi", "--force", vm_tag(settings.load(str(env_file))), broken)


@pytest.mark.last
def test_down_removes_the_sandbox_and_nothing_else(sandbox: Path) -> None:
    image = docker("inspect", "--format", "{{.Config.Image}}", "t-hub")
    bystander = f"bystander-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", bystander, "--entrypoint", "sleep", image, "600")
    try:
        result = run("invoke", "sandbox.down", env_file=sandbox)
        assert result.returncode == 0, result.stderr
        label = "label=io.swarmhub.sandbox=swarmhub-test"
        assert not docker("ps", "-aq", "--filter", label)
        assert not docker("volume", "ls", "-q", "--filter", label)
        assert not docker("network", "ls", "-q", "--filter", label)
        assert not STATE_DIR.exists()
        assert docker("inspect", "--format", "{{.State.Running}}", bystander) == "true"
    finally:
        docker("rm", "-f", bystander)
