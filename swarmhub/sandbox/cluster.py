"""Bring the sandbox up, look at it, tear it down.

State lives in Docker itself (containers, the network and volumes carry the sandbox's label),
and in ``SANDBOX_DIR``: the provisioner's key, the VMs' recorded host keys and the ssh_config
that Fabric and ``ssh`` read. Nothing else on the Docker engine is touched.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from swarmhub import local, ssh
from swarmhub.ca import BUNDLE_PATH, DIGEST_FILE, ca_digest, split_pem_bundle, trust_command
from swarmhub.errors import SwarmhubError
from swarmhub.parallel import pool_width
from swarmhub.sandbox import base_image, commands
from swarmhub.sandbox.plan import VM, hosts_block, plan_vms, with_hosts_block
from swarmhub.settings import Settings

Log = Callable[[str], None]

KEY_NAME = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
SSH_CONFIG = "ssh_config"
STATE_FILES = (KEY_NAME, KEY_NAME + ".pub", KNOWN_HOSTS, SSH_CONFIG)


@dataclass(frozen=True)
class RunningVM:
    """A sandbox container as Docker reports it."""

    name: str
    container_id: str
    state: str
    role: str
    address: str


def existing_vms(settings: Settings) -> dict[str, RunningVM]:
    """The sandbox's containers, by name."""
    out = local.run(commands.list_vms(settings.sandbox_name), what="listing the sandbox").stdout
    vms = {}
    for line in out.splitlines():
        name, container_id, state, role, address = (line.split("\t") + [""] * 5)[:5]
        vms[name] = RunningVM(name, container_id, state, role, address)
    return vms


def _docker_subnets() -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    ids = local.docker("network", "ls", "--quiet").stdout.split()
    if not ids:
        return []
    template = "{{.Name}}\t{{range .IPAM.Config}}{{.Subnet}} {{end}}"
    out = local.docker("network", "inspect", "--format", template, *ids).stdout
    subnets = []
    for line in out.splitlines():
        name, _, texts = line.partition("\t")
        subnets += [(name, ipaddress.ip_network(text, strict=False)) for text in texts.split()]
    return subnets


def _host_routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    try:
        out = local.run(["ip", "-4", "route", "show"], check=False).stdout
    except SwarmhubError:
        return []  # no iproute2: Docker's own check still catches overlaps
    routes = []
    for line in out.splitlines():
        words = line.split()
        if words and words[0] != "default" and "dev" in words:
            try:
                target = ipaddress.IPv4Network(words[0], strict=False)
            except ValueError:
                continue
            routes.append((target, words[words.index("dev") + 1]))
    return routes


def subnet_users(subnet: ipaddress.IPv4Network, own_network: str) -> list[str]:
    """What on this machine, other than the sandbox's own network, already uses ``subnet``."""
    users = [
        f"docker network {name}"
        for name, network in _docker_subnets()
        if name != own_network and network.version == 4 and network.overlaps(subnet)
    ]
    users += [
        f"the route {target} on {device}"
        for target, device in _host_routes()
        if not device.startswith(("br-", "docker")) and target.overlaps(subnet)
    ]
    return users


def ensure_network(settings: Settings, log: Log) -> bool:
    """The sandbox's bridge network on SANDBOX_SUBNET. True when created."""
    name = commands.network_name(settings.sandbox_name)
    subnet = settings.sandbox_subnet
    found = local.docker(
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        name,
        check=False,
    )
    if found.returncode == 0:
        if found.stdout.strip() != str(subnet):
            raise SwarmhubError(
                f"the sandbox network {name} uses {found.stdout.strip()}, not SANDBOX_SUBNET="
                f"{subnet}: run invoke sandbox.down first, or set SANDBOX_SUBNET back"
            )
        return False
    taken = subnet_users(subnet, name)
    if taken:
        raise SwarmhubError(
            f"the address range {subnet} (SANDBOX_SUBNET) is already used by {taken[0]}: set "
            f"SANDBOX_SUBNET in {settings.source.name} to a free private range"
        )
    proc = local.run(commands.create_network(settings.sandbox_name, str(subnet)), check=False)
    if proc.returncode != 0:
        if "overlap" in proc.stderr:
            raise SwarmhubError(
                f"the address range {subnet} (SANDBOX_SUBNET) is already in use on this "
                f"machine: set SANDBOX_SUBNET in {settings.source.name} to a free private range"
            )
        raise SwarmhubError(f"creating the network {name} failed: {local.last_line(proc.stderr)}")
    log(f"network {name} ({subnet}) created")
    return True


