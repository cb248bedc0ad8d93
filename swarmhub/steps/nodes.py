"""nodes.add, nodes.drain, nodes.activate, nodes.remove: nodes come and go during a term.

The env file stays the source of truth: a node is added only once NODE_HOSTS lists it, and
removing one reminds you to take it out of NODE_HOSTS (or cluster.all would join it again).
"""

from __future__ import annotations

import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Change, Note, Ok, Steps
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.steps import swarm

# Swarm's availability: "pause" takes no new tasks and keeps the running ones; "drain" also
# stops the running ones (servers never restart by themselves: the hub sees them gone, and a
# student's next start lands on another node, her files kept).
AVAILABILITY = {
    "pause": "takes no new servers",
    "drain": "stops its servers (they start again elsewhere)",
    "active": "takes new servers",
}


def node_availability(hub: HostView, node: str) -> str | None:
    result = hub.probe(
        f"docker node inspect --format '{{{{.Spec.Availability}}}}' {shlex.quote(node)}"
    )
    return result.stdout.strip() if result.ok else None


def servers_on(hub: HostView, node: str) -> list[str]:
    """The users' servers (swarm services jupyter-*) running on ``node``."""
    out = hub.probe(
        f"docker node ps {shlex.quote(node)} --filter desired-state=running "
        "--format '{{.Name}}'"
    ).stdout
    return sorted({line.split(".")[0] for line in out.split() if line.startswith("jupyter-")})


def set_availability(hub: HostView, node: str, availability: str) -> Steps:
    current = node_availability(hub, node)
    if current is None:
        raise SwarmhubError(f"{node} is not a node of the swarm on {hub.name}: see docker node ls")
    if current == availability:
        yield Ok(f"{node} {AVAILABILITY[availability]} ({availability})")
        return
    yield Change(
        f"{node} {AVAILABILITY[availability]} ({current} → {availability})",
        [f"docker node update --availability {availability} {shlex.quote(node)}"],
    )


def remove(ctx: StepContext, hub: HostView, node: str, force: bool) -> Steps:
    if node == hub.name:
        raise SwarmhubError(f"{node} is the hub: it cannot be removed as a node")
    if node_availability(hub, node) is None:
        yield Ok(f"{node} is not in the swarm")
        return
    running = servers_on(hub, node)
    if running and not force:
        raise SwarmhubError(
            f"{node} still runs {len(running)} server(s) ({', '.join(running[:5])}): run "
            f"invoke nodes.drain {node} --evict first, or nodes.remove {node} --force"
        )
    try:
        member = ctx.view(node)
    except SwarmhubError as error:
        yield Note(f"{node} is unreachable ({error.reason}); removing it from the swarm only")
        member = None
    if member is not None and swarm.swarm_state(member)[0] == "active":
        yield Change("left the swarm", ["docker swarm leave --force"], host=node)
    # The manager marks the node down a moment after it leaves; --force spares the wait.
    yield Change(f"{node} removed from the swarm", [f"docker node rm --force {shlex.quote(node)}"])


def availability_step(name: str, availability: str, node: str) -> Step:
    """A one-off step on the hub changing ``node``'s availability."""
    return Step(
        name=name,
        roles=frozenset({"hub"}),
        apply=lambda _ctx, hub: set_availability(hub, node, availability),
        summary=f"{node} {AVAILABILITY[availability]}",
    )


def remove_step(node: str, force: bool) -> Step:
    return Step(
        name="nodes.remove",
        roles=frozenset({"hub"}),
        apply=lambda ctx, hub: remove(ctx, hub, node, force),
        summary=f"{node} leaves the swarm",
    )
