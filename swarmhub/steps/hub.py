"""hub.deploy: the hub stack (chp, JupyterHub, idle culler) with Docker Compose on the hub.

Secrets are made on the hub, once, kept 0600 and never leave it. Files are written only when
they differ, and `docker compose up` runs only when something changed or a container is not
running; the hub's config digest label makes Compose restart the hub alone when its
configuration changed.
"""

from __future__ import annotations

import hashlib
import shlex
import time

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from swarmhub.errors import SwarmhubError
from swarmhub.hubside import SPAWNER_MODULE
from swarmhub.runbook.ensure import ensure_directory, ensure_file, ensure_secret
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step
from swarmhub.settings import OAUTH_AUTHENTICATORS, PROJECT_ROOT, Settings, names_in_file
from swarmhub.steps.images import chp_ref, image_present, image_ref

TEMPLATES = PROJECT_ROOT / "compose" / "hub"
CONTAINERS = ("chp", "jupyterhub", "cull")
# name of the secret file -> the variables each container's env file gives it
SECRETS = ("cookie_secret", "proxy_token", "crypt_key", "culler_token")
SECRET_ENV_FILES = {
    "proxy.env": {"CONFIGPROXY_AUTH_TOKEN": "proxy_token"},
    "culler.env": {"JUPYTERHUB_API_TOKEN": "culler_token"},
    "jupyterhub.env": {
        "JPY_COOKIE_SECRET": "cookie_secret",
        "CONFIGPROXY_AUTH_TOKEN": "proxy_token",
        "JUPYTERHUB_CRYPT_KEY": "crypt_key",
        "CULLER_API_TOKEN": "culler_token",
    },
}


