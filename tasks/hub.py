"""hub: the hub stack (chp, JupyterHub, idle culler) on the hub host."""

from invoke import task

from swarmhub.steps import hub
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def deploy(c, plan=False):
    """Deploy the hub stack with Docker Compose; restart only what changed."""
    run(c, [hub.STEP], plan)
