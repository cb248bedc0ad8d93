"""proxy: nginx with TLS on the public proxy host."""

from invoke import task

from swarmhub.steps import proxy
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def configure(c, plan=False):
    """Configure nginx on the proxy: TLS, HTTP to HTTPS, websockets, forwarding to the hub."""
    run(c, [proxy.STEP], plan)
