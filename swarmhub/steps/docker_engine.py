"""docker.install: Docker Engine and Compose v2 on the hub and the nodes, with a managed
daemon.json; the daemon restarts only when its configuration changed.

A restart of dockerd stops every container of the host (swarm mode has no live-restore):
on a node, every student server there. The change says so (`restarts="Docker"`), and the
session refuses it where servers run unless the task runs with --restart-nodes, which
restarts one node at a time, each taking no new servers meanwhile. Turning METRICS on or off
on a deployed cluster is such a change (daemon.json's metrics-addr, the engine's metrics for
Prometheus): plan shows it, with the servers that would stop. So is the log driver's change
from json-file to journald (monitor.logs ships the journal): on a cluster deployed before it,
`invoke docker.install --restart-nodes` drains and restarts the nodes one at a time.
"""

from __future__ import annotations

import re

from swarmhub.errors import SwarmhubError
from swarmhub.ports import DOCKER_METRICS_PORT
from swarmhub.runbook.change import Change, FileWrite, Later, Ok, Steps, Wait
from swarmhub.runbook.ensure import (
    ensure_file,
    ensure_packages,
    ensure_service_running,
    file_differs,
)
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.templates import serialize

DAEMON_JSON = "/etc/docker/daemon.json"
DOCKER_REPO_LIST = "/etc/apt/sources.list.d/docker.list"
DOCKER_REPO_KEY = "/etc/apt/keyrings/docker.asc"

# The distributions' own packages: Docker Engine and the Compose v2 plugin.
DISTRO_PACKAGES = {
    # Debian 13: docker-cli is only recommended by docker.io; docker-compose is Compose v2.
    "debian": ["docker.io", "docker-cli", "docker-compose"],
    "ubuntu": ["docker.io", "docker-compose-v2"],
}
DOCKER_REPO_PACKAGES = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"]


def registry_address(settings: Settings) -> str:
    """Where nodes pull images from: the registry on the hub."""
    return f"{settings.hub_host}:{settings.registry_port}"


def provisioner_nameservers(resolv_conf: str) -> list[str]:
    """The non-loopback nameservers of a resolv.conf (loopback ones are unreachable from
    containers)."""
    servers = re.findall(r"^\s*nameserver\s+(\S+)", resolv_conf, re.M)
    return [s for s in servers if not s.startswith("127.") and s != "::1"]


def daemon_config(settings: Settings, dns: list[str]) -> dict[str, object]:
    """daemon.json: containers' logs in the journal (rsyslog ships them, `docker logs` reads
    them; each line named by its container), the hub's registry trusted, DNS when set, the
    engine's metrics for Prometheus when METRICS is on."""
    config: dict[str, object] = {
        # journald's size limits rotate them (monitor.logs raises only its rate limit).
        "log-driver": "journald",
        "log-opts": {"tag": "{{.Name}}"},
        "insecure-registries": [registry_address(settings)],
    }
    if dns:
        config["dns"] = dns
    if settings.metrics == "on":
        # On every address: the firewall opens the port to cluster hosts only (never to
        # users' containers), as it does the node exporter's.
        config["metrics-addr"] = f"0.0.0.0:{DOCKER_METRICS_PORT}"
    return config


def docker_dns(settings: Settings) -> list[str]:
    if settings.docker_dns == ("provisioner",):
        with open("/etc/resolv.conf") as resolv:
            return provisioner_nameservers(resolv.read())
    return list(settings.docker_dns)


def os_release(host: HostView) -> tuple[str, str]:
    text = host.probe(". /etc/os-release && echo $ID $VERSION_CODENAME", sudo=False).stdout.split()
    return (text[0], text[1]) if len(text) == 2 else ("unknown", "")


def docker_repo_commands(distro: str, codename: str) -> list[str]:
    """Docker's own apt repository (DOCKER_SOURCE=docker-repo)."""
    url = f"https://download.docker.com/linux/{distro}"
    return [
        "install -m 0755 -d /etc/apt/keyrings",
        f"curl -fsSL {url}/gpg -o {DOCKER_REPO_KEY}",
        f"chmod a+r {DOCKER_REPO_KEY}",
        f'echo "deb [arch=$(dpkg --print-architecture) signed-by={DOCKER_REPO_KEY}] {url} '
        f'{codename} stable" > {DOCKER_REPO_LIST}',
    ]


def packages_for(settings: Settings, distro: str, codename: str) -> list[str]:
    if settings.docker_source == "docker-repo":
        return DOCKER_REPO_PACKAGES
    if distro not in DISTRO_PACKAGES:
        raise SwarmhubError(
            f"{distro} {codename} is not supported: use Debian 13 or Ubuntu 24.04, or set "
            "DOCKER_SOURCE=docker-repo"
        )
    if (distro, codename) == ("debian", "bookworm"):
        raise SwarmhubError(
            "Debian 12 has no Compose v2 package: set DOCKER_SOURCE=docker-repo, or use Debian 13"
        )
    return DISTRO_PACKAGES[distro]


def docker_installed_command(packages: list[str]) -> str:
    """Prints `installed` when every package of Docker Engine is installed."""
    names = " ".join(packages)
    return (
        f"for p in {names}; do dpkg-query -W -f='${{Status}}\\n' \"$p\" 2>/dev/null "
        '| grep -q "install ok installed" || exit 0; done; echo installed'
    )


DOCKER_ANSWERS = Wait("Docker answers again", "docker info >/dev/null 2>&1", timeout=90)


def apply(ctx: StepContext, host: HostView) -> Steps:
    settings = ctx.settings
    distro, codename = os_release(host)
    packages = packages_for(settings, distro, codename)
    config = serialize(daemon_config(settings, docker_dns(settings)))
    present = host.probe(docker_installed_command(packages)).stdout.strip() == "installed"
    if not present:
        # daemon.json first, so that a fresh install starts with it and needs no restart.
        yield from ensure_file(host, DAEMON_JSON, config, describe="daemon.json")
    elif why := file_differs(host, DAEMON_JSON, config, "0644", "root"):
        yield Change(
            f"daemon.json ({why}): restarted docker",
            ["systemctl restart docker"],
            files=[FileWrite.of(DAEMON_JSON, config)],
            then=[DOCKER_ANSWERS],
            restarts="Docker",
        )
    else:
        yield Ok("daemon.json up to date")
    if settings.docker_source == "docker-repo" and not host.probe(f"test -s {DOCKER_REPO_LIST}").ok:
        yield Change(
            "Docker's apt repository added", [" && ".join(docker_repo_commands(distro, codename))]
        )
    installed = yield from ensure_packages(host, packages, "Docker Engine and Compose v2")
    if not installed:
        yield from ensure_service_running(host, "docker")
        return
    # The package starts the daemon; once present, the package check above answers for it.
    if installed.applied:
        version = host.probe("docker compose version --short").stdout.strip()
        if not version:
            raise SwarmhubError(f"{host.name}: `docker compose` is missing after the install")
        yield Ok(f"docker compose {version}")
    else:
        yield Later("docker compose version: checked after the install (not known before it)")


STEP = Step(
    name="docker.install",
    roles=frozenset({"hub", "node"}),
    apply=apply,
    parallel=True,
    summary="Docker Engine and Compose v2, daemon.json",
    on_node_add="node",
    restarts=True,
)
