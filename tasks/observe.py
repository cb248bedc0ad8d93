"""status, logs, health, diagnose: looking into a running deployment, changing nothing."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, task
from invoke.exceptions import Exit

from swarmhub import settings as env_settings
from swarmhub.course import course_line
from swarmhub.observe import diagnose as diagnose_archive
from swarmhub.observe import figures, report, sources
from swarmhub.observe import health as health_probe
from swarmhub.observe import logs as log_streams
from swarmhub.observe import status as cluster_status


@task(help={"json": "print one JSON document (for scripts) instead of tables"})
def status(c: Context, json: bool = False) -> None:
    """Show the cluster in one view: hosts, swarm, hub stack, proxy, user servers.

    Exits 1 when anything fails: those rows are marked with ``!`` and the last line names
    every problem. An unreachable host is such a row. With --json, the same as one document.
    """
    loaded = env_settings.load()
    state = cluster_status.gather(loaded)
    if not json and course_line(loaded):
        print(course_line(loaded), end="\n\n")
    print(report.to_json(state) if json else report.render_text(state), flush=True)
    if not state.healthy:
        raise Exit(code=1)


@task(
    positional=["service"],
    help={
        "service": f"one of {sources.valid_services()}",
        "tail": "lines from the end of each log (default 100)",
        "follow": "keep printing new lines until Ctrl-C",
    },
)
def logs(c: Context, service: str, tail: str = "100", follow: bool = False) -> None:
    """Print a service's logs from wherever it runs (--follow: stream them until Ctrl-C).

    Services: hub, cull, chp (the hub stack's containers), proxy (nginx's journal, access and
    error logs), registry, docker (the daemon on the hub and every node), agent (log shipping
    and alerts, every host), user:NAME (NAME's server, on its node, and its OOM kills).
    Lines of several hosts or files start with [host] or [host file].
    """
    settings = env_settings.load()
    chosen = sources.log_sources(settings, service, sources.parse_tail(tail), follow)
    log_streams.show_logs(settings, chosen, follow)


@task
def health(c: Context) -> None:
    """Check in a few seconds that students can work: one line, exit 0 or 1 (for cron).

    HTTPS through the proxy to the hub's API, the API on the hub itself, and every node of
    NODE_HOSTS Ready and Active in the swarm.
    """
    healthy, line = health_probe.check(env_settings.load())
    print(line, flush=True)
    if not healthy:
        raise Exit(code=1)


@task
def metrics(c: Context) -> None:
    """Show the key figures from Prometheus, now and over the last hour, and the alerts firing.

    Running servers, active users, server starts and failures, start time p95, OOM kills, the
    last backup's age; memory, CPU and disk of every host; targets down. Prometheus is asked
    on the hub over SSH (it listens on the hub's loopback only). Exits 1 while an alert fires
    (each one named with the first command to run) or when Prometheus does not answer.
    """
    settings = env_settings.load()
    found = figures.gather(settings)
    print(figures.render(found, list(settings.hosts)), flush=True)
    if found.error or found.firing:
        raise Exit(code=1)


@task(help={"output": "where to write the archive (default diagnose-<UTC time>.tar.gz here)"})
def diagnose(c: Context, output: str | None = None) -> None:
    """Write one .tar.gz for a bug report: status, logs and configs of every host, secrets masked.

    The archive holds the status (JSON and tables), the last 500 lines of every service's
    logs on every host, and the configuration files swarmhub writes. Nothing is read from the
    hub's secrets directory, and every value of a key like TOKEN, SECRET, PASSWORD or KEY is
    written as ***. Read it before you send it.
    """
    path, state = diagnose_archive.make_archive(
        env_settings.load(), Path(output).expanduser() if output else None
    )
    print(path, flush=True)
    print(report.summary_line(state), flush=True)
