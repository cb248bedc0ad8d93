"""hub.deploy: the hub stack (chp, JupyterHub, idle culler) with Docker Compose on the hub.

Secrets are made on the hub, once, kept 0600 and never leave it. Files are written only when
they differ, and `docker compose up` runs only when something changed or a container is not
running; the hub's config digest label makes Compose restart the hub alone when its
configuration changed.
"""

from __future__ import annotations

import hashlib
import json

from swarmhub.errors import SwarmhubError
from swarmhub.hubside import LTI_MODULE, SPAWNER_MODULE
from swarmhub.overlay import layout
from swarmhub.ports import (
    CHP_API_PORT,
    CHP_METRICS_PORT,
    CHP_PORT,
    DASHBOARD_PORT,
    HUB_API,
    HUB_PORT,
    USER_SERVER_PORT,
)
from swarmhub.runbook.change import Change, FileWrite, Later, Note, Ok, Steps, Wait
from swarmhub.runbook.converge import secret_env_current_command, secret_env_file_command
from swarmhub.runbook.ensure import ensure_directory, ensure_secret, file_differs
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import OAUTH_AUTHENTICATORS, Settings, names_in_file
from swarmhub.steps.images import (
    chp_ref,
    image_present,
    image_ref,
    jupyterhub_version,
    offered_history_command,
    offered_refs,
    profile_ref,
)
from swarmhub.templates import render, serialize

PROFILES_JSON = "profiles.json"  # beside jupyterhub_config.py, with PROFILES_FILE only

CONTAINERS = ("chp", "jupyterhub", "cull")
# name of the secret file -> the variables each container's env file gives it
SECRETS = (
    "cookie_secret",
    "proxy_token",
    "crypt_key",
    "culler_token",
    "metrics_token",
    "warmup_token",
)
SECRET_ENV_FILES = {
    "proxy.env": {"CONFIGPROXY_AUTH_TOKEN": "proxy_token"},
    "culler.env": {"JUPYTERHUB_API_TOKEN": "culler_token"},
    "jupyterhub.env": {
        "JPY_COOKIE_SECRET": "cookie_secret",
        "CONFIGPROXY_AUTH_TOKEN": "proxy_token",
        "JUPYTERHUB_CRYPT_KEY": "crypt_key",
        "CULLER_API_TOKEN": "culler_token",
        # Prometheus's token (monitor.metrics): scope read:metrics, nothing else.
        "METRICS_API_TOKEN": "metrics_token",
        # class.warmup's token (the class-warmup service): used inside the hub's container
        # only, by the script class.warmup sends there.
        "WARMUP_API_TOKEN": "warmup_token",
    },
}


# The JupyterHub version the hub runs, asked of the hub itself: its API through chp when it
# answers (`{"version": "5.5.4"}`), else the package in the image of the jupyterhub container
# (stopped, or not answering); nothing when there is no hub container.
INSTALLED_VERSION = "from importlib.metadata import version; print(version('jupyterhub'))"
HUB_VERSION_PROBE = (
    f'v=$(curl -fsS -m 5 {HUB_API}/ 2>/dev/null) && {{ echo "api $v"; exit 0; }}; '
    "img=$(docker inspect --format '{{.Image}}' jupyterhub 2>/dev/null) || "
    "{ echo none; exit 0; }; "
    f'echo "image $(docker run --rm --network none --entrypoint python3 "$img" '
    f'-c "{INSTALLED_VERSION}" 2>&1 | tail -n 1)"'
)


def parse_hub_version(output: str) -> str | None:
    """HUB_VERSION_PROBE's answer: the version ("5.5.4"), or None when no hub is deployed."""
    kind, _, value = output.strip().partition(" ")
    if kind == "api":
        try:
            version = json.loads(value).get("version", "")
        except (ValueError, AttributeError):
            version = ""
    elif kind == "image":
        version = value.strip()
    else:
        return None
    if not version[:1].isdigit():
        raise SwarmhubError(f"the hub's JupyterHub version is unreadable: {output.strip()[:120]}")
    return version


def running_hub_version(hub: HostView) -> str | None:
    """The JupyterHub version the hub runs (None: no hub deployed yet)."""
    return parse_hub_version(hub.probe(HUB_VERSION_PROBE).stdout)


def major(version: str) -> int:
    return int(version.split(".", 1)[0])


def series_of(version: str) -> str:
    """The series a version belongs to ("5.5.4" -> "5.5")."""
    return ".".join(version.split(".")[:2])


