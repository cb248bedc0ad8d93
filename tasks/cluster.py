"""cluster: the whole runbook, in order."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.steps import (
    backup,
    docker_engine,
    firewall,
    homes,
    hub,
    images,
    monitor,
    provision,
    proxy,
    swarm,
)
from tasks._common import PLAN_HELP, run

STEPS = [
    provision.STEP,
    docker_engine.STEP,
    # After Docker (the firewall checks its API is not on TCP), before anything listens, and
    # before the swarm: a node new to NODE_HOSTS can join only once the others let it in.
    firewall.STEP,
    swarm.MANAGE,
    swarm.JOIN,
    homes.STORAGE,
    homes.MOUNT,
    images.BUILD,
    images.SERVE,
    images.PULL,
    hub.STEP,
    backup.STEP,
    proxy.STEP,
    monitor.STEP,
]


@task(name="all", help=PLAN_HELP)
def all_(c, plan=False):
    """Run every step: provision, docker, firewall, swarm, homes, images, hub, backup, proxy,
    monitor; then print the URL."""
    run(c, STEPS, plan)
    if not plan:
        print(login_hint(env_settings.load()))


def login_hint(settings: env_settings.Settings) -> str:
    """Where to go, and how to log in."""
    lines = [f"JupyterHub is up: {settings.public_url()}"]
    if settings.authenticator == "dummy":
        lines.append(
            f"Log in with any user name and the password DUMMY_PASSWORD of {settings.source.name}."
        )
    if settings.tls_mode == "self-signed":
        lines.append("The certificate is self-signed: your browser will ask you to accept it.")
    return "\n".join(lines)
