"""firewall.configure: an nftables firewall on every host, loaded at boot by a systemd unit.

From anywhere: SSH on every host, 80/443 on the proxy. Between cluster hosts only: the swarm
ports, the registry and storage; chp's port 8000 on the hub from the proxy host only. Users'
containers cannot open connections to FIREWALL_BLOCKED_FROM_USERS (cloud metadata).

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
from swarmhub.parallel import MAX_PARALLEL
from swarmhub.ports import CHP_PORT
from swarmhub.runbook.ensure import ensure_file, ensure_packages
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step
from swarmhub.settings import Settings
from swarmhub.steps.swarm import host_addresses

RULES_PATH = "/etc/swarmhub/firewall.nft"
UNIT_NAME = "swarmhub-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
TABLE = "inet swarmhub"

NFS_PORT = 2049
SWARM_TCP = (2377, 7946)
SWARM_UDP = (7946, 4789)
# Interfaces of Docker's bridges on a host: containers' own traffic.
CONTAINER_INTERFACES = ('"docker0"', '"docker_gwbridge"', '"br-*"')

UNIT = f"""\
# Written by swarmhub (firewall.configure): loads swarmhub's nftables table at boot.
[Unit]
Description=swarmhub firewall (nftables table {TABLE})
Wants=network-pre.target
Before=network-pre.target docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {RULES_PATH}
ExecReload=/usr/sbin/nft -f {RULES_PATH}
ExecStop=/usr/sbin/nft delete table {TABLE}

[Install]
WantedBy=multi-user.target
"""


def _set(name: str, elements: list[str], *, interval: bool = False) -> str:
    flags = " flags interval;" if interval else ""
    body = f" elements = {{ {', '.join(elements)} }}" if elements else ""
    return f"    set {name} {{ type ipv4_addr;{flags}{body} }}"


def _ports(ports: list[int]) -> str:
    return "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"


def render_rules(
    settings: Settings,
    roles: tuple[str, ...],
    cluster: list[str],
    proxies: list[str],
) -> str:
    """The nftables table of a host with ``roles``; ``cluster`` and ``proxies`` are the
    addresses of every cluster host and of the proxy host."""
    public = [settings.ssh_port, 22] + ([80, 443] if "proxy" in roles else [])
    public_anywhere = [settings.ssh_port, 22, 80, 443]  # open on some host of the cluster
    internal_tcp = [*SWARM_TCP, NFS_PORT, *settings.firewall_cluster_tcp_ports]
    if "hub" in roles:
        internal_tcp.append(settings.registry_port)
    blocked = [str(network) for network in settings.firewall_blocked_from_users]
    lines = [
        f"# Written by swarmhub (firewall.configure) for a host with roles {', '.join(roles)}.",
        f"# Replaces the table {TABLE} only: Docker's own rules (iptables-nft) stay as they are.",
        f"table {TABLE}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
        _set("cluster", sorted(set(cluster))),
        _set("proxy", sorted(set(proxies))),
        _set("blocked_from_users", blocked, interval=True),
        "",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        '        iif "lo" accept',
        "        ct state established,related accept",
        "        ct state invalid drop",
        "        meta l4proto { icmp, ipv6-icmp } accept",
        '        udp sport 67 udp dport 68 accept comment "DHCP"',
        f'        tcp dport {_ports(public)} accept comment "from anywhere"',
        f"        ip saddr @cluster tcp dport {_ports(internal_tcp)} accept",
        f"        ip saddr @cluster udp dport {_ports(list(SWARM_UDP))} accept",
    ]
    if "hub" in roles:
        lines.append(f'        ip saddr @proxy tcp dport {CHP_PORT} accept comment "chp"')
    lines += [
        "    }",
        "",
        "    chain forward {",
        "        type filter hook forward priority filter; policy accept;",
        '        ct state new ip daddr @blocked_from_users drop comment "e.g. cloud metadata"',
        f"        ct state new iifname {{ {', '.join(CONTAINER_INTERFACES)} }} ip daddr @cluster "
        "jump from_containers",
        "        ct state new ct status dnat jump published",
        "    }",
        "",
        "    # Containers (users' servers) to the cluster's hosts: their traffic leaves with the",
        "    # node's address, so the cluster's own ports (registry, swarm) are closed to them.",
        "    chain from_containers {",
        f"        tcp dport {_ports(public_anywhere + list(settings.firewall_cluster_tcp_ports))} "
        "return",
        "        drop",
        "    }",
        "",
        "    # New connections to ports Docker publishes, matched by their original port.",
        "    chain published {",
        f"        iifname {{ {', '.join(CONTAINER_INTERFACES)} }} return",
        f"        meta l4proto tcp ct original proto-dst {_ports(public)} return",
    ]
    if "hub" in roles:
        lines.append(
            f"        meta l4proto tcp ct original proto-dst {CHP_PORT} ip saddr @proxy return"
        )
    lines += ["        drop", "    }", "}"]
    return "\n".join(lines) + "\n"


def cluster_addresses(session: Session) -> dict[str, list[str]]:
    """Each host's own IPv4 addresses (probed once per run)."""

    def addresses_of(host: Host) -> list[str]:
        return host_addresses(host.probe("ip -4 -o addr show scope global", sudo=False).stdout)

    def probe() -> dict[str, list[str]]:
        # Connected in this thread, which holds the session's lock (remember); the probes,
        # one per host, then run at once.
        hosts = session.connect(session.settings.hosts)
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
            found = dict(zip(session.settings.hosts, pool.map(addresses_of, hosts), strict=True))
        for name, addresses in found.items():
            if not addresses:
                raise SwarmhubError(f"{name}: no global IPv4 address found for the firewall")
        if session.settings.hub_address:
            found[session.settings.hub_host].append(session.settings.hub_address)
        return found

    return session.remember("cluster_addresses", probe)