def hub_settings_env(settings: Settings) -> str:
    """hub.env: the hub's settings that are not secret."""
    values = {
        "USER_IMAGE": image_ref(settings, "user"),
        "SWARM_NETWORK": settings.swarm_network,
        "USER_MEM_LIMIT": settings.user_mem_limit,
        "USER_MEM_GUARANTEE": settings.user_mem_guarantee or settings.user_mem_limit,
        "USER_CPU_LIMIT": settings.user_cpu_limit,
        # Empty: the hub starts 2 servers a node at once, following the swarm's nodes. A
        # start is CPU-bound on its node (a CPU-second or two at USER_CPU_LIMIT) and the hub's
        # share is small; on the 2-core sandbox, 2 a node gave the fastest login storm.
        "SPAWN_CONCURRENCY": settings.spawn_concurrency or "",
        **login_settings(settings),
        # Users' homes: made by the hub before a spawn, mounted into each server. Where they
        # come from is here too, so that the hub restarts (and binds the new mount) when the
        # storage changes.
        "HOMES_STORAGE": f"{settings.homes_backend}:{settings.storage_name}",
        "HOMES_DIR": settings.homes_dir,
        "HOME_UID": settings.home_uid,
        "HOME_GID": settings.home_gid,
    }
    lines = ["# Written by swarmhub (hub.deploy) from the env file."]
    lines += [f"{key}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def login_settings(settings: Settings) -> dict[str, str]:
    """The hub's login settings that are not secret; allowed users and admins are those of
    the env file and of ALLOWED_USERS_FILE / ADMIN_USERS_FILE together."""
    allowed = (*settings.allowed_users, *names_in_file(settings.allowed_users_file))
    admins = (*settings.admin_users, *names_in_file(settings.admin_users_file))
    values = {
        "AUTHENTICATOR": settings.authenticator,
        "ALLOWED_USERS": ",".join(dict.fromkeys(allowed)),
        "ADMIN_USERS": ",".join(dict.fromkeys(admins)),
    }
    if settings.authenticator in OAUTH_AUTHENTICATORS:
        values["OAUTH_CLIENT_ID"] = settings.oauth_client_id
        values["OAUTH_CALLBACK_URL"] = (
            settings.oauth_callback_url or f"https://{settings.domain_name}/hub/oauth_callback"
        )
    if settings.authenticator == "google":
        values["GOOGLE_HOSTED_DOMAIN"] = settings.google_hosted_domain
    if settings.authenticator == "oidc":
        for key in ("AUTHORIZE_URL", "TOKEN_URL", "USERDATA_URL", "USERNAME_CLAIM", "SCOPES"):
            values[f"OIDC_{key}"] = settings.values[f"OIDC_{key}"]
        values["OIDC_LOGIN_SERVICE"] = settings.oidc_login_service
    return values


def auth_env(settings: Settings) -> str:
    """secrets/auth.env: the login secrets that come from the env file or a file beside it
    (0600 on the hub, uploaded over SFTP, never on a command line)."""
    lines = []
    if settings.authenticator == "dummy":
        lines.append(f"DUMMY_PASSWORD={settings.dummy_password}")
    if settings.authenticator in OAUTH_AUTHENTICATORS:
        secret = settings.oauth_client_secret_file.read_text().strip()
        lines.append(f"OAUTH_CLIENT_SECRET={secret}")
    return "\n".join(lines) + "\n" if lines else "# no login secrets\n"


def hub_config() -> str:
    return (TEMPLATES / "jupyterhub_config.py").read_text()


def spawner_module() -> str:
    return SPAWNER_MODULE.read_text()


def render_compose(settings: Settings) -> str:
    digest = hashlib.sha256(
        (hub_config() + spawner_module() + hub_settings_env(settings) + auth_env(settings)).encode()
    ).hexdigest()[:16]
    environment = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    return environment.get_template("compose.yml.j2").render(
        hub_image=image_ref(settings, "hub"),
        chp_image=chp_ref(settings),
        config_digest=digest,
        cull_timeout=settings.cull_timeout,
        cull_every=settings.cull_every,
        network=settings.swarm_network,
        homes_dir=settings.homes_dir,
        data_dir=settings.hub_data_dir,
    )


def secret_env_command(secrets_dir: str, filename: str, variables: dict[str, str]) -> str:
    """Assemble a container's env file from the secret files, on the hub (never shown)."""
    target = shlex.quote(f"{secrets_dir}/{filename}")
    parts = [f'echo "{var}=$(cat {secrets_dir}/{src})"' for var, src in variables.items()]
    return f"umask 077 && {{ {'; '.join(parts)}; }} > {target} && chmod 600 {target}"


def running_containers(host: Host, directory: str) -> set[str]:
    out = host.probe(
        f"cd {directory} && docker compose ps --status running --format '{{{{.Name}}}}'"
    ).stdout
    return set(out.split())


def wait_for_hub(host: Host, timeout: float = 120) -> None:
    """The hub answers through chp on port 8000 (its API's version endpoint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.probe("curl -fsS -o /dev/null http://127.0.0.1:8000/hub/api/", sudo=False).ok:
            return
        time.sleep(1)
    logs = host.probe("docker logs --tail 5 jupyterhub 2>&1").stdout.strip().replace("\n", " | ")
    raise SwarmhubError(f"{host.name}: the hub did not answer within {timeout:.0f} s: {logs}")


def apply(session: Session, hub: Host) -> None:
    settings = session.settings
    directory = settings.hub_dir
    secrets_dir = f"{directory}/secrets"
    changed = ensure_directory(hub, directory, "0755")
    changed |= ensure_directory(hub, secrets_dir, "0700")
    changed |= ensure_directory(hub, f"{directory}/data", "0700")
    for name in SECRETS:
        changed |= ensure_secret(hub, f"{secrets_dir}/{name}")
    for filename, variables in SECRET_ENV_FILES.items():
        path = f"{secrets_dir}/{filename}"
        if hub.probe(f"test -s {path}").ok:
            hub.ok(f"secrets for {filename}")
        else:
            changed |= hub.change(
                f"secrets for {filename}", secret_env_command(secrets_dir, filename, variables)
            )
    changed |= ensure_file(
        hub, f"{secrets_dir}/auth.env", auth_env(settings), mode="0600", describe="login secrets"
    )
    changed |= ensure_file(hub, f"{directory}/hub.env", hub_settings_env(settings))
    # The module first: the config that imports it is never on the hub without it.
    changed |= ensure_file(hub, f"{directory}/swarmhub_spawner.py", spawner_module())
    changed |= ensure_file(hub, f"{directory}/jupyterhub_config.py", hub_config())
    changed |= ensure_file(hub, f"{directory}/compose.yml", render_compose(settings))
    if hub.plan:
        return
    for name, ref in (
        ("hub", image_ref(settings, "hub")),
        ("user", image_ref(settings, "user")),
        ("chp", chp_ref(settings)),
    ):
        if not image_present(hub, ref):
            raise SwarmhubError(f"{hub.name}: the {name} image {ref} is missing: run images.build")
    running = running_containers(hub, directory)
    if not changed and running >= set(CONTAINERS):
        hub.ok(f"hub stack running ({', '.join(CONTAINERS)})")
        return
    hub.run(f"cd {directory} && docker compose up -d --remove-orphans --quiet-pull")
    wait_for_hub(hub)
    hub.changed("hub stack up: " + ", ".join(sorted(set(CONTAINERS) - running) or ["updated"]))


STEP = Step(
    name="hub.deploy",
    roles=frozenset({"hub"}),
    apply=apply,
    summary="the hub stack: chp, JupyterHub and the idle culler (Docker Compose)",
)
