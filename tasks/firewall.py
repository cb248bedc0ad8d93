"""firewall: nftables on every host, loaded at boot."""

from invoke import task

from swarmhub.steps import firewall
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def configure(c, plan=False):
    """Firewall every host: SSH (and 80/443 on the proxy) from anywhere, the rest cluster-only."""
    run(c, [firewall.STEP], plan)
