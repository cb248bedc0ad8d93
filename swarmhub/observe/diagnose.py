"""`invoke diagnose`: one .tar.gz for a bug report — the status, recent logs and the configs of
every host, with secrets masked.

Layout of the archive (under one directory named like the file)::

    README.txt                        what this is, when, from which env file
    status.json, status.txt           `invoke status --json` and its tables
    hosts/<host>/system.txt           OS, disk, memory, failed units, Docker, swarm
    hosts/<host>/logs/<source>.log    the last lines of each service's logs
    hosts/<host>/config/<path>        the configuration files swarmhub writes
    hosts/<host>/unreachable.txt      instead of the above, for a host that did not answer

Every text passes through `mask.mask_secrets`, and nothing is read from the hub's secrets
directory (`mask.refuse_secrets_dir`).
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

from swarmhub import mask
from swarmhub.observe import commands, figures, report, status
from swarmhub.observe.remote import in_parallel, reach
from swarmhub.observe.sources import HOST_SERVICES, log_sources
from swarmhub.runbook.host import Host
from swarmhub.settings import Settings, check_local_files
from swarmhub.steps import logs, metrics
from swarmhub.steps.docker_engine import DAEMON_JSON
from swarmhub.steps.images import REGISTRY_CONFIG_PATH
from swarmhub.steps.proxy import SITE_PATH

LOG_LINES = 500
USER_LOG_LINES = 100  # per user's server: a course has hundreds
COMMAND_TIMEOUT = 60


def default_name(now: datetime) -> str:
    return f"diagnose-{now.strftime('%Y%m%dT%H%M%SZ')}.tar.gz"


def homes_config_paths(settings: Settings, roles: tuple[str, ...]) -> list[str]:
    """The homes' mount unit where they are mounted, the export, the backup script and timer."""
    from swarmhub.steps import backup, homes

    paths = []
    if "storage" in roles and settings.homes_backend == "nfs":
        paths.append(homes.EXPORTS_FILE)
    if "storage" not in roles and {"hub", "node"} & set(roles):
        paths.append(f"/etc/systemd/system/{homes.mount_unit_name(settings.homes_dir)}")
    if {"hub", "storage"} & set(roles):  # the storage host runs restic for the homes too
        paths += [backup.SCRIPT, f"/etc/systemd/system/{backup.UNIT}.timer"]
    return paths


def config_paths(settings: Settings, roles: tuple[str, ...]) -> list[str]:
    """The configuration files of a host, by its roles (none of them under secrets/)."""
    paths = []
    if "hub" in roles:
        hub_dir = settings.hub_dir
        hub_files = (
            "compose.yml",
            "jupyterhub_config.py",
            "swarmhub_spawner.py",
            "server-firewall.nft",  # each user's server's firewall
            "hub.env",
        )
        paths += [f"{hub_dir}/{name}" for name in hub_files]
        paths += [DAEMON_JSON, REGISTRY_CONFIG_PATH]
        if settings.metrics == "on":
            # The alert rules and the scrapes; not alertmanager.yml (the webhook URL, a secret).
            paths += [metrics.PROMETHEUS_CONFIG, metrics.RULES]
    if "node" in roles:
        paths.append(DAEMON_JSON)
    if "proxy" in roles:
        paths.append(SITE_PATH)
    # journald's limits on every host; where its lines go (rsyslog's forwarding, no secret)
    paths.append(logs.JOURNALD_CONF)
    if settings.syslog_url:
        paths.append(logs.RSYSLOG_CONF)
    paths += homes_config_paths(settings, roles)
    return [mask.refuse_secrets_dir(path, settings.hub_dir) for path in dict.fromkeys(paths)]


def system_sections(settings: Settings, roles: tuple[str, ...]) -> dict[str, str]:
    """What `system.txt` holds: the host, then Docker, the swarm and nginx where they run."""
    sections = {
        "uname -a": "uname -a",
        "os-release": "cat /etc/os-release",
        "uptime": "uptime",
        "df -h": "df -h",
        "free -m": "free -m",
        "failed units": "systemctl --failed --no-pager",
        "errors in the journal": "journalctl -p err -n 200 --no-pager",
    }
    if "hub" in roles or "node" in roles:
        sections["docker version"] = "docker version"
        sections["docker info"] = "docker info"
        sections["docker ps -a"] = "docker ps -a"
    if "hub" in roles:
        sections["docker node ls"] = "docker node ls"
        sections["docker service ls"] = "docker service ls"
        sections["user servers' tasks"] = (
            f"docker service ps $(docker service ls -q --filter "
            f"name={commands.USER_SERVICE_PREFIX}) 2>/dev/null"
        )
        sections["docker compose ps"] = f"cd {settings.hub_dir} && docker compose ps -a"
    if "proxy" in roles:
        sections["nginx -t"] = "nginx -t"
        sections["nginx status"] = "systemctl status nginx --no-pager"
    return sections


