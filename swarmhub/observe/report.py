"""The status of a cluster as rows: facts in, each row healthy or failing, text or JSON out.

Nothing here talks to a host: `swarmhub.observe.status` gathers the facts, these functions
judge them. A row with a ``problem`` is failing; a ``note`` only informs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from swarmhub.observe.parse import (
    Container,
    DiskUse,
    Memory,
    OomKills,
    ServiceTask,
    SwarmNode,
    Upgrade,
    UserServer,
    parse_backup_check,
)
from swarmhub.output import table
from swarmhub.sizes import format_size

# Thresholds of a failing row.
DISK_FULL_PERCENT = 90  # of /: Docker images, logs and the hub's database live there
MEMORY_FULL_PERCENT = 95  # not available to new programs (caches count as available)
CERT_MIN_DAYS = 14  # time to renew a certificate before browsers refuse it


@dataclass
class Row:
    name: str
    values: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    show: Callable[[Any], str] = str


@dataclass
class Section:
    key: str
    title: str
    name_header: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)


@dataclass
class Report:
    source: str  # the env file
    checked_at: datetime
    sections: list[Section]

    @property
    def problems(self) -> list[str]:
        return [row.problem for section in self.sections for row in section.rows if row.problem]

    @property
    def healthy(self) -> bool:
        return not self.problems


# --- showing values ---


def human_duration(seconds: float | None) -> str:
    """A duration in its two largest units: 45s, 12m 5s, 3h 12m, 5d 3h."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _size(count: int | None) -> str:
    return "-" if count is None else format_size(count)


def _percent(value: int | None) -> str:
    return "-" if value is None else f"{value}%"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{human_duration(seconds)} ago"


def _seconds_between(later: datetime, earlier: datetime | None) -> float | None:
    return None if earlier is None else (later - earlier).total_seconds()


# --- the sections ---


def hosts_section() -> Section:
    return Section(
        "hosts",
        "HOSTS",
        "HOST",
        [
            Column("roles", "ROLES", lambda roles: ",".join(roles)),
            Column("ssh", "SSH", _text),
            Column("docker", "DOCKER", _text),
            Column("disk_percent", "DISK /", _percent),
            Column("memory_percent", "MEM USED", _percent),
            Column("memory_total", "MEM TOTAL", _size),
        ],
    )


def host_row(
    name: str,
    roles: tuple[str, ...],
    *,
    unreachable: str = "",
    disk: DiskUse | None = None,
    memory: Memory | None = None,
    docker: str | None = None,
    errors: Iterable[str] = (),
) -> Row:
    """A host: reachable over SSH with sudo, Docker active where it should run, room on / and
    in memory. ``errors`` are probes whose output could not be read."""
    row = Row(
        name,
        {
            "roles": list(roles),
            "ssh": "unreachable" if unreachable else "ok",
            "docker": docker,
            "disk_percent": disk.percent if disk else None,
            "memory_percent": memory.used_percent if memory else None,
            "memory_total": memory.total_bytes if memory else None,
        },
    )
    problems = []
    if unreachable:
        problems.append(f"host {name} unreachable: {unreachable}")
    if docker is not None and docker != "active":
        problems.append(f"Docker on {name} is {docker}")
    if disk and disk.percent >= DISK_FULL_PERCENT:
        problems.append(f"disk / of {name} {disk.percent}% full")
    if memory and memory.used_percent >= MEMORY_FULL_PERCENT:
        problems.append(f"memory of {name} {memory.used_percent}% used")
    problems += [f"{name}: {error}" for error in errors]
    row.problem = "; ".join(problems)
    return row


def swarm_section() -> Section:
    return Section(
        "swarm",
        "SWARM NODES",
        "NODE",
        [
            Column("role", "ROLE"),
            Column("status", "STATUS"),
            Column("availability", "AVAILABILITY"),
            Column("servers", "SERVERS", _text),
        ],
    )