def docker_tcp_listeners(ss_output: str) -> list[str]:
    """The local addresses dockerd listens on over TCP in ``ss -Hltnp`` output, other than
    the swarm's own ports (cluster management and gossip, which are not the API)."""
    found = []
    for line in ss_output.splitlines():
        words = line.split()
        if '"dockerd"' in line and len(words) > 3:
            port = words[3].rsplit(":", 1)[-1]
            if not (port.isdigit() and int(port) in SWARM_TCP):
                found.append(words[3])
    return found


def check_docker_api(host: Host) -> None:
    """Docker's API is on its Unix socket only: a TCP listener is root for anyone reaching it."""
    found = host.probe("command -v dockerd >/dev/null && echo dockerd && ss -Hltnp").stdout
    if not found.startswith("dockerd"):
        host.ok("no Docker on this host")
        return
    listeners = docker_tcp_listeners(found)
    if listeners:
        raise SwarmhubError(
            f"{host.name}: Docker's API listens on TCP ({', '.join(listeners)}): remove the "
            "tcp:// entry from `hosts` in /etc/docker/daemon.json or `-H tcp://` from the "
            "docker unit, then restart docker"
        )
    host.ok("Docker's API on its Unix socket only")


# The unit enabled? active? our table loaded? One round trip, as key=value lines.
FIREWALL_STATE = (
    f"echo enabled=$(systemctl is-enabled {UNIT_NAME} 2>/dev/null); "
    f"echo active=$(systemctl is-active {UNIT_NAME} 2>/dev/null); "
    f"nft list table {TABLE} >/dev/null 2>&1 && echo loaded=yes || echo loaded=no"
)


def firewall_state(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def apply(session: Session, host: Host) -> None:
    check_docker_api(host)
    addresses = cluster_addresses(session)
    everyone = [a for found in addresses.values() for a in found]
    rules = render_rules(
        session.settings, host.roles, everyone, addresses[session.settings.proxy_host]
    )
    ensure_packages(host, ["nftables"], "the firewall")
    changed = ensure_file(host, RULES_PATH, rules, mode="0600", describe="firewall rules")
    unit_changed = ensure_file(host, UNIT_PATH, UNIT, describe=UNIT_NAME)
    if unit_changed:
        host.change("systemd knows the firewall unit", "systemctl daemon-reload")
    state = firewall_state(host.probe(FIREWALL_STATE).stdout)
    if state.get("enabled") == "enabled":
        host.ok(f"{UNIT_NAME} enabled at boot")
    else:
        host.change(f"{UNIT_NAME} enabled at boot", f"systemctl enable {UNIT_NAME}")
    loaded = state.get("loaded") == "yes"
    active = state.get("active") == "active"
    if loaded and active and not changed:
        host.ok(f"firewall loaded ({TABLE})")
        return
    if not active:
        host.change("firewall loaded", f"systemctl start {UNIT_NAME}")
    else:
        # `nft -f` replaces the table in one transaction: no moment without rules.
        host.change("firewall rules replaced", f"nft -f {RULES_PATH}")


STEP = Step(
    name="firewall.configure",
    roles=frozenset({"hub", "node", "proxy"}),
    apply=apply,
    parallel=True,
    summary="nftables: SSH (and 80/443 on the proxy) from anywhere, the rest cluster-only",
)
