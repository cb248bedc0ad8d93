"""firewall.configure: an nftables firewall on every host, loaded at boot by a systemd unit.

From anywhere: SSH on every host, 80/443 on the proxy. Between cluster hosts only: the swarm
ports, the registry, storage, the node exporter and Docker's engine metrics (METRICS); chp's
port 8000 on the hub from the proxy host only. Users'
containers cannot open connections to FIREWALL_BLOCKED_FROM_USERS (cloud metadata), nor to
any port of a cluster host (their own node's included) but the proxy's 80/443 and
FIREWALL_CLUSTER_TCP_PORTS.

Why a table of our own in nftables rather than iptables rules in Docker's DOCKER-USER chain:
Docker 26 on Debian 13 writes its rules through iptables-nft into the `ip filter` and `ip nat`
tables and rewrites its chains whenever it restarts. Our rules live in a separate table,
`inet swarmhub` (IPv4 and IPv6 at once), that Docker never touches; in nftables a packet
dropped by any base chain is dropped, whatever Docker's chains accept. The file replaces only
that table (never `flush ruleset`, which would wipe Docker's rules: that is why Debian's
nftables.service, whose /etc/nftables.conf flushes everything, is not used). Ports that Docker
publishes (chp's 8000) are DNAT-ed before the input hook, so the forward chain matches them by
their original destination port.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from swarmhub.errors import SwarmhubError
from swarmhub.parallel import pool_width
from swarmhub.ports import CHP_PORT, DASHBOARD_PORT, DOCKER_METRICS_PORT, NODE_EXPORTER_PORT
from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.ensure import ensure_packages, file_differs, unit_state_command
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.steps.swarm import host_addresses
from swarmhub.templates import render

RULES_PATH = "/etc/swarmhub/firewall.nft"
UNIT_NAME = "swarmhub-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
TABLE = "inet swarmhub"

NFS_PORT = 2049
GRADEBOOK_PORT = 5432  # gradebook.database's PostgreSQL, on the hub
SWARM_TCP = (2377, 7946)
SWARM_UDP = (7946, 4789)
# Interfaces of Docker's bridges on a host: containers' own traffic.
CONTAINER_INTERFACES = ('"docker0"', '"docker_gwbridge"', '"br-*"')


def _set(name: str, elements: list[str], *, interval: bool = False) -> str:
    flags = " flags interval;" if interval else ""
    body = f" elements = {{ {', '.join(elements)} }}" if elements else ""
    return f"    set {name} {{ type ipv4_addr;{flags}{body} }}"


def _ports(ports: list[int]) -> str:
    return "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"


def render_unit() -> str:
    return render("systemd/swarmhub-firewall.service.j2", table=TABLE, rules_path=RULES_PATH)


def render_rules(
    settings: Settings,
    roles: tuple[str, ...],
    cluster: list[str],
    proxies: list[str],
) -> str:
    """The nftables table of a host with ``roles``; ``cluster`` and ``proxies`` are the
    addresses of every cluster host and of the proxy host."""
    public = [settings.ssh_port, 22] + ([80, 443] if "proxy" in roles else [])
    internal_tcp = [*SWARM_TCP, NFS_PORT, *settings.firewall_cluster_tcp_ports]
    if "hub" in roles:
        internal_tcp.append(settings.registry_port)
        if settings.course_id:
            internal_tcp.append(GRADEBOOK_PORT)  # gradebook.database: graders' servers
    if settings.metrics == "on":
        internal_tcp.append(NODE_EXPORTER_PORT)  # scraped by Prometheus on the hub
        if "hub" in roles or "node" in roles:
            internal_tcp.append(DOCKER_METRICS_PORT)  # Docker's engine metrics, too
    blocked = [str(network) for network in settings.firewall_blocked_from_users]
    sets = [
        _set("cluster", sorted(set(cluster))),
        _set("proxy", sorted(set(proxies))),
        _set("blocked_from_users", blocked, interval=True),
    ]
    return render(
        "firewall/swarmhub.nft.j2",
        roles=roles,
        table=TABLE,
        sets="\n".join(sets),
        public=_ports(public),
        internal_tcp=_ports(internal_tcp),
        swarm_udp=_ports(list(SWARM_UDP)),
        hub="hub" in roles,
        chp_port=CHP_PORT,
        containers="{ " + ", ".join(CONTAINER_INTERFACES) + " }",
        # chp (a container of the hub's) to the admins' dashboard, which listens on Docker's
        # default bridge only (monitor.metrics): the one port of the hub containers reach.
        dashboard_port=DASHBOARD_PORT if "hub" in roles and settings.metrics == "on" else "",
        # nbgrader's gradebook on the hub: containers pass here; each server's own firewall
        # lets only graders' through (server-firewall.nft, swarmhub-server-start).
        gradebook=f"{GRADEBOOK_PORT}" if settings.course_id else "",
        cluster_tcp_ports=_ports(list(settings.firewall_cluster_tcp_ports))
        if settings.firewall_cluster_tcp_ports
        else "",
    )


def cluster_addresses(ctx: StepContext) -> dict[str, list[str]]:
    """Each host's own IPv4 addresses (probed once per run, every host at once)."""

    def addresses_of(host: HostView) -> list[str]:
        return host_addresses(host.probe("ip -4 -o addr show scope global", sudo=False).stdout)

    def probe() -> dict[str, list[str]]:
        names = list(ctx.settings.hosts)
        ctx.session.connect(names)  # in this thread, which holds the session's lock
        views = [ctx.view(name) for name in names]
        with ThreadPoolExecutor(max_workers=pool_width(len(views))) as pool:
            found = dict(zip(names, pool.map(addresses_of, views), strict=True))
        for name, addresses in found.items():
            if not addresses:
                raise SwarmhubError(f"{name}: no global IPv4 address found for the firewall")
        if ctx.settings.hub_address:
            found[ctx.settings.hub_host].append(ctx.settings.hub_address)
        return found

    return ctx.remember("cluster_addresses", probe)