def user_servers_logs_command(tail: int = USER_LOG_LINES) -> str:
    """The last lines of every user's server, each line naming its task and node."""
    return (
        f"for s in $(docker service ls --format '{{{{.Name}}}}' "
        f"--filter name={commands.USER_SERVICE_PREFIX}); do "
        f'docker service logs --tail {tail} --no-task-ids "$s" 2>&1; done'
    )


def log_file_name(label: str) -> str:
    return label if label.endswith(".log") else f"{label}.log"


def host_files(settings: Settings, host: Host) -> dict[str, str]:
    """A host's files for the archive (relative to hosts/<host>/), not masked yet."""
    files: dict[str, str] = {}
    script = commands.sectioned(system_sections(settings, host.roles))
    files["system.txt"] = readable_sections(run(host, script))
    for service in HOST_SERVICES:
        for source in log_sources(settings, service, LOG_LINES, follow=False):
            if source.host == host.name:
                files[f"logs/{log_file_name(source.label)}"] = run(host, source.command)
    if "hub" in host.roles:
        files["logs/user-servers.log"] = run(host, user_servers_logs_command())
    for path in config_paths(settings, host.roles):
        result = host.probe(f"cat {path}")
        files[f"config{path}"] = result.stdout if result.ok else f"(not readable: {path})\n"
    return files


def run(host: Host, command: str) -> str:
    """The output of a read-only command; a failure is written into the archive too."""
    try:
        result = host.run(command, check=False, timeout=COMMAND_TIMEOUT)
    except Exception as error:
        return f"(failed: {error})\n"
    return result.stdout + result.stderr


def readable_sections(output: str) -> str:
    """A sectioned script's output with ``== name ==`` headings instead of markers."""
    return output.replace(commands.SECTION_MARK, "== ").strip() + "\n"


def readme(settings: Settings, now: datetime, reached: dict[str, str]) -> str:
    lines = [
        "swarmhub diagnostic archive (invoke diagnose)",
        f"made: {now.isoformat()}",
        f"env file: {settings.source}",
        "",
        "hosts:",
        *(f"  {host}: {state}" for host, state in reached.items()),
        "",
        f"logs: the last {LOG_LINES} lines of each service, {USER_LOG_LINES} of each user's "
        "server.",
        "Values of keys containing TOKEN, SECRET, PASSWORD or KEY are masked as ***, and no",
        f"file of {settings.hub_dir}/secrets is in it. Read it before you send it.",
    ]
    return "\n".join(lines) + "\n"


def write_archive(path: Path, top: str, files: dict[str, str]) -> None:
    """A .tar.gz of ``files`` (masked text) under ``top/``, readable by its owner only."""
    mtime = time.time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, text in files.items():
            data = mask.mask_secrets(text).encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = int(mtime)
            info.mode = 0o600
            archive.addfile(info, io.BytesIO(data))


def key_figures(settings: Settings) -> str:
    """What `invoke metrics` shows (the key figures now and over the last hour, the alerts
    firing), or why it cannot be had: the archive is made all the same."""
    if settings.metrics != "on":
        return "METRICS=off in the env file: no Prometheus to ask\n"
    try:
        return figures.render(figures.gather(settings), list(settings.hosts)) + "\n"
    except Exception as error:  # Prometheus down is one more thing the archive tells
        return f"Prometheus on {settings.hub_host} did not answer: {error}\n"


def make_archive(settings: Settings, output: Path | None) -> tuple[Path, report.Report]:
    """Gather everything and write the archive; its path and the cluster's status."""
    check_local_files(settings)
    now = datetime.now(UTC)
    path = output or Path.cwd() / default_name(now)
    top = path.name.removesuffix(".tar.gz").removesuffix(".tgz")
    reached = reach(settings, settings.hosts)
    try:
        state = status.collect(settings, reached)
        per_host = in_parallel(
            reached.hosts, lambda name: host_files(settings, reached.hosts[name])
        )
    finally:
        reached.close()
    files = {
        "README.txt": readme(
            settings,
            now,
            {h: reached.errors.get(h, "reached") for h in settings.hosts},
        ),
        "status.json": report.to_json(state) + "\n",
        "status.txt": report.render_text(state) + "\n",
        "metrics.txt": key_figures(settings),
    }
    for name in settings.hosts:
        if name in reached.errors:
            files[f"hosts/{name}/unreachable.txt"] = reached.errors[name] + "\n"
            continue
        for relative, text in per_host[name].items():
            files[f"hosts/{name}/{relative}"] = text
    write_archive(path, top, files)
    return path, state
