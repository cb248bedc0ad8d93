"""docker: Docker Engine and Compose v2 on the hub and the nodes."""

from invoke import task

from swarmhub.steps import docker_engine
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def install(c, plan=False):
    """Install Docker Engine and Compose v2 on hub and nodes; manage daemon.json."""
    run(c, [docker_engine.STEP], plan)
