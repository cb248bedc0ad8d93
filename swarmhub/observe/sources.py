"""Which logs a service has, on which hosts, and the commands that print or follow them.

`invoke logs SERVICE` and `invoke diagnose` both read logs through `log_sources`, so that
an archive holds exactly what an operator would have looked at.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from swarmhub.errors import SwarmhubError
from swarmhub.observe.commands import REGISTRY_UNIT, oom_events_command, user_service
from swarmhub.settings import Settings
from swarmhub.sizes import format_size

AGENT_UNIT = "swarmhub-agent"
NGINX_LOGS = ("/var/log/nginx/access.log", "/var/log/nginx/error.log")

# The services of `invoke logs`, and where their logs come from.
SERVICES = {
    "hub": "the jupyterhub container on the hub",
    "cull": "the idle culler's container on the hub",
    "chp": "configurable-http-proxy's container on the hub",
    "proxy": "nginx on the proxy: its journal, access.log and error.log",
    "registry": f"the {REGISTRY_UNIT} service's journal on the hub",
    "docker": "the Docker daemon's journal on the hub and every node",
    "agent": "the swarmhub-agent's journal on every host (log shipping and alerts)",
    "user:NAME": "the server of user NAME, on whichever node it runs",
}
# The containers of the hub stack, by service name.
CONTAINER_OF = {"hub": "jupyterhub", "cull": "cull", "chp": "chp"}
# Every service but the users' servers, in the order an archive lists them.
HOST_SERVICES = ("hub", "cull", "chp", "registry", "docker", "proxy", "agent")


@dataclass(frozen=True)
class LogSource:
    """One stream of log lines: where it is, what it is, and the command printing it (as root).

    ``requires`` is a command that fails when the source does not exist (a container that was
    never created, a user without a server), so that it gets a clear line instead of Docker's
    error; ``missing`` is that line.
    """

    host: str
    label: str
    command: str
    requires: str = ""
    missing: str = ""


def valid_services() -> str:
    return ", ".join(SERVICES)


def parse_tail(text: str | int) -> int:
    """``--tail``: a whole number of lines, at least 1."""
    value = str(text).strip()
    if not value.isdigit() or int(value) < 1:
        raise SwarmhubError(f"--tail {value}: give a whole number of lines, e.g. --tail 100")
    return int(value)


def container_logs(host: str, container: str, tail: int, follow: bool) -> LogSource:
    follow_flag = " --follow" if follow else ""
    return LogSource(
        host,
        container,
        f"docker logs --tail {tail}{follow_flag} {container} 2>&1",
        requires=f"docker inspect --type container {container}",
        missing=f"{host} has no container {container}: deploy the hub stack (invoke hub.deploy)",
    )


def journal_logs(host: str, unit: str, tail: int, follow: bool) -> LogSource:
    follow_flag = " --follow" if follow else ""
    return LogSource(host, unit, f"journalctl -u {unit} -n {tail} --no-pager{follow_flag}")


def file_logs(host: str, path: str, tail: int, follow: bool) -> LogSource:
    # -F follows the file across nginx's log rotation.
    follow_flag = " -F" if follow else ""
    name = path.rsplit("/", 1)[-1]
    return LogSource(host, name, f"tail -n {tail}{follow_flag} {shlex.quote(path)}")


def user_logs(hub: str, user: str, tail: int, follow: bool) -> LogSource:
    """A user's server through the swarm manager: it finds the node and follows the task
    there; each line starts with the task and its node (jupyter-obs-2dalice.1@sam-node-2)."""
    service = user_service(user)
    follow_flag = " --follow" if follow else ""
    return LogSource(
        hub,
        service,
        f"docker service logs --tail {tail}{follow_flag} --no-task-ids {service} 2>&1",
        requires=f"docker service inspect {service}",
        missing=(
            f"{user} has no server (no swarm service {service} on {hub}): start one, "
            "or see the running ones with invoke status"
        ),
    )


def oom_logs(node: str, user: str, memory_limit: int, follow: bool) -> LogSource:
    """The OOM kills of a user's server that ``node``'s engine saw in the last day, as lines
    that name the cause (the server's own log only shows a kernel restarting); followed, the
    kills still to come too."""
    service = user_service(user)
    events = oom_events_command(service, follow=follow, fmt="{{.Time}}")
    message = (
        f"OOM kill in {service} ({user}'s server): a process, usually the notebook's kernel, "
        f"went over the memory limit of {format_size(memory_limit)} and the kernel killed it; "
        "Jupyter then shows 'kernel died' and restarts the kernel"
    )
    return LogSource(
        node,
        "oom",
        f"{events} | while read -r t; do echo \"$(date -u -d @$t '+%F %T UTC') {message}\"; done",
    )


def user_of(service: str) -> str | None:
    """The NAME of ``user:NAME``, or None for another service."""
    if not service.startswith("user:"):
        return None
    name = service.removeprefix("user:").strip()
    if not name or any(c.isspace() for c in name):
        raise SwarmhubError(f"{service!r}: give a user name after user:, e.g. user:alice")
    return name


def log_sources(settings: Settings, service: str, tail: int, follow: bool) -> list[LogSource]:
    """The log streams of ``service``; an unknown one is refused with the list of valid ones."""
    hub = settings.hub_host
    user = user_of(service)
    if user is not None:
        limit = settings.user_mem_limit
        return [user_logs(hub, user, tail, follow)] + [
            oom_logs(node, user, limit, follow) for node in settings.node_hosts
        ]
    if service in CONTAINER_OF:
        return [container_logs(hub, CONTAINER_OF[service], tail, follow)]
    if service == "registry":
        return [journal_logs(hub, REGISTRY_UNIT, tail, follow)]
    if service == "docker":
        return [journal_logs(host, "docker", tail, follow) for host in docker_hosts(settings)]
    if service == "agent":
        return [journal_logs(host, AGENT_UNIT, tail, follow) for host in settings.hosts]
    if service == "proxy":
        proxy = settings.proxy_host
        return [journal_logs(proxy, "nginx", tail, follow)] + [
            file_logs(proxy, path, tail, follow) for path in NGINX_LOGS
        ]
    raise SwarmhubError(f"unknown service {service!r}: give one of {valid_services()}")


def docker_hosts(settings: Settings) -> list[str]:
    """The hosts running Docker: the hub and the nodes."""
    return [host for host, roles in settings.hosts.items() if {"hub", "node"} & set(roles)]


def prefixes(sources: list[LogSource]) -> list[str]:
    """What each source's lines start with: nothing for one source, ``[host] `` when each host
    has one, ``[host label] `` when a host has several."""
    if len(sources) == 1:
        return [""]
    hosts = [s.host for s in sources]
    if len(set(hosts)) == len(hosts):
        return [f"[{s.host}] " for s in sources]
    return [f"[{s.host} {s.label}] " for s in sources]


def until_disconnected(command: str) -> str:
    """``command`` (one that follows a log), ended when the SSH channel closes.

    Without a terminal, sshd does not signal a command when the client goes away, so a
    ``docker logs --follow`` would outlive Ctrl-C on the hub. Here a watcher reads the
    channel's stdin (kept on fd 3: a background job's stdin is /dev/null) and kills the
    command at its end of file, which comes when the connection closes.
    """
    return (
        f"exec 3<&0; {command} & pid=$!; "
        '{ cat <&3 >/dev/null; kill "$pid"; } >/dev/null 2>&1 & '
        'wait "$pid"'
    )
