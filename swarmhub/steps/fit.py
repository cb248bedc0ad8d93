"""profiles.check: every node can run every profile, before it gets their images or servers.

A profile's memory guarantee is the swarm's reservation: a node with less memory than that
never takes a server of it, and a student asking for it would wait for the "cluster is
full" answer whatever the load. Checked on each node (its MemTotal, which the swarm counts
too) before anything else runs there, and by `nodes.add` before a new node gets anything.
Read-only: a node too small stops the run with one line, no host changed.
"""

from __future__ import annotations

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Note, Ok, Steps
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.sizes import format_size

MEMINFO = "grep -m1 '^MemTotal:' /proc/meminfo"


def node_memory(host: HostView) -> int | None:
    """The node's memory in bytes (MemTotal), or None when it cannot be read."""
    fields = host.probe(MEMINFO, sudo=False).stdout.split()
    if len(fields) >= 2 and fields[1].isdigit():
        return int(fields[1]) * 1024
    return None


def apply(ctx: StepContext, host: HostView) -> Steps:
    profiles = ctx.settings.profile_set().profiles
    memory = node_memory(host)
    if memory is None:
        raise SwarmhubError(f"{host.name}: cannot read its memory (/proc/meminfo)")
    too_big = [p for p in profiles if p.mem_guarantee > memory]
    if too_big:
        names = ", ".join(f"{p.name} ({format_size(p.mem_guarantee)})" for p in too_big)
        raise SwarmhubError(
            f"{host.name} has {format_size(memory)} of memory, less than the guarantee of "
            f"profile {names}: no server of it could start there; lower the guarantee "
            "(mem_guarantee, USER_MEM_GUARANTEE) or give the node more memory"
        )
    over = [p for p in profiles if p.mem_limit > memory]
    if over:
        yield Note(
            f"the limit of {', '.join(p.name for p in over)} is above the node's "
            f"{format_size(memory)}: a server never reaches it"
        )
    largest = max(p.mem_guarantee for p in profiles)
    yield Ok(
        f"{format_size(memory)} of memory: fits every profile (largest guarantee "
        f"{format_size(largest)})"
    )


STEP = Step(
    name="profiles.check",
    roles=frozenset({"node"}),
    apply=apply,
    parallel=True,
    summary="every node has the memory each profile guarantees (read-only)",
    on_node_add="node",
)