def docker_tcp_listeners(ss_output: str) -> list[str]:
    """The local addresses dockerd listens on over TCP in ``ss -Hltnp`` output, other than
    the swarm's own ports (cluster management and gossip) and its metrics (daemon.json's
    metrics-addr), which are not the API."""
    found = []
    for line in ss_output.splitlines():
        words = line.split()
        if '"dockerd"' in line and len(words) > 3:
            port = words[3].rsplit(":", 1)[-1]
            if not (port.isdigit() and int(port) in (*SWARM_TCP, DOCKER_METRICS_PORT)):
                found.append(words[3])
    return found


def check_docker_api(host: HostView) -> Steps:
    """Docker's API is on its Unix socket only: a TCP listener is root for anyone reaching it."""
    found = host.probe("command -v dockerd >/dev/null && echo dockerd && ss -Hltnp").stdout
    if not found.startswith("dockerd"):
        yield Ok("no Docker on this host")
        return
    listeners = docker_tcp_listeners(found)
    if listeners:
        raise SwarmhubError(
            f"{host.name}: Docker's API listens on TCP ({', '.join(listeners)}): remove the "
            "tcp:// entry from `hosts` in /etc/docker/daemon.json or `-H tcp://` from the "
            "docker unit, then restart docker"
        )
    yield Ok("Docker's API on its Unix socket only")


def firewall_state(output: str) -> dict[str, str]:
    words = output.split()
    return {
        "enabled": words[0] if words else "",
        "active": words[1] if len(words) > 1 else "",
        "loaded": words[2] if len(words) > 2 else "no",
    }


def apply(ctx: StepContext, host: HostView) -> Steps:
    yield from check_docker_api(host)
    addresses = cluster_addresses(ctx)
    everyone = [a for found in addresses.values() for a in found]
    rules = render_rules(ctx.settings, host.roles, everyone, addresses[ctx.settings.proxy_host])
    yield from ensure_packages(host, ["nftables"], "the firewall")
    rules_why = file_differs(host, RULES_PATH, rules, "0600", "root")
    unit = render_unit()
    unit_why = file_differs(host, UNIT_PATH, unit, "0644", "root")
    # The unit enabled? active? our table loaded? One round trip.
    state = firewall_state(
        host.probe(
            f"{unit_state_command(UNIT_NAME)}; nft list table {TABLE} >/dev/null 2>&1 "
            "&& echo yes || echo no"
        ).stdout
    )
    files, commands, parts = [], [], []
    if rules_why:
        files.append(FileWrite.of(RULES_PATH, rules, mode="0600"))
        parts.append(f"rules written ({rules_why})")
    if unit_why:
        files.append(FileWrite.of(UNIT_PATH, unit))
        commands.append("systemctl daemon-reload")
        parts.append(f"{UNIT_NAME} written ({unit_why})")
    if state["enabled"] != "enabled":
        commands.append(f"systemctl enable {UNIT_NAME}")
        parts.append(f"{UNIT_NAME} enabled at boot")
    if state["active"] != "active":
        commands.append(f"systemctl start {UNIT_NAME}")
        parts.append("firewall loaded")
    elif rules_why or state["loaded"] != "yes":
        # `nft -f` replaces the table in one transaction: no moment without rules.
        commands.append(f"nft -f {RULES_PATH}")
        parts.append("firewall rules replaced")
    if not parts:
        yield Ok(f"firewall loaded ({TABLE}), enabled at boot")
        return
    yield Change("firewall: " + ", ".join(parts), commands, files=files)


STEP = Step(
    name="firewall.configure",
    roles=frozenset({"hub", "node", "proxy", "backup"}),
    apply=apply,
    parallel=True,
    summary="nftables: SSH (and 80/443 on the proxy) from anywhere, the rest cluster-only",
    on_node_add="all",
)
