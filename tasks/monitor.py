"""monitor: log shipping to a remote syslog and alerts to a webhook (the swarmhub-agent)."""

from invoke import task

from swarmhub.steps import monitor
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def deploy(c, plan=False):
    """Run the swarmhub-agent on every host (SYSLOG_URL, ALERT_WEBHOOK_URL), or remove it."""
    run(c, [monitor.STEP], plan)