def privileged_mode(settings: Settings, image: str) -> bool:
    """Whether VMs run with --privileged: as set, or (auto) whether this engine allows it."""
    if settings.sandbox_privileged != "auto":
        return settings.sandbox_privileged == "yes"
    probe = local.docker(
        "run", "--rm", "--privileged", "--entrypoint=/bin/true", image, check=False, timeout=60
    )
    return probe.returncode == 0


def _wait_until_up(vm: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        proc = local.run(commands.boot_state(vm), check=False)
        words = proc.stdout.split()
        state = " ".join(words)
        if len(words) == 2 and words[0] in ("running", "degraded") and words[1] == "active":
            return
        if "is not running" in proc.stderr:
            break  # the container died: no point in waiting
        time.sleep(0.5)
    logs = local.docker("logs", "--tail", "8", vm, check=False)
    tail = " | ".join(
        line.strip() for line in (logs.stdout + logs.stderr).splitlines()[-8:] if line.strip()
    )
    raise SwarmhubError(
        f"{vm} did not come up within {timeout:.0f} s (systemd/sshd: {state or 'no answer'}); "
        f"its last log lines: {tail or '(none)'}; see docker logs {vm}"
    )


def ensure_etc_hosts(vm: str, block: str, marker: str) -> bool:
    """Every VM names every other in its /etc/hosts (Docker's DNS alone was seen to fail)."""
    current = local.docker("exec", vm, "cat", "/etc/hosts").stdout
    wanted = with_hosts_block(current, block, marker)
    if wanted == current:
        return False
    local.docker("exec", "-i", vm, "sh", "-c", "cat > /etc/hosts", input=wanted)
    return True


def ensure_extra_ca(vm: str, bundle: Path) -> bool:
    """The VM trusts the CAs of ``bundle`` (as cloud-init's ca_certs would). True on change."""
    pem = bundle.read_text()
    digest = ca_digest(pem)
    current = local.docker("exec", vm, "cat", DIGEST_FILE, check=False).stdout.strip()
    if current == digest:
        return False
    # The bundle goes in on stdin, then the provision step's own command makes it trusted.
    script = f"cat > {BUNDLE_PATH} && {trust_command(BUNDLE_PATH, digest)}"
    local.run(
        ["docker", "exec", "-i", vm, "sh", "-c", script],
        input="".join(split_pem_bundle(pem)),
        what=f"trusting the CAs of {bundle} on {vm}",
    )
    return True


def _create_vm(settings: Settings, vm: VM, image: str, key: str, privileged: bool) -> str:
    # A volume left by a VM removed without it (`docker rm -f`, a run killed meanwhile) would
    # start the new VM's engine with the old one's containers: seen as a hub whose old
    # container bind-mounted its config file before hub.deploy wrote it (Docker made a
    # directory there). A new VM is a bare disk.
    local.run(commands.remove_volume(settings.sandbox_name, vm.name), check=False)
    local.run(commands.label_volume(settings.sandbox_name, vm.name), what=f"volume of {vm.name}")
    proc = local.run(
        commands.run_vm(
            vm,
            sandbox=settings.sandbox_name,
            image=image,
            authorized_key=key,
            privileged=privileged,
            with_fuse_device=os.path.exists("/dev/fuse"),
        ),
        check=False,
    )
    if proc.returncode != 0:
        if "is already in use by container" in proc.stderr:
            raise SwarmhubError(
                f"a container named {vm.name} exists but is not part of this sandbox: rename or "
                "remove it, or change the host names in the env file"
            )
        raise SwarmhubError(f"starting {vm.name} failed: {local.last_line(proc.stderr)}")
    return proc.stdout.strip()


def up(settings: Settings, node_count: int | None, log: Log) -> list[RunningVM]:
    """Make sure every planned VM exists and runs; create only what is missing."""
    local.check_docker_engine()
    try:
        planned = plan_vms(settings, node_count)
    except ValueError as error:
        raise SwarmhubError(f"sandbox: {error}") from None
    state_dir = settings.sandbox_dir
    key_file = state_dir / KEY_NAME
    if ssh.ensure_keypair(key_file, comment=f"swarmhub sandbox {settings.sandbox_name}"):
        log(f"SSH key {key_file} created")
    public_key = (state_dir / (KEY_NAME + ".pub")).read_text().strip()

    existing = existing_vms(settings)
    missing = [vm for vm in planned if vm.name not in existing]
    stopped = [name for name, vm in existing.items() if vm.state != "running"]
    for vm in planned:
        if vm.name in existing and existing[vm.name].address != vm.address:
            raise SwarmhubError(
                f"{vm.name} has address {existing[vm.name].address}, not {vm.address}: "
                "run invoke sandbox.down and up again"
            )
    ensure_network(settings, log)
    if missing:
        image = base_image.ensure_vm_image(settings, log)
        privileged = privileged_mode(settings, image)
        mode = "--privileged" if privileged else "without --privileged"
        for vm in missing:
            _create_vm(settings, vm, image, public_key, privileged)
            log(f"{vm.name}: created ({vm.role}, {vm.address}, {mode})")
    for name in stopped:
        local.docker("start", name, what=f"starting {name}")
        log(f"{name}: started")

    current = existing_vms(settings)
    all_vms = [VM(v.name, v.role, v.address) for v in current.values()]
    with ThreadPoolExecutor(max_workers=pool_width(len(all_vms))) as pool:
        list(pool.map(lambda v: _wait_until_up(v.name, settings.sandbox_boot_timeout), all_vms))
    marker = f"swarmhub sandbox {settings.sandbox_name}"
    block = hosts_block(all_vms, marker)
    for vm in all_vms:
        if ensure_etc_hosts(vm.name, block, marker):
            log(f"{vm.name}: /etc/hosts names the other VMs")
        if settings.extra_ca_bundle and ensure_extra_ca(vm.name, settings.extra_ca_bundle):
            log(f"{vm.name}: trusts the CAs of {settings.extra_ca_bundle}")
    write_ssh_files(settings, all_vms, log)
    return sorted(current.values(), key=lambda v: v.address)


def write_ssh_files(settings: Settings, vms: list[VM], log: Log) -> None:
    """Record each VM's host key (read through Docker, not over SSH) and write the ssh_config."""
    state_dir = settings.sandbox_dir
    hosts = [
        ssh.SshHost(
            name=vm.name,
            address=vm.address,
            user=settings.ssh_user,
            port=22,
            identity_file=state_dir / KEY_NAME,
            host_key=" ".join(local.run(commands.read_host_key(vm.name)).stdout.split()[:2]),
        )
        for vm in sorted(vms, key=lambda v: v.name)
    ]
    known_hosts = state_dir / KNOWN_HOSTS
    changed = ssh.write_if_changed(known_hosts, ssh.render_known_hosts(hosts))
    header = "Written by `invoke sandbox.up` for the sandbox's VMs; sandbox.down removes it."
    changed |= ssh.write_if_changed(
        state_dir / SSH_CONFIG, ssh.render_ssh_config(hosts, known_hosts, header)
    )
    if changed:
        log(f"SSH config and host keys written to {state_dir}")


def down(settings: Settings, log: Log) -> None:
    """Remove the sandbox's containers, network, volumes and keys, and nothing else."""
    local.check_docker_engine()
    names = list(existing_vms(settings))
    if names:
        local.run(commands.remove_containers(names), what="removing the sandbox's VMs")
        log(f"removed {', '.join(sorted(names))}")
    volumes = local.run(commands.list_volumes(settings.sandbox_name)).stdout.split()
    if volumes:
        local.docker("volume", "rm", *volumes, what="removing the sandbox's volumes")
        log(f"removed {len(volumes)} volume(s)")
    networks = local.run(commands.list_networks(settings.sandbox_name)).stdout.split()
    if networks:
        local.docker("network", "rm", *networks, what="removing the sandbox's network")
        log(f"removed network {commands.network_name(settings.sandbox_name)}")
    state_dir = settings.sandbox_dir
    removed = False
    for name in STATE_FILES:
        path = state_dir / name
        if path.exists():
            path.unlink()
            removed = True
    if state_dir.is_dir() and not any(state_dir.iterdir()):
        shutil.rmtree(state_dir)
    if removed:
        log(f"removed the sandbox's key and SSH config from {state_dir}")


@dataclass(frozen=True)
class VMStatus:
    name: str
    role: str
    address: str
    state: str
    ssh_ok: bool
    detail: str


def status(settings: Settings) -> list[VMStatus]:
    """Each VM of the sandbox: address, container state, and whether SSH answers."""
    local.check_docker_engine()
    vms = sorted(existing_vms(settings).values(), key=lambda v: v.address)
    config = settings.sandbox_dir / SSH_CONFIG

    def check(vm: RunningVM) -> VMStatus:
        if vm.state != "running":
            return VMStatus(vm.name, vm.role, vm.address, vm.state, False, "not running")
        try:
            with ssh.connect(vm.name, ssh_config=config, connect_timeout=5) as conn:
                conn.run("true", hide=True)
            return VMStatus(vm.name, vm.role, vm.address, vm.state, True, "")
        except SwarmhubError as error:
            return VMStatus(vm.name, vm.role, vm.address, vm.state, False, error.reason)

    with ThreadPoolExecutor(max_workers=pool_width(len(vms))) as pool:
        return list(pool.map(check, vms))
