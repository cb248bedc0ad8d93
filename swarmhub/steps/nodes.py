"""nodes.add, nodes.drain, nodes.activate, nodes.remove: nodes come and go during a term.

The env file stays the source of truth: a node is added only once NODE_HOSTS lists it, and
removing one reminds you to take it out of NODE_HOSTS (or cluster.all would join it again).
"""

from __future__ import annotations

import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step
from swarmhub.steps import docker_engine, firewall, homes, images, provision, swarm

# Everything a new node needs, and nothing on any other host.
# The firewall runs on every host: the others must let the new node in (swarm, registry).
ADD_STEPS = [
    provision.STEP,
    docker_engine.STEP,
    firewall.STEP,
    swarm.JOIN,
    homes.MOUNT,
    images.PULL,
]
ADD_EVERYWHERE = frozenset({firewall.STEP.name})

# Swarm's availability: "pause" takes no new tasks and keeps the running ones; "drain" also
# moves the running ones elsewhere (a student's server restarts on another node).
AVAILABILITY = {
    "pause": "takes no new servers",
    "drain": "moves its servers away",
    "active": "takes new servers",
}


def node_availability(hub: Host, node: str) -> str | None:
    result = hub.probe(
        f"docker node inspect --format '{{{{.Spec.Availability}}}}' {shlex.quote(node)}"
    )
    return result.stdout.strip() if result.ok else None


def servers_on(hub: Host, node: str) -> list[str]:
    """The users' servers (swarm services jupyter-*) running on ``node``."""
    out = hub.probe(
        f"docker node ps {shlex.quote(node)} --filter desired-state=running "
        "--format '{{.Name}}'"
    ).stdout
    return sorted({line.split(".")[0] for line in out.split() if line.startswith("jupyter-")})


def set_availability(session: Session, node: str, availability: str) -> None:
    hub = session.host(session.settings.hub_host)
    current = node_availability(hub, node)
    if current is None:
        raise SwarmhubError(f"{node} is not a node of the swarm on {hub.name}: see docker node ls")
    if current == availability:
        hub.ok(f"{node} {AVAILABILITY[availability]} ({availability})")
        return
    hub.change(
        f"{node} {AVAILABILITY[availability]} ({current} → {availability})",
        f"docker node update --availability {availability} {shlex.quote(node)}",
    )


def remove(session: Session, node: str, force: bool) -> None:
    hub = session.host(session.settings.hub_host)
    if node == hub.name:
        raise SwarmhubError(f"{node} is the hub: it cannot be removed as a node")
    if node_availability(hub, node) is None:
        hub.ok(f"{node} is not in the swarm")
        return
    running = servers_on(hub, node)
    if running and not force:
        raise SwarmhubError(
            f"{node} still runs {len(running)} server(s) ({', '.join(running[:5])}): run "
            f"invoke nodes.drain {node} --evict first, or nodes.remove {node} --force"
        )
    try:
        member = session.host(node)
    except SwarmhubError as error:
        hub.say("note", f"{node} is unreachable ({error.reason}); removing it from the swarm only")
        member = None
    if member is not None and swarm.swarm_state(member)[0] == "active":
        member.change("left the swarm", "docker swarm leave --force")
    # The manager marks the node down a moment after it leaves; --force spares the wait.
    hub.change(f"{node} removed from the swarm", f"docker node rm --force {shlex.quote(node)}")


def availability_step(name: str, availability: str, node: str) -> Step:
    """A one-off step on the hub changing ``node``'s availability."""
    return Step(
        name=name,
        roles=frozenset({"hub"}),
        apply=lambda session, _hub: set_availability(session, node, availability),
        summary=f"{node} {AVAILABILITY[availability]}",
    )


def remove_step(node: str, force: bool) -> Step:
    return Step(
        name="nodes.remove",
        roles=frozenset({"hub"}),
        apply=lambda session, _hub: remove(session, node, force),
        summary=f"{node} leaves the swarm",
    )
