"""The users' overlay network (SWARM_SUBNET), laid out once: the swarm manager creates it so,
the hub's compose file gives chp and the hub their fixed addresses on it, and each user's
server lets only those two addresses in.

    first address      the overlay's gateway (Docker's)
    second, third      chp, the hub (fixed: a recreated container gets the same one)
    ...                free for more services of the hub stack, fixed too
    upper half         users' servers and the nodes' endpoints (Docker allocates these)

Docker allocates addresses only inside the range (--ip-range), so a server never takes chp's
or the hub's address, not even while a redeploy recreates their containers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class OverlayLayout:
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def chp(self) -> str:
        return str(self.subnet.network_address + 2)

    @property
    def hub(self) -> str:
        return str(self.subnet.network_address + 3)

    @property
    def servers(self) -> ipaddress.IPv4Network:
        """The range Docker allocates from: the upper half of the subnet."""
        return list(self.subnet.subnets(prefixlen_diff=1))[1]


def layout(subnet: ipaddress.IPv4Network) -> OverlayLayout:
    return OverlayLayout(subnet)