def swarm_rows(
    nodes: list[SwarmNode],
    hub: str,
    node_hosts: tuple[str, ...],
    tasks: dict[str, ServiceTask] | None = None,
) -> list[Row]:
    """The swarm's members: the hub Ready, each host of NODE_HOSTS Ready and Active (as
    `invoke health` wants them); members the env file does not list are only noted."""
    servers: dict[str, int] = {}
    for task in (tasks or {}).values():
        servers[task.node] = servers.get(task.node, 0) + 1
    by_name = {node.hostname: node for node in nodes}
    rows = []
    for name in [hub, *node_hosts, *sorted(set(by_name) - {hub, *node_hosts})]:
        node = by_name.get(name)
        role = "manager" if name == hub else "worker"
        if node is None:
            rows.append(
                Row(
                    name,
                    {"role": role, "status": "absent", "availability": "-", "servers": None},
                    problem=f"{name} is not in the swarm",
                )
            )
            continue
        row = Row(
            name,
            {
                "role": "manager" if node.manager else "worker",
                "status": node.status,
                "availability": node.availability,
                "servers": servers.get(name, 0) if name != hub else None,
            },
        )
        if name != hub and name not in node_hosts:
            # A leftover of nodes.remove or of another env file: worth a look, not a failure.
            row.note = "not in NODE_HOSTS of the env file" + (
                f" and {node.status.lower()}: invoke nodes.remove {name}" if not node.ready else ""
            )
        elif not node.ready:
            row.problem = f"swarm node {name} {node.status.lower()}"
        elif not node.active:
            # As `invoke health` counts it: a node of the course that takes no new servers.
            row.problem = (
                f"swarm node {name} {node.availability.lower()}: takes no new servers "
                f"(invoke nodes.activate {name})"
            )
        rows.append(row)
    return rows


def stack_section() -> Section:
    return Section(
        "stack",
        "HUB STACK",
        "NAME",
        [
            Column("state", "STATE"),
            Column("uptime_seconds", "UPTIME", human_duration),
            Column("restarts", "RESTARTS", _text),
        ],
    )


def container_row(container: Container, now: datetime) -> Row:
    """A container of the hub stack: running is healthy, anything else fails."""
    running = container.state == "running"
    row = Row(
        container.name,
        {
            "state": container.state,
            "uptime_seconds": _seconds_between(now, container.started_at) if running else None,
            "restarts": container.restarts,
        },
    )
    if not running:
        detail = f" (exit {container.exit_code})" if container.state == "exited" else ""
        row.problem = f"container {container.name} {container.state}{detail}"
    elif container.restarts:
        row.note = f"restarted {container.restarts} time(s) by Docker"
    return row


def unit_row(name: str, state: str) -> Row:
    """A systemd service (the registry on the hub)."""
    row = Row(name, {"state": state, "uptime_seconds": None, "restarts": None})
    if state != "active":
        row.problem = f"service {name} {state}"
    return row


def hub_api_row(code: int | None, error: str = "", version: str = "") -> Row:
    """The hub's REST API through chp on the hub (GET /hub/api/), and the JupyterHub version
    it reports."""
    state = f"HTTP {code}" if code is not None else "no answer"
    values = {"state": state, "uptime_seconds": None, "restarts": None, "version": version}
    row = Row("hub api", values, note=f"JupyterHub {version}" if version else "")
    if code != 200:
        row.problem = f"hub API: {state}" + (f" ({error})" if error else "")
    return row


def backup_row(text: str) -> Row:
    """The backups (the backup script's check-repo on the hub): whether the repository
    answers, and the age of the last snapshot."""
    ok, line = parse_backup_check(text)
    state = {True: "ok", False: "failing", None: "unknown"}[ok]
    row = Row("backups", {"state": state, "uptime_seconds": None, "restarts": None}, note=line)
    if ok is False:
        row.problem = f"backups: {line}"
    return row


