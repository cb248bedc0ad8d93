"""The shell commands that look into the hosts, built as text (nothing runs here).

A host's status is one SSH round trip: `sectioned` joins the probes into one script whose
output is split again by `parse.split_sections`. Every probe only reads.
"""

from __future__ import annotations

import shlex

from swarmhub.names import escape_user
from swarmhub.ports import HUB_API, PROMETHEUS_PORT
from swarmhub.settings import Settings
from swarmhub.steps.hub import CONTAINERS
from swarmhub.steps.proxy import served_cert_path

SECTION_MARK = "@@swarmhub "
REGISTRY_UNIT = "docker-registry"
USER_SERVICE_PREFIX = "jupyter-"
# Ask JupyterHub for pages ({"items": [...], "_pagination": {...}}) rather than a bare list
# silently cut at its page size.
PAGINATION = "Accept: application/jupyterhub-pagination+json"
USERS_PAGE_SIZE = 200  # JupyterHub's largest page
NODE_FORMAT = "{{.Hostname}}|{{.Status}}|{{.Availability}}|{{.ManagerStatus}}"
CONTAINER_FORMAT = (
    "{{.Name}}|{{.State.Status}}|{{.State.StartedAt}}|{{.RestartCount}}|{{.State.ExitCode}}"
)
TASK_FORMAT = "{{.Name}}|{{.Node}}|{{.CurrentState}}"
SERVICE_IMAGE_FORMAT = "{{.Name}}|{{.Image}}"


SERVICE_LABEL = "com.docker.swarm.service.name"


def as_root(command: str) -> str:
    """``command`` run by root through sudo, as `Host.run` does."""
    return f"sudo -n sh -c {shlex.quote(command)}"


def sectioned(sections: dict[str, str]) -> str:
    """One script running each command in turn, its output (stdout and stderr) after a marker
    line naming it; a failing command does not stop the others."""
    # The empty echo ends a last line that has no newline (curl's -w code) before the marker.
    return "; ".join(
        f"echo; echo {shlex.quote(SECTION_MARK + name)}; {{ {command}; }} 2>&1"
        for name, command in sections.items()
    )


def culler_token_file(settings: Settings) -> str:
    return f"{settings.hub_dir}/secrets/culler_token"


def hub_api_command(url: str, token_file: str | None = None, timeout: int = 5) -> str:
    """GET ``url`` from the hub's API on the hub: the body, then the HTTP code on a last line.

    With ``token_file`` the request carries the token in that file. The token reaches curl on
    its standard input (``printf`` is a shell builtin), so it is never on a command line (not
    in ``ps`` on the hub) and never in what this program receives or prints.
    """
    request = f"curl -sS -m {timeout} -w '\\n%{{http_code}}' -H {shlex.quote(PAGINATION)}"
    if token_file is None:
        return f"{request} {shlex.quote(url)}"
    token = f'"$(cat {shlex.quote(token_file)})"'
    return f"printf 'Authorization: token %s\\n' {token} | {request} -H @- {shlex.quote(url)}"


def users_command(settings: Settings, offset: int = 0) -> str:
    """One page of the users with an active (ready or pending) server, with their servers."""
    url = f"{HUB_API}/users?state=active&offset={offset}&limit={USERS_PAGE_SIZE}"
    return hub_api_command(url, culler_token_file(settings))


def node_list_command() -> str:
    return f"docker node ls --format '{NODE_FORMAT}'"


def user_tasks_command() -> str:
    """The running task of every user's server (a swarm service jupyter-*): name, node, state."""
    return (
        f"ids=$(docker service ls -q --filter name={USER_SERVICE_PREFIX}); "
        f'if [ -n "$ids" ]; then docker service ps $ids --filter desired-state=running '
        f"--format '{TASK_FORMAT}'; fi"
    )


# OOM kills in users' containers: Docker keeps its recent events (the last few hundred) in
# memory; an OOM kill of a process in a container is one even when the container lives on.
OOM_EVENTS_SINCE = "24h"


OOM_EVENT_FORMAT = f'{{{{.Time}}}} {{{{index .Actor.Attributes "{SERVICE_LABEL}"}}}}'


