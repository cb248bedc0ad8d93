"""cluster: the whole runbook, in order."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.steps import docker_engine, hub, images, provision, proxy, swarm
from tasks._common import PLAN_HELP, run

STEPS = [
    provision.STEP,
    docker_engine.STEP,
    swarm.MANAGE,
    swarm.JOIN,
    images.BUILD,
    images.SERVE,
    images.PULL,
    hub.STEP,
    proxy.STEP,
]


@task(name="all", help=PLAN_HELP)
def all_(c, plan=False):
    """Run every step: provision, docker, swarm, images, hub, proxy; then print the URL."""
    run(c, STEPS, plan)
    settings = env_settings.load()
    if not plan:
        print(f"JupyterHub: https://{settings.domain_name}/")
