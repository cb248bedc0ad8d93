"""Docker command lines that make the sandbox (built here, run elsewhere; no I/O)."""

from __future__ import annotations

from swarmhub.sandbox.plan import ADDRESS_LABEL, LABEL, ROLE_LABEL, VM

# What a VM container needs to run systemd as PID 1 and its own Docker engine where
# --privileged is refused (root without CAP_SYS_RESOURCE): every other capability, no
# seccomp or AppArmor filter, writable /sys, every device allowed, a private cgroup namespace.
UNPRIVILEGED_FLAGS = (
    "--cgroupns=private",
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
)
PRIVILEGED_FLAGS = ("--privileged", "--cgroupns=private")


def network_name(sandbox: str) -> str:
    return f"{sandbox}-sandbox"


def docker_volume_name(sandbox: str, vm: str) -> str:
    return f"{sandbox}-{vm}-docker"


def create_network(sandbox: str, subnet: str) -> list[str]:
    return [
        "docker",
        "network",
        "create",
        "--driver=bridge",
        f"--subnet={subnet}",
        f"--label={LABEL}={sandbox}",
        network_name(sandbox),
    ]


def run_vm(
    vm: VM,
    *,
    sandbox: str,
    image: str,
    authorized_key: str,
    privileged: bool,
    with_fuse_device: bool,
) -> list[str]:
    """``docker run`` of one VM: systemd, sshd, its own /var/lib/docker, a fixed address."""
    argv = [
        "docker",
        "run",
        "--detach",
        f"--name={vm.name}",
        f"--hostname={vm.name}",
        f"--label={LABEL}={sandbox}",
        f"--label={ROLE_LABEL}={vm.role}",
        f"--label={ADDRESS_LABEL}={vm.address}",
        f"--network={network_name(sandbox)}",
        f"--ip={vm.address}",
        "--restart=unless-stopped",
        *(PRIVILEGED_FLAGS if privileged else UNPRIVILEGED_FLAGS),
        "--tmpfs=/tmp",
        "--tmpfs=/run",
        "--tmpfs=/run/lock",
        # A nested engine cannot put overlayfs on overlayfs: its data lives on a volume.
        f"--mount=type=volume,src={docker_volume_name(sandbox, vm.name)},dst=/var/lib/docker",
        f"--env=SWARMHUB_AUTHORIZED_KEY={authorized_key}",
    ]
    if with_fuse_device and not privileged:
        argv.append("--device=/dev/fuse")
    argv.append(image)
    return argv


def remove_volume(sandbox: str, vm: str) -> list[str]:
    """Remove the VM's Docker volume, if any: a VM made anew gets a bare disk, not the engine
    (images, containers, swarm state) of the VM of that name before it."""
    return ["docker", "volume", "rm", "--force", docker_volume_name(sandbox, vm)]


def label_volume(sandbox: str, vm: str) -> list[str]:
    """Create the VM's Docker volume up front, labelled so that sandbox.down finds it."""
    return [
        "docker",
        "volume",
        "create",
        f"--label={LABEL}={sandbox}",
        docker_volume_name(sandbox, vm),
    ]


def list_vms(sandbox: str) -> list[str]:
    """Every container of the sandbox, running or not: name, ID, state, role, address."""
    return [
        "docker",
        "ps",
        "--all",
        "--no-trunc",
        f"--filter=label={LABEL}={sandbox}",
        "--format",
        '{{.Names}}\t{{.ID}}\t{{.State}}\t{{.Label "' + ROLE_LABEL + '"}}\t'
        '{{.Label "' + ADDRESS_LABEL + '"}}',
    ]


def remove_containers(names: list[str]) -> list[str]:
    return ["docker", "rm", "--force", "--volumes", *names]


def list_volumes(sandbox: str) -> list[str]:
    return ["docker", "volume", "ls", "--quiet", f"--filter=label={LABEL}={sandbox}"]


def list_networks(sandbox: str) -> list[str]:
    return ["docker", "network", "ls", "--quiet", f"--filter=label={LABEL}={sandbox}"]


def boot_state(vm: str) -> list[str]:
    """systemd's view of the VM's boot, and whether sshd runs (both print one word)."""
    return [
        "docker",
        "exec",
        vm,
        "sh",
        "-c",
        "systemctl is-system-running; systemctl is-active ssh.service",
    ]


def read_host_key(vm: str) -> list[str]:
    return ["docker", "exec", vm, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"]
