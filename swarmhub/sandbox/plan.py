"""Which fake VMs the sandbox holds: names, roles, fixed addresses (no Docker, no I/O)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from swarmhub.settings import Settings

# Fixed host numbers inside SANDBOX_SUBNET, so that an address never moves when nodes come
# and go: the hub is .10, the proxy .11, the backup host (BACKUP_TARGET's) .12, the storage
# host (STORAGE_HOST, when apart from the hub) .13, node N is .(20 + N).
HUB_OFFSET = 10
PROXY_OFFSET = 11
BACKUP_OFFSET = 12
STORAGE_OFFSET = 13
NODE_OFFSET = 20

LABEL = "io.swarmhub.sandbox"
ROLE_LABEL = "io.swarmhub.role"
ADDRESS_LABEL = "io.swarmhub.address"


@dataclass(frozen=True)
class VM:
    """A fake VM of the sandbox."""

    name: str
    role: str
    address: str


def node_names(settings: Settings, count: int | None) -> list[str]:
    """The sandbox's node names: those of NODE_HOSTS, continued by their pattern up to count.

    ``sam-node-1,sam-node-2`` with ``count=4`` gives ``sam-node-1`` … ``sam-node-4``.
    """
    listed = list(settings.node_hosts)
    if count is None:
        return listed
    if count < 1:
        raise ValueError("a sandbox needs at least one node")
    if count <= len(listed):
        return listed[:count]
    match = re.fullmatch(r"(.*?)(\d+)", listed[-1])
    prefix, start = (match.group(1), int(match.group(2))) if match else (f"{listed[-1]}-", 1)
    names = list(listed)
    number = start
    while len(names) < count:
        number += 1
        names.append(f"{prefix}{number}")
    return names


def address(subnet: ipaddress.IPv4Network, offset: int) -> str:
    """The address ``offset`` hosts into ``subnet``."""
    if offset >= subnet.num_addresses - 1:
        raise ValueError(f"{subnet} has no room for host number {offset}: use a larger range")
    return str(subnet.network_address + offset)


def plan_vms(settings: Settings, node_count: int | None = None) -> list[VM]:
    """The VMs that ``sandbox.up`` makes sure exist: hub, nodes, proxy, the backup host and
    the storage host (when apart from the hub)."""
    subnet = settings.sandbox_subnet
    vms = [VM(settings.hub_host, "hub", address(subnet, HUB_OFFSET))]
    for index, name in enumerate(node_names(settings, node_count), start=1):
        vms.append(VM(name, "node", address(subnet, NODE_OFFSET + index)))
    if settings.proxy_host != settings.hub_host:
        vms.append(VM(settings.proxy_host, "proxy", address(subnet, PROXY_OFFSET)))
    if settings.backup_host:
        vms.append(VM(settings.backup_host, "backup", address(subnet, BACKUP_OFFSET)))
    if settings.storage_name not in {vm.name for vm in vms}:
        vms.append(VM(settings.storage_name, "storage", address(subnet, STORAGE_OFFSET)))
    return vms


def hosts_block(vms: list[VM], marker: str) -> str:
    """The /etc/hosts block that names every VM of the sandbox to every other."""
    lines = [f"# BEGIN {marker}"]
    lines += [f"{vm.address}\t{vm.name}" for vm in sorted(vms, key=lambda v: v.name)]
    lines.append(f"# END {marker}")
    return "\n".join(lines) + "\n"


def with_hosts_block(current: str, block: str, marker: str) -> str:
    """``current`` /etc/hosts text with its managed block replaced by (or ending with) ``block``."""
    pattern = re.compile(rf"# BEGIN {re.escape(marker)}\n.*?# END {re.escape(marker)}\n", re.S)
    if pattern.search(current):
        return pattern.sub(lambda _: block, current)
    if current and not current.endswith("\n"):
        current += "\n"
    return current + block