def refuse_major_change(settings: Settings, hub: str, running: str | None) -> str:
    """hub.deploy changes JupyterHub within its major version only: one line to the upgrade
    (or, for a downgrade, to the copy of the database) otherwise; the version wanted."""
    wanted = jupyterhub_version(settings)
    if running is None or major(running) == major(wanted):
        return wanted
    series = settings.jupyterhub_series
    if major(running) < major(wanted):
        raise SwarmhubError(
            f"{hub}: the hub runs JupyterHub {running} and JUPYTERHUB_SERIES={series} is "
            f"JupyterHub {wanted}, a major upgrade that migrates the hub's database: hub.deploy "
            f"does not make it; run `invoke hub.upgrade --plan`, then `invoke hub.upgrade` "
            f"(docs/upgrading.md), or set JUPYTERHUB_SERIES={series_of(running)} to stay"
        )
    raise SwarmhubError(
        f"{hub}: the hub runs JupyterHub {running} and JUPYTERHUB_SERIES={series} is "
        f"JupyterHub {wanted}, an older major: its database cannot go back (no downgrade); "
        f"set JUPYTERHUB_SERIES={series_of(running)}, or restore the copy hub.upgrade made "
        "(docs/upgrading.md, rolling back)"
    )


# With a course (COURSE_ID): the gradebook's password (gradebook.database makes it too), which
# the spawner gives graders' servers alone.
GRADEBOOK_SECRET = "gradebook_password"


def secret_names(settings: Settings) -> tuple[str, ...]:
    return SECRETS + ((GRADEBOOK_SECRET,) if settings.course_id else ())


def secret_env_files(settings: Settings) -> dict[str, dict[str, str]]:
    if not settings.course_id:
        return SECRET_ENV_FILES
    return {**SECRET_ENV_FILES, "gradebook.env": {"GRADEBOOK_PASSWORD": GRADEBOOK_SECRET}}


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
        # The server's firewall (server-firewall.nft) allows these names' addresses, resolved
        # by each server when it starts (KERNEL_EGRESS=allow-list).
        "KERNEL_EGRESS_NAMES": ",".join(egress_names(settings)),
    }
    if settings.course_id:
        # nbgrader (docs/nbgrader.md): the spawner mounts each server its view of the course.
        values["COURSE_ID"] = settings.course_id
        values["GRADERS_GROUP"] = settings.graders_group
        # gradebook.database's PostgreSQL on the hub, as graders' servers reach it
        # (empty: the spawner asks Docker for the swarm manager's address)
        values["GRADEBOOK_HOST"] = settings.hub_address
        values["GRADEBOOK_DB"] = "nbgrader_" + settings.course_id.lower().replace("-", "_")
    if settings.metrics == "on":
        # The admins' dashboard (monitor.metrics): the hub routes /services/prometheus/ there.
        values["DASHBOARD_PORT"] = str(DASHBOARD_PORT)
    if settings.profiles_file is not None:
        # The profiles and their groups (profiles.json beside the config); without it the
        # hub has one profile, made of the values above.
        values["PROFILES"] = f"/srv/jupyterhub/{PROFILES_JSON}"
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
    if settings.authenticator == "lti13":
        for key in ("ISSUER", "CLIENT_ID", "AUTHORIZE_URL", "JWKS_URL", "CONTEXT_ID"):
            values[f"LTI13_{key}"] = settings.values[f"LTI13_{key}"]
        values["LTI13_USERNAME_CLAIM"] = settings.lti13_username_claim
        values["LTI_IFRAME"] = settings.lti_iframe
        values["GRADERS_GROUP"] = settings.graders_group
        values["STUDENTS_GROUP"] = settings.students_group
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


def is_address(entry: str) -> bool:
    return entry.replace(".", "").replace("/", "").isdigit()


def egress_names(settings: Settings) -> list[str]:
    """KERNEL_EGRESS_ALLOW's host names (its addresses and networks are in the rules)."""
    if settings.kernel_egress != "allow-list":
        return []
    return [entry for entry in settings.kernel_egress_allow if not is_address(entry)]


def server_firewall(settings: Settings) -> str:
    """The nftables table each user's server loads into its own network namespace."""
    overlay = layout(settings.swarm_subnet)
    allow_list = settings.kernel_egress == "allow-list"
    allowed = [e for e in settings.kernel_egress_allow if is_address(e)] if allow_list else []
    return render(
        "hub/server-firewall.nft.j2",
        chp=overlay.chp,
        hub=overlay.hub,
        overlay=str(overlay.subnet),
        allowed=allowed,
        allow_list=allow_list,
        server_port=USER_SERVER_PORT,
        hub_port=HUB_PORT,
        gradebook=5432 if settings.course_id else "",
    )


