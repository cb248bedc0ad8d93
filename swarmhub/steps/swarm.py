"""swarm.manage and swarm.join: the swarm manager on the hub with the overlay network that
the hub and users' servers share, and the nodes as its workers."""

from __future__ import annotations

import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.overlay import OverlayLayout, layout
from swarmhub.runbook.change import Change, Later, Ok, Steps
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext

SWARM_STATE = (
    "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"
    "{{range .Swarm.RemoteManagers}} {{.Addr}}{{end}}'"
)
SWARM_PORT = 2377
# How long a node's join may take before it counts as stuck (it then leaves and joins again).
JOIN_WAIT = 30
# Interfaces that are not the host's own network: Docker's bridges and veths.
NOT_HOST_INTERFACES = ("docker", "br-", "veth", "lo")


def swarm_state(host: HostView) -> tuple[str, bool]:
    """(local node state, is a manager): ('inactive', False) before any swarm."""
    state, manager, _ = parse_swarm_state(host.probe(SWARM_STATE).stdout)
    return state, manager


def parse_swarm_state(output: str) -> tuple[str, bool, list[str]]:
    """(local node state, is a manager, the managers' addresses it knows) from SWARM_STATE's
    output; ('no-docker', False, []) when Docker does not answer."""
    words = output.split()
    if len(words) < 2:
        return ("no-docker", False, [])
    return (words[0], words[1] == "true", words[2:])


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


def hub_address(ctx: StepContext) -> str:
    if ctx.settings.hub_address:
        return ctx.settings.hub_address
    hub = ctx.hub

    def probe() -> str:
        address = pick_address(hub.probe("ip -4 -o addr show scope global", sudo=False).stdout)
        if not address:
            raise SwarmhubError(f"{hub.name}: no global IPv4 address found: set HUB_ADDRESS")
        return address

    return ctx.remember("hub_address", probe)


# How often nodes report to the manager. A node is down after about three missed beats:
# with 2 s (Docker's default is 5 s), the hub knows within about 6 s that a node died, and a
# student on it gets a new server on another node well within 30 s (the spawner's poll).
HEARTBEAT = "2s"
HEARTBEAT_NS = 2_000_000_000
HEARTBEAT_STATE = "docker info --format '{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}'"


def init_command(address: str) -> str:
    return (
        f"docker swarm init --advertise-addr {shlex.quote(address)} "
        f"--dispatcher-heartbeat {HEARTBEAT}"
    )


def network_command(name: str, overlay: OverlayLayout) -> str:
    """The attachable overlay, with the fixed layout of swarmhub.overlay: Docker gives servers
    addresses from the upper half only, chp and the hub keep theirs below."""
    return (
        f"docker network create --driver overlay --attachable --subnet {overlay.subnet} "
        f"--gateway {overlay.gateway} --ip-range {overlay.servers} {shlex.quote(name)}"
    )


NETWORK_STATE = (
    "docker network inspect --format "
    "'{{.Driver}} {{.Attachable}}{{range .IPAM.Config}} {{.Subnet}} {{.IPRange}}{{end}}' "
)


def check_network(
    hub: str, name: str, found: list[str], overlay: OverlayLayout, hub_dir: str
) -> bool:
    """True when the network is as wanted, False when it is missing; else one line saying what
    to do (a network in use cannot be changed in place)."""
    if not found:
        return False
    if found[:2] != ["overlay", "true"]:
        raise SwarmhubError(
            f"{hub}: network {name} exists but is not an attachable overlay: remove it "
            "or set SWARM_NETWORK to another name"
        )
    if found[2:] == [str(overlay.subnet), str(overlay.servers)]:
        return True
    has = f"subnet {found[2]}" if len(found) > 2 else "no subnet"
    raise SwarmhubError(
        f"{hub}: network {name} has {has}, not SWARM_SUBNET={overlay.subnet} with servers in "
        f"{overlay.servers} (the fixed addresses that users' servers let in): stop the users' "
        f"servers, run `docker compose down` in {hub_dir} and `docker network rm {name}` "
        "on the hub, then run cluster.all"
    )


def manage(ctx: StepContext, hub: HostView) -> Steps:
    state, is_manager = swarm_state(hub)
    if state == "no-docker" and not ctx.changes_pending:
        raise SwarmhubError(f"{hub.name}: Docker is not running: run docker.install first")
    if state == "active" and is_manager:
        yield Ok("swarm manager active")
        # Docker prints the period as a duration (2s); older ones in nanoseconds.
        if hub.probe(HEARTBEAT_STATE).stdout.strip() in (HEARTBEAT, str(HEARTBEAT_NS)):
            yield Ok(f"nodes report every {HEARTBEAT}")
        else:
            yield Change(
                f"nodes report every {HEARTBEAT} (a dead node known within seconds)",
                [f"docker swarm update --dispatcher-heartbeat {HEARTBEAT}"],
            )
    elif state == "active":
        raise SwarmhubError(
            f"{hub.name} is a worker of another swarm: run `docker swarm leave` on it first"
        )
    else:
        address = hub_address(ctx)
        yield Change(f"swarm initialised, advertising {address}", [init_command(address)])
    network = ctx.settings.swarm_network
    overlay = layout(ctx.settings.swarm_subnet)
    found = hub.probe(NETWORK_STATE + shlex.quote(network)).stdout.split()
    if check_network(hub.name, network, found, overlay, ctx.settings.hub_dir):
        yield Ok(f"overlay network {network} ({overlay.subnet})")
    else:
        yield Change(
            f"overlay network {network} created ({overlay.subnet}, servers in {overlay.servers})",
            [network_command(network, overlay)],
        )


