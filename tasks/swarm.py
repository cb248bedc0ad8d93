"""swarm: the swarm manager on the hub, the nodes as its workers."""

from invoke import task

from swarmhub.steps import swarm
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def manage(c, plan=False):
    """Start the swarm manager on the hub and its attachable overlay network."""
    run(c, [swarm.MANAGE], plan)


@task(help=PLAN_HELP)
def join(c, plan=False):
    """Join the nodes to the swarm as workers (members are left alone)."""
    run(c, [swarm.JOIN], plan)
