"""secrets: the hub's generated secrets."""

from invoke import task

from swarmhub.steps import secrets
from tasks._common import PLAN_HELP, run


@task(
    help={
        "name": "cookie, proxy-token, crypt-key, culler, metrics-token, warmup-token or all",
        **PLAN_HELP,
    }
)
def rotate(c, name="all", plan=False):
    """Make new hub secrets (never shown) and recreate only the containers that use them."""
    run(c, [secrets.rotate_step(name)], plan, task="secrets.rotate")