def profiles_json(settings: Settings) -> str:
    """profiles.json: what the spawn form offers, each profile with the image its new servers
    start on (hub.deploy writes it only once every node holds that image), and the groups the
    hub syncs to the profiles file."""
    profile_set = settings.profile_set()
    return serialize(
        {
            "profiles": [
                {
                    "name": p.name,
                    "display_name": p.display_name,
                    "description": p.description,
                    "image": profile_ref(settings, p),
                    "mem_limit": p.mem_limit,
                    "mem_guarantee": p.mem_guarantee,
                    "cpu_limit": p.cpu_limit,
                    "groups": list(p.groups),
                }
                for p in profile_set.profiles
            ],
            "groups": {name: list(members) for name, members in profile_set.groups.items()},
        }
    )


def hub_config() -> str:
    return render("hub/jupyterhub_config.py")


def spawner_module() -> str:
    """The spawner the config imports, placed beside it (swarmhub/hubside/, which runs in the
    hub's image: read as a file here, never imported by the runbook)."""
    return SPAWNER_MODULE.read_text()


def lti_module() -> str:
    """The LMS login (AUTHENTICATOR=lti13), placed beside the config like the spawner; the
    config imports it for that authenticator only."""
    return LTI_MODULE.read_text()


def render_compose(settings: Settings) -> str:
    digest = hashlib.sha256(
        (
            hub_config()
            + spawner_module()
            + (lti_module() if settings.authenticator == "lti13" else "")
            + hub_settings_env(settings)
            + auth_env(settings)
            + server_firewall(settings)
            + (profiles_json(settings) if settings.profiles_file is not None else "")
        ).encode()
    ).hexdigest()[:16]
    overlay = layout(settings.swarm_subnet)
    return render(
        "hub/compose.yml.j2",
        hub_image=image_ref(settings, "hub"),
        chp_image=chp_ref(settings),
        config_digest=digest,
        cull_timeout=settings.cull_timeout,
        gradebook=bool(settings.course_id),
        cull_every=settings.cull_every,
        network=settings.swarm_network,
        homes_dir=settings.homes_dir,
        data_dir=settings.hub_data_dir,
        chp_port=CHP_PORT,
        chp_api_port=CHP_API_PORT,
        chp_metrics_port=CHP_METRICS_PORT,
        hub_port=HUB_PORT,
        chp_address=overlay.chp,
        hub_address=overlay.hub,
        profiles=PROFILES_JSON if settings.profiles_file is not None else "",
        lti=settings.authenticator == "lti13",
        dashboard=settings.metrics == "on",
    )


def running_containers(host: HostView, directory: str) -> set[str]:
    out = host.probe(
        f"cd {directory} && docker compose ps --status running --format '{{{{.Name}}}}'"
    ).stdout
    return set(out.split())


def hub_answers(timeout: float = 120) -> Wait:
    """Then: the hub answers through chp (its API's version endpoint)."""
    return Wait(
        "the hub answers through chp",
        f"curl -fsS -o /dev/null {HUB_API}/",
        timeout=timeout,
        sudo=False,
        explain="docker logs --tail 5 jupyterhub 2>&1",
    )


def hub_files(settings: Settings, secrets_dir: str, directory: str) -> list[tuple[str, str, str]]:
    """(path, content, mode) of every file the hub stack reads."""
    profiles = []
    if settings.profiles_file is not None:
        profiles = [(f"{directory}/{PROFILES_JSON}", profiles_json(settings), "0644")]
    # The LMS login module only where the config imports it (AUTHENTICATOR=lti13).
    lti = []
    if settings.authenticator == "lti13":
        lti = [(f"{directory}/swarmhub_lti.py", lti_module(), "0644")]
    return [
        (f"{secrets_dir}/auth.env", auth_env(settings), "0600"),
        *profiles,
        (f"{directory}/hub.env", hub_settings_env(settings), "0644"),
        # The module first: the config that imports it is never on the hub without it.
        (f"{directory}/swarmhub_spawner.py", spawner_module(), "0644"),
        *lti,
        (f"{directory}/server-firewall.nft", server_firewall(settings), "0644"),
        (f"{directory}/jupyterhub_config.py", hub_config(), "0644"),
        (f"{directory}/compose.yml", render_compose(settings), "0644"),
    ]


