"""secrets.rotate: new values for the hub's generated secrets, made on the hub and never
shown; the containers that hold a rotated secret are recreated, and only those.

What a rotation costs the users: a new cookie secret logs everyone out; a new proxy token
restarts chp and the hub (the hub puts the routes of running servers back); a new culler
token restarts the hub and the culler; a new crypt key makes stored login state unreadable
(swarmhub keeps none); a new metrics token restarts the hub, and Prometheus gets it on the
next `invoke monitor.metrics` (until then its hub target is down); a new warm-up token
restarts the hub (class.warmup reads it there). Running servers keep running.
"""

from __future__ import annotations

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Change, Steps
from swarmhub.runbook.converge import secret_env_file_command
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.steps.hub import SECRET_ENV_FILES, hub_answers

# The names a user types -> the secret files on the hub.
ROTATABLE = {
    "cookie": "cookie_secret",
    "proxy-token": "proxy_token",
    "crypt-key": "crypt_key",
    "culler": "culler_token",
    "metrics-token": "metrics_token",
    "warmup-token": "warmup_token",
}
# The compose service reading each env file of SECRET_ENV_FILES.
SERVICE_OF_ENV_FILE = {"proxy.env": "chp", "culler.env": "cull", "jupyterhub.env": "jupyterhub"}


def secret_files(name: str) -> list[str]:
    """The secret files named by ``--name`` (one of ROTATABLE, or all)."""
    if name == "all":
        return list(ROTATABLE.values())
    if name not in ROTATABLE:
        raise SwarmhubError(
            f"secrets.rotate: unknown secret {name!r}: use one of {', '.join(ROTATABLE)} or all"
        )
    return [ROTATABLE[name]]


def affected(secrets: list[str]) -> dict[str, dict[str, str]]:
    """The env files that carry any of ``secrets``, with their variables."""
    return {
        filename: variables
        for filename, variables in SECRET_ENV_FILES.items()
        if set(variables.values()) & set(secrets)
    }


def new_secret_command(path: str, nbytes: int = 32) -> str:
    """A new random value written in place (0600), never on a command line or output."""
    return f"umask 077 && openssl rand -hex {nbytes} > {path}.new && mv {path}.new {path}"


def rotate_step(name: str) -> Step:
    secrets = secret_files(name)

    def apply(ctx: StepContext, hub: HostView) -> Steps:
        directory = ctx.settings.hub_dir
        secrets_dir = f"{directory}/secrets"
        if not hub.probe(f"test -d {secrets_dir}").ok:
            raise SwarmhubError(f"{hub.name}: no secrets yet in {secrets_dir}: run hub.deploy")
        for secret in secrets:
            yield Change(f"new {secret}", [new_secret_command(f"{secrets_dir}/{secret}")])
        env_files = affected(secrets)
        for filename, variables in env_files.items():
            yield Change(
                f"secrets for {filename}",
                [secret_env_file_command(secrets_dir, filename, variables)],
            )
        services = sorted(SERVICE_OF_ENV_FILE[filename] for filename in env_files)
        yield Change(
            f"recreated {', '.join(services)}",
            [
                f"cd {directory} && docker compose up -d --force-recreate --no-deps "
                + " ".join(services)
            ],
            then=[hub_answers()],
            restarts=", ".join(services),
        )

    return Step(
        name="secrets.rotate",
        roles=frozenset({"hub"}),
        apply=apply,
        summary=f"new {', '.join(secrets)} on the hub",
    )