def warmup_row(text: str, now: datetime) -> Row | None:
    """A class warm-up in progress (class.warmup's state file on the hub, there while it
    runs), until its lab has begun; None when there is none."""
    try:
        state = json.loads(text)
        lab = datetime.fromisoformat(state["lab"])
    except (ValueError, KeyError, TypeError):
        return None
    if lab <= now:
        return None  # left behind by a warm-up cut short: its lab has begun
    who = f"group {state['group']}" if state.get("group") else ""
    listed = int(state.get("students") or 0)
    if listed:
        who = f"{who} and {listed} listed" if who else f"{listed} students"
    minutes = max(0, int((lab - now).total_seconds() // 60))
    return Row(
        "class.warmup",
        {"state": "running", "uptime_seconds": None, "restarts": None},
        note=f"starting {who} for the lab at {lab.strftime('%H:%M UTC')} (in {minutes} min)",
    )


def flag_old_servers(rows: list[Row], images: dict[str, str], upgrade: Upgrade | None) -> None:
    """Note the servers started before the last major upgrade (still on its old user image):
    they work, and get the new version when they start again."""
    if upgrade is None:
        return
    for row in rows:
        if images.get(row.values.get("service", "")) == upgrade.user_image_before:
            flag = (
                f"JupyterHub {upgrade.before} server, started before the upgrade to "
                f"{upgrade.after}: it gets {upgrade.after} when it starts again"
            )
            row.note = f"{row.note}; {flag}" if row.note else flag


def proxy_section() -> Section:
    return Section(
        "proxy",
        "PROXY",
        "HOST",
        [
            Column("nginx", "NGINX", _text),
            Column("cert_expires", "CERT EXPIRES", _text),
            Column("cert_days_left", "DAYS LEFT", _text),
        ],
    )


def proxy_row(
    name: str, nginx: str | None, cert_expires: datetime | None, now: datetime, cert_error: str = ""
) -> Row:
    """nginx active, and its certificate valid for at least `CERT_MIN_DAYS` more days."""
    days = None if cert_expires is None else int((cert_expires - now).total_seconds() // 86400)
    row = Row(
        name,
        {
            "nginx": nginx,
            "cert_expires": cert_expires.date().isoformat() if cert_expires else None,
            "cert_days_left": days,
        },
    )
    problems = []
    if nginx != "active":
        problems.append(f"nginx on {name} {nginx or 'unknown'}")
    if cert_error:
        problems.append(f"certificate on {name}: {cert_error}")
    elif days is not None and days < 0:
        problems.append(f"certificate on {name} expired {-days} days ago")
    elif days is not None and days < CERT_MIN_DAYS:
        problems.append(f"certificate on {name} expires in {days} days")
    row.problem = "; ".join(problems)
    return row


def images_section() -> Section:
    return Section(
        "images",
        "IMAGES OFFERED",
        "PROFILES",
        [
            Column("image", "IMAGE"),
            Column("nodes", "ON NODES", _text),
        ],
    )


def short_image(ref: str) -> str:
    """``host:port/swarmhub/user-course:tag`` as ``user-course:tag``."""
    return ref.rsplit("/", 1)[-1]


def image_rows(
    offered: dict[str, list[str]], held: dict[str, set[str] | None], node_hosts: tuple[str, ...]
) -> list[Row]:
    """Each image the hub offers (``offered``: ref -> its profiles) and the nodes that hold
    it (``held``: node -> its images, None when unread). A node lacking one fails: a student
    placed there would wait for a pull (images.distribute pulls it)."""
    rows = []
    for ref, profiles in offered.items():
        readable = [n for n in node_hosts if held.get(n) is not None]
        holding = [n for n in readable if ref in (held[n] or set())]
        row = Row(
            ",".join(profiles) or "(base)",
            {"image": short_image(ref), "ref": ref, "nodes": f"{len(holding)}/{len(node_hosts)}"},
        )
        missing = [n for n in readable if n not in holding]
        if missing:
            row.problem = (
                f"{', '.join(missing)} lack{'s' if len(missing) == 1 else ''} {short_image(ref)}: "
                "run `invoke images.distribute`"
            )
        unread = [n for n in node_hosts if n not in readable]
        if unread:
            row.note = f"images of {', '.join(unread)} unknown"
        rows.append(row)
    return rows


def flag_image_servers(rows: list[Row], images: dict[str, str], offered: set[str]) -> None:
    """Each server's image in its row; a note on those whose image the hub no longer offers
    (a course package changed, a rollback): they keep it until they start again."""
    for row in rows:
        image = images.get(row.values.get("service", ""))
        if not image:
            continue
        row.values["image"] = short_image(image)
        if offered and image not in offered:
            flag = "its image is no longer offered: a new start gets the current one"
            row.note = f"{row.note}; {flag}" if row.note else flag


def servers_section() -> Section:
    return Section(
        "servers",
        "USER SERVERS",
        "USER",
        [
            Column("node", "NODE", _text),
            Column("state", "STATE"),
            Column("age_seconds", "AGE", human_duration),
            Column("idle_seconds", "LAST ACTIVITY", _ago),
            Column("oom_kills", "OOM KILLS", lambda n: str(n) if n else "-"),
            Column("image", "IMAGE", _text),
        ],
    )


def oom_note(kills: OomKills, now: datetime) -> str:
    """What an OOM kill means, in the words a user's "kernel died" needs."""
    times = "once" if kills.count == 1 else f"{kills.count} times"
    last = _ago(_seconds_between(now, kills.last))
    return f"OOM: killed {times} for going over its memory limit (last {last}): 'kernel died'"


def server_rows(
    servers: list[UserServer],
    tasks: dict[str, ServiceTask],
    now: datetime,
    service_of: Callable[[str], str],
    user_of: Callable[[str], str],
    oom: dict[str, OomKills] | None = None,
) -> list[Row]:
    """Users' servers as the hub sees them, placed by the swarm.

    A server the hub counts as ready without a running task fails (its user gets an error
    page); a service the hub does not know is noted (it may be stopping). OOM kills since the
    server started are counted and explained in its notes.
    """
    oom = oom or {}
    rows = []
    seen = set()
    for server in sorted(servers, key=lambda s: s.user):
        service = service_of(server.user)
        seen.add(service)
        task = tasks.get(service)
        row = Row(
            server.user,
            {
                "node": task.node if task else None,
                "state": f"pending {server.pending}" if server.pending else "ready",
                "age_seconds": _seconds_between(now, server.started),
                "idle_seconds": _seconds_between(now, server.last_activity),
                "oom_kills": 0,
                "service": service,
            },
        )
        kills = oom.get(service)
        if kills and (server.started is None or kills.last >= server.started):
            row.values["oom_kills"] = kills.count
            row.note = oom_note(kills, now)
        if server.ready and task is None:
            row.problem = f"server of {server.user} has no running task in the swarm"
        rows.append(row)
    for service in sorted(set(tasks) - seen):
        task = tasks[service]
        rows.append(
            Row(
                user_of(service),
                {
                    "node": task.node,
                    "state": "unknown to hub",
                    "age_seconds": None,
                    "idle_seconds": None,
                    "oom_kills": 0,
                    "service": service,
                },
                note=f"swarm service {service} has no server in the hub (stopping?)",
            )
        )
    return rows


def unknown_row(what: str, why: str) -> Row:
    """A section that could not be read at all (its host unreachable, say)."""
    return Row(what, {}, problem=why)


# --- rendering ---


def render_text(report: Report) -> str:
    """Tables, one per section, a ``!`` before each failing row; the last line says healthy or
    names what is wrong."""
    blocks = []
    for section in report.sections:
        headers = ["", section.name_header, *(c.header for c in section.columns), "NOTES"]
        rows = []
        for row in section.rows:
            cells = [
                c.show(row.values.get(c.key)) if c.key in row.values else "-"
                for c in section.columns
            ]
            rows.append(["!" if row.problem else "", row.name, *cells, row.problem or row.note])
        if not rows:
            rows.append(["", "(none)", *("" for _ in section.columns), ""])
        blocks.append(f"{section.title}\n{table(headers, rows)}")
    blocks.append(summary_line(report))
    return "\n\n".join(blocks)


def summary_line(report: Report) -> str:
    """``healthy: …`` with what was counted, or ``unhealthy: …`` naming every problem."""
    if not report.healthy:
        problems = report.problems
        return f"unhealthy ({_count(len(problems), 'problem')}): " + "; ".join(problems)
    counts = {section.key: len(section.rows) for section in report.sections}
    return (
        f"healthy: {_count(counts.get('hosts', 0), 'host')} up, "
        f"{_count(counts.get('swarm', 0), 'swarm node')} ready, hub stack running, proxy ok, "
        f"{_count(counts.get('servers', 0), 'user server')}"
    )


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'s' * (number != 1)}"


def to_json(report: Report) -> str:
    """One JSON document: healthy, the problems, and each section's rows with raw values
    (bytes, seconds, days) for scripts."""
    document = {
        "env": report.source,
        "checked_at": report.checked_at.isoformat(),
        "healthy": report.healthy,
        "problems": report.problems,
        "summary": summary_line(report),
    }
    for section in report.sections:
        document[section.key] = [
            {
                "name": row.name,
                "ok": row.ok,
                **row.values,
                "problem": row.problem or None,
                "note": row.note or None,
            }
            for row in section.rows
        ]
    return json.dumps(document, indent=2, default=str)
