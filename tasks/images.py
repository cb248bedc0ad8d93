"""images: the hub and user images, built once, present on every node."""

from invoke import task

from swarmhub.steps import images
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def build(c, plan=False):
    """Build the hub and user images on the hub (pinned versions; no registry needed)."""
    run(c, [images.BUILD], plan)


@task(help=PLAN_HELP)
def distribute(c, plan=False):
    """Serve the user image from the hub's registry and pull it on every node."""
    run(c, [images.SERVE, images.PULL], plan)