def apply(ctx: StepContext, hub: HostView) -> Steps:
    settings = ctx.settings
    # First of all: a major version change is hub.upgrade's, never this step's.
    running = running_hub_version(hub)
    wanted = refuse_major_change(settings, hub.name, running)
    if running is not None:
        yield Ok(f"JupyterHub {running} (JUPYTERHUB_SERIES={settings.jupyterhub_series}: {wanted})")
    directory = settings.hub_dir
    secrets_dir = f"{directory}/secrets"
    changed = False
    for path, mode in ((directory, "0755"), (secrets_dir, "0700"), (f"{directory}/data", "0700")):
        changed |= bool((yield from ensure_directory(hub, path, mode)))
    for name in secret_names(settings):
        changed |= bool((yield from ensure_secret(hub, f"{secrets_dir}/{name}")))
    for filename, variables in secret_env_files(settings).items():
        if hub.probe(secret_env_current_command(secrets_dir, filename, variables)).ok:
            yield Ok(f"secrets for {filename}")
        else:
            changed = True
            yield Change(
                f"secrets for {filename}",
                [secret_env_file_command(secrets_dir, filename, variables)],
            )
    files = []
    for path, content, mode in hub_files(settings, secrets_dir, directory):
        if why := file_differs(hub, path, content, mode, "root"):
            files.append((path, content, mode, why))
            if path.endswith("/server-firewall.nft") and why != "missing":
                yield Note(
                    "users' servers running now keep the firewall they started with (the "
                    "egress setting among it) until they restart"
                )
        else:
            yield Ok(f"{path} up to date")
    for name, ref in (
        ("hub", image_ref(settings, "hub")),
        ("user", image_ref(settings, "user")),
        ("chp", chp_ref(settings)),
    ):
        if image_present(hub, ref):
            continue
        if not ctx.changes_pending:
            raise SwarmhubError(f"{hub.name}: the {name} image {ref} is missing: run images.build")
        yield Later(f"the {name} image {ref}: built by images.build first")
    yield from check_nodes_hold(ctx)
    running = running_containers(hub, directory)
    if not changed and not files and running >= set(CONTAINERS):
        yield Ok(f"hub stack running ({', '.join(CONTAINERS)})")
        return
    what = [f"wrote {p.rsplit('/', 1)[-1]} ({why})" for p, _, _, why in files]
    stopped = sorted(set(CONTAINERS) - running)
    what.append("started " + ", ".join(stopped) if stopped else "compose up")
    # Compose recreates only the containers whose definition changed: the hub's config digest
    # label restarts the hub alone when its configuration changed; chp keeps its routes.
    history = []
    if any(p.endswith(f"/{PROFILES_JSON}") for p, _, _, _ in files):
        # What images.rollback goes back along (nothing when no profile has packages).
        history = [c for c in [offered_history_command(settings)] if c]
    yield Change(
        "hub stack: " + "; ".join(what),
        [f"cd {directory} && docker compose up -d --remove-orphans --quiet-pull", *history],
        files=[FileWrite.of(p, c, mode=m) for p, c, m, _ in files],
        then=[hub_answers()],
        restarts="JupyterHub" if "jupyterhub" in running and (files or changed) else "",
    )


def check_nodes_hold(ctx: StepContext) -> Steps:
    """The hub offers a profile's image only once every node holds it: no student's spawn
    waits for a pull, nor fails on a node without it (images.distribute pulls them). The
    user image itself is images.pull's, run before in every task that runs this step."""
    settings = ctx.settings
    for ref in offered_refs(settings)[1:]:
        missing = [n for n in settings.node_hosts if not image_present(ctx.view(n), ref)]
        if not missing:
            yield Ok(f"every node holds {ref.rsplit('/', 1)[-1]}")
        elif ctx.changes_pending:
            yield Later(f"{ref}: pulled on {', '.join(missing)} by images.pull first")
        else:
            raise SwarmhubError(
                f"{', '.join(missing)} lack{'s' if len(missing) == 1 else ''} {ref}, which a "
                "profile offers: run `invoke images.distribute` first (the hub offers an image "
                "only once every node holds it)"
            )


STEP = Step(
    name="hub.deploy",
    roles=frozenset({"hub"}),
    apply=apply,
    summary="the hub stack: chp, JupyterHub and the idle culler (Docker Compose)",
)
