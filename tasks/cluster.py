"""cluster: the whole runbook, in order."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.steps.registry import RUNBOOK
from tasks._common import PLAN_HELP, RESTART_HELP, run


@task(name="all", help={**PLAN_HELP, **RESTART_HELP})
def all_(c, plan=False, restart_nodes=False):
    """Run every step of the runbook in order (see the README's table), then print the URL."""
    run(c, RUNBOOK, plan, task="cluster.all", restart_nodes=restart_nodes)
    if not plan:
        print(login_hint(env_settings.load()))


all_.__doc__ = (
    "Run every step in order: " + ", ".join(step.name for step in RUNBOOK) + "; then print the URL."
)


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
