"""swarm.manage and swarm.join: the swarm manager on the hub with the overlay network that
the hub and users' servers share, and the nodes as its workers."""

from __future__ import annotations

import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step

SWARM_STATE = "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'"
# Interfaces that are not the host's own network: Docker's bridges and veths.
NOT_HOST_INTERFACES = ("docker", "br-", "veth", "lo")


def swarm_state(host: Host) -> tuple[str, bool]:
    """(local node state, is a manager): ('inactive', False) before any swarm."""
    words = host.probe(SWARM_STATE).stdout.split()
    if len(words) != 2:
        return ("no-docker", False)
    return (words[0], words[1] == "true")


def host_addresses(ip_addr_output: str) -> list[str]:
    """Every global IPv4 address of a host's own interfaces in ``ip -4 -o addr show`` output."""
    found = []
    for line in ip_addr_output.splitlines():
        words = line.split()
        if len(words) >= 4 and not words[1].startswith(NOT_HOST_INTERFACES):
            found.append(words[3].split("/")[0])
    return found


def pick_address(ip_addr_output: str) -> str | None:
    """The first global IPv4 address of a host interface in ``ip -4 -o addr show`` output."""
    found = host_addresses(ip_addr_output)
    return found[0] if found else None


def hub_address(session: Session, hub: Host) -> str:
    if session.settings.hub_address:
        return session.settings.hub_address

    def probe() -> str:
        address = pick_address(hub.probe("ip -4 -o addr show scope global", sudo=False).stdout)
        if not address:
            raise SwarmhubError(f"{hub.name}: no global IPv4 address found: set HUB_ADDRESS")
        return address

    return session.remember("hub_address", probe)


def init_command(address: str) -> str:
    return f"docker swarm init --advertise-addr {shlex.quote(address)}"


def network_command(name: str) -> str:
    return f"docker network create --driver overlay --attachable {shlex.quote(name)}"


def manage(session: Session, hub: Host) -> None:
    state, is_manager = swarm_state(hub)
    if state == "no-docker" and not hub.plan:
        raise SwarmhubError(f"{hub.name}: Docker is not running: run docker.install first")
    if state == "active" and is_manager:
        hub.ok("swarm manager active")
    elif state == "active":
        raise SwarmhubError(
            f"{hub.name} is a worker of another swarm: run `docker swarm leave` on it first"
        )
    else:
        hub.change(
            f"swarm initialised, advertising {hub_address(session, hub)}",
            init_command(hub_address(session, hub)),
        )
    network = session.settings.swarm_network
    found = hub.probe(
        f"docker network inspect --format '{{{{.Driver}}}} {{{{.Attachable}}}}' {network}"
    ).stdout.split()
    if found == ["overlay", "true"]:
        hub.ok(f"overlay network {network}")
    elif found:
        raise SwarmhubError(
            f"{hub.name}: network {network} exists but is not an attachable overlay: remove it "
            "or set SWARM_NETWORK to another name"
        )
    else:
        hub.change(f"overlay network {network} created", network_command(network))


def join_token(session: Session) -> str:
    hub = session.host(session.settings.hub_host)
    return session.remember(
        "join_token", lambda: hub.probe("docker swarm join-token -q worker").stdout.strip()
    )


def join(session: Session, node: Host) -> None:
    state, _ = swarm_state(node)
    if state == "active":
        node.ok("swarm member")
        return
    if state == "no-docker" and not node.plan:
        raise SwarmhubError(f"{node.name}: Docker is not running: run docker.install first")
    hub = session.host(session.settings.hub_host)
    token = join_token(session)
    if not token and not node.plan:
        raise SwarmhubError(f"{hub.name} is not a swarm manager: run swarm.manage first")
    address = hub_address(session, hub)
    if not node.plan:
        # Entries the manager still holds for this host are from before it left: stale.
        stale = hub.probe(
            "docker node ls --format '{{.ID}} {{.Hostname}}' "
            f"| awk '$2 == \"{node.name}\" {{print $1}}'"
        ).stdout.split()
        node.run(f"docker swarm join --token {shlex.quote(token)} {address}:2377")
        if stale:
            hub.run(f"docker node rm --force {' '.join(stale)}")
    node.changed(f"joined the swarm of {hub.name} ({address})")


MANAGE = Step(
    name="swarm.manage",
    roles=frozenset({"hub"}),
    apply=manage,
    summary="the swarm manager on the hub and its overlay network",
)
JOIN = Step(
    name="swarm.join",
    roles=frozenset({"node"}),
    apply=join,
    parallel=True,
    summary="nodes join the swarm as workers",
)
