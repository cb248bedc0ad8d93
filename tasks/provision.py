"""provision: base packages, time sync, admin groups, CAs, kernel and limit settings."""

from invoke import task

from swarmhub.steps import provision as step
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def provision(c, plan=False):
    """Prepare every host: base packages, time sync, admin groups, CAs, kernel settings."""
    run(c, [step.STEP], plan)