def oom_events_command(
    service: str | None = None, *, follow: bool = False, fmt: str = OOM_EVENT_FORMAT
) -> str:
    """This engine's OOM kills of the last day, one line each in ``fmt`` (by default
    ``UNIX-TIME SERVICE``), of one user's ``service`` or of all; ``follow``: those to come too."""
    label = f" --filter label={SERVICE_LABEL}={service}" if service else ""
    until = "" if follow else ' --until "$(date +%s)"'
    return (
        f"docker events --since {OOM_EVENTS_SINCE}{until} --filter type=container "
        f"--filter event=oom{label} --format '{fmt}'"
    )


def host_probe_sections(settings: Settings, roles: tuple[str, ...]) -> dict[str, str]:
    """What `invoke status` asks each host, by its roles."""
    sections = {
        "now": "date -u +%s",
        "disk": "df -P /",
        "memory": "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo",
    }
    if "hub" in roles or "node" in roles:
        sections["docker"] = "systemctl is-active docker"
    if "node" in roles:
        sections["oom"] = oom_events_command()
        # Which images the node holds: every image the hub offers must be there.
        sections["images"] = "docker image ls --format '{{.Repository}}:{{.Tag}}'"
    if "hub" in roles:
        sections["nodes"] = node_list_command()
        sections["containers"] = (
            f"docker inspect --format '{CONTAINER_FORMAT}' {' '.join(CONTAINERS)}"
        )
        sections["registry"] = f"systemctl is-active {REGISTRY_UNIT}"
        sections["hub_api"] = hub_api_command(f"{HUB_API}/")
        sections["tasks"] = user_tasks_command()
        # Servers started before a major upgrade of the hub run its old user image.
        sections["service_images"] = (
            f"docker service ls --filter name={USER_SERVICE_PREFIX} "
            f"--format '{SERVICE_IMAGE_FORMAT}'"
        )
        sections["upgrade"] = f"cat {settings.hub_dir}/upgrade/last.json 2>/dev/null; true"
        sections["backups"] = backup_check_command()
        # A class warm-up running now: class.warmup's state file (swarmhub.warmup.STATE_FILE).
        sections["warmup"] = f"cat {settings.hub_dir}/warmup.json 2>/dev/null; true"
        sections["users"] = users_command(settings)
    if "proxy" in roles:
        sections["nginx"] = "systemctl is-active nginx"
        sections["cert"] = f"openssl x509 -noout -enddate -in {served_cert_path(settings)}"
    return sections


BACKUP_SCRIPT = "/usr/local/sbin/swarmhub-backup"  # swarmhub.steps.backup.SCRIPT
BACKUP_NOT_SET_UP = "not set up"


def backup_check_command(connect_timeout: int = 4) -> str:
    """One line on the hub: `ok: REPOSITORY answers; last snapshot N min ago`, why the
    repository does not answer, or `not set up` (no backup script yet)."""
    return (
        f"if test -x {BACKUP_SCRIPT}; then CONNECT_TIMEOUT={connect_timeout} {BACKUP_SCRIPT} "
        f"check-repo 2>&1 | tail -n 1; else echo {shlex.quote(BACKUP_NOT_SET_UP)}; fi"
    )


def health_hub_sections() -> dict[str, str]:
    """What `invoke health` asks the hub: its API through chp, the swarm's nodes, and whether
    the backup repository answers."""
    return {
        "hub_api": hub_api_command(f"{HUB_API}/", timeout=3),
        "nodes": node_list_command(),
        "backups": backup_check_command(),
    }


# --- users' servers: the swarm service of each ---


def user_service(name: str) -> str:
    """The swarm service of ``name``'s server."""
    return USER_SERVICE_PREFIX + escape_user(name)


# --- metrics: Prometheus's HTTP API on the hub's loopback (monitor.metrics) ---

PROMETHEUS_API = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1"


def prometheus_query_command(query: str, timeout: int = 10) -> str:
    """An instant query of Prometheus on the hub: its JSON answer."""
    return (
        f"curl -sS -m {timeout} --get {shlex.quote(PROMETHEUS_API + '/query')} "
        f"--data-urlencode {shlex.quote('query=' + query)}"
    )


def prometheus_alerts_command(timeout: int = 10) -> str:
    """The alerts Prometheus holds (pending and firing): its JSON answer."""
    return f"curl -sS -m {timeout} {shlex.quote(PROMETHEUS_API + '/alerts')}"


def metrics_sections(queries: dict[str, str]) -> dict[str, str]:
    """What `invoke metrics` asks the hub: each query's answer, then the alerts."""
    sections = {name: prometheus_query_command(query) for name, query in queries.items()}
    sections["alerts"] = prometheus_alerts_command()
    return sections