def join_token(ctx: StepContext) -> str:
    hub = ctx.hub
    return ctx.remember(
        "join_token", lambda: hub.probe("docker swarm join-token -q worker").stdout.strip()
    )


def wait_active_command(seconds: int) -> str:
    """Succeeds once the node is an active member, within ``seconds``."""
    return (
        f"for i in $(seq {seconds}); do "
        "[ \"$(docker info --format '{{.Swarm.LocalNodeState}}')\" = active ] && exit 0; "
        "sleep 1; done; exit 1"
    )


def join_command(
    token: str, address: str, *, leave_first: bool = False, restart_docker: bool = False
) -> str:
    """Join the swarm at ``address``. A join that times out goes on in the background (Docker
    says so and exits non-zero): then wait for it to finish rather than fail. ``restart_docker``
    (leaving a swarm that is gone): Docker keeps that swarm's gossip keys (libnetwork's
    network database) until it restarts, and the overlay then carries nothing between the new
    manager and this node (seen after recover.hub: the servers could not resolve the hub)."""
    join = f"docker swarm join --token {shlex.quote(token)} {address}:{SWARM_PORT}"
    leave = "docker swarm leave --force >/dev/null 2>&1; " if leave_first else ""
    if restart_docker:
        leave += (
            "systemctl restart docker && for i in $(seq 60); do "
            "docker info >/dev/null 2>&1 && break; sleep 1; done; "
        )
    return f"{leave}{join} || {{ {wait_active_command(JOIN_WAIT)}; }}"


def member_of_this_swarm(ctx: StepContext, node: HostView) -> bool:
    """The hub's swarm knows the node's swarm identity (not one of a swarm that is gone).

    Only a clear answer says "gone": leaving restarts Docker on the node, which stops every
    server there. A listing that failed or came back empty (a busy or restarting manager:
    it lists itself at least), or a node that did not say its identity, is refused instead."""
    node_id = node.probe("docker info --format '{{.Swarm.NodeID}}'").stdout.strip()
    known = ctx.remember(
        "swarm_node_ids",
        lambda: ctx.hub.probe("docker node ls --format '{{.ID}}' 2>/dev/null").stdout.split(),
    )
    if not node_id or not known:
        raise SwarmhubError(
            f"{node.name}: cannot tell whether it belongs to the swarm of {ctx.hub.name} "
            f"({'the hub did not list its nodes' if not known else 'it did not say its id'}): "
            "nothing changed; run swarm.join again"
        )
    return node_id in known


def join(ctx: StepContext, node: HostView) -> Steps:
    state, _, managers = parse_swarm_state(node.probe(SWARM_STATE).stdout)
    address = hub_address(ctx)
    gone = False
    if state == "active":
        if managers and not any(m.split(":")[0] == address for m in managers):
            raise SwarmhubError(
                f"{node.name} is a member of another swarm (managers {', '.join(managers)}): "
                "run `docker swarm leave --force` on it, then swarm.join"
            )
        if ctx.changes_pending or member_of_this_swarm(ctx, node):
            yield Ok("swarm member")
            return
        # A member of a swarm that is gone (the hub rebuilt at the same address, recover.hub):
        # it leaves that one, Docker restarts (its old gossip keys go), and it joins this one.
        state, gone = "error", True
    if state == "no-docker" and not ctx.changes_pending:
        raise SwarmhubError(f"{node.name}: Docker is not running: run docker.install first")
    hub = ctx.hub
    token = join_token(ctx)
    if not token and not ctx.changes_pending:
        raise SwarmhubError(f"{hub.name} is not a swarm manager: run swarm.manage first")
    if not token:
        yield Later("the join token: known once the swarm manager is initialised")
    # Entries the manager still holds for this host, Down, are from before it left: stale.
    # Not one that is up: a join cut short may finish in the background meanwhile, and its
    # new entry must stay (seen on a quiet machine: the node removed right after it joined).
    stale = hub.probe(
        "docker node ls --format '{{.ID}} {{.Hostname}} {{.Status}}' 2>/dev/null "
        f'| awk \'$2 == "{node.name}" && $3 == "Down" {{print $1}}\''
    ).stdout.split()
    if state == "pending":
        rejoin = join_command(token, address, leave_first=True)
        # A join cut short (a timeout, or the hub's firewall dropping it then): it may still
        # finish by itself; if not, the node leaves and joins again.
        yield Change(
            f"finished a pending join to the swarm of {hub.name} ({address})",
            [f"{wait_active_command(JOIN_WAIT)} || {{ {rejoin}; }}"],
        )
    else:
        left = "left a swarm that is gone (Docker restarted), " if gone else ""
        yield Change(
            f"{left}joined the swarm of {hub.name} ({address})",
            [join_command(token, address, leave_first=state == "error", restart_docker=gone)],
        )
    if stale:
        yield Change(
            f"removed {node.name}'s stale swarm entries ({' '.join(stale)})",
            [f"docker node rm --force {' '.join(stale)}"],
            host=hub.name,
        )


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
    on_node_add="node",
)
