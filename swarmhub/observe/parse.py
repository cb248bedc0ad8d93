"""Reading what the hosts answer: text in, facts out (nothing runs here).

A parser raises `ParseError` on output it does not recognise (often an error message of the
command instead of its output); the status shows that text as the row's problem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from swarmhub.observe.commands import SECTION_MARK, USER_SERVICE_PREFIX


class ParseError(ValueError):
    """The output is not what the command prints when it works."""


def first_line(text: str, limit: int = 160) -> str:
    """The first non-empty line of ``text``, shortened: what a row shows of an error."""
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return "no output"


def split_sections(output: str) -> dict[str, str]:
    """The output of a `commands.sectioned` script: section name -> its output."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(SECTION_MARK):
            current = sections.setdefault(line[len(SECTION_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 time as Docker (nanoseconds) and JupyterHub (microseconds) write them, in
    UTC; None for empty, null and Docker's zero time (a container never started)."""
    text = (text or "").strip()
    if not text or text == "null" or text.startswith("0001-01-01"):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", text)
    if not match:
        raise ParseError(f"not a time: {text!r}")
    base, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    moment = datetime.fromisoformat(f"{base}.{micro}{'+00:00' if zone in (None, 'Z') else zone}")
    return moment.astimezone(UTC)


def parse_epoch(text: str) -> datetime:
    """``date -u +%s``: the host's clock."""
    try:
        return datetime.fromtimestamp(int(text.strip()), UTC)
    except ValueError:
        raise ParseError(f"not a time: {first_line(text)}") from None


# --- hosts ---


@dataclass(frozen=True)
class DiskUse:
    size_kib: int
    used_kib: int
    percent: int


def parse_df(text: str) -> DiskUse:
    """``df -P /``: a header, then one line (``-P`` keeps a long device name on it)."""
    lines = [line for line in text.splitlines() if line.strip()]
    fields = lines[-1].split() if len(lines) >= 2 else []
    if len(fields) < 6 or not fields[4].endswith("%") or not fields[1].isdigit():
        raise ParseError(f"df: {first_line(text)}")
    return DiskUse(size_kib=int(fields[1]), used_kib=int(fields[2]), percent=int(fields[4][:-1]))


@dataclass(frozen=True)
class Memory:
    total_bytes: int
    available_bytes: int

    @property
    def used_percent(self) -> int:
        """Memory in use: what is not available to new programs (caches count as available)."""
        if not self.total_bytes:
            return 0
        return round(100 * (self.total_bytes - self.available_bytes) / self.total_bytes)


def parse_meminfo(text: str) -> Memory:
    """MemTotal and MemAvailable lines of /proc/meminfo (in kB, which are KiB)."""
    values = dict(re.findall(r"^(MemTotal|MemAvailable):\s+(\d+)\s*kB", text, re.M))
    if set(values) != {"MemTotal", "MemAvailable"}:
        raise ParseError(f"meminfo: {first_line(text)}")
    return Memory(int(values["MemTotal"]) * 1024, int(values["MemAvailable"]) * 1024)


# --- the swarm ---


@dataclass(frozen=True)
class SwarmNode:
    hostname: str
    status: str  # Ready, Down, Unknown, Disconnected
    availability: str  # Active, Pause, Drain
    manager: str  # Leader, Reachable, Unreachable, or "" for a worker

    @property
    def ready(self) -> bool:
        return self.status == "Ready"

    @property
    def active(self) -> bool:
        return self.availability == "Active"


def parse_node_ls(text: str) -> list[SwarmNode]:
    """``docker node ls --format`` with `commands.NODE_FORMAT`, one node per line.

    A host that left and joined again is listed twice (its old entry Down): the Ready entry
    wins, so that a stale entry does not mark a healthy node as down.
    """
    nodes: dict[str, SwarmNode] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 4:
            raise ParseError(f"docker node ls: {first_line(text)}")
        node = SwarmNode(*(field.strip() for field in fields))
        if node.hostname not in nodes or (node.ready and not nodes[node.hostname].ready):
            nodes[node.hostname] = node
    return list(nodes.values())


@dataclass(frozen=True)
class Container:
    name: str
    state: str  # running, exited, restarting, paused, created, dead; "missing" if none
    started_at: datetime | None
    restarts: int
    exit_code: int


def parse_containers(text: str, wanted: tuple[str, ...]) -> list[Container]:
    """``docker inspect --format`` with `commands.CONTAINER_FORMAT`; a container that does not
    exist (Docker says "No such object") comes back with the state ``missing``."""
    found: dict[str, Container] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != 5:
            if "no such object" in line.lower() or not line.strip():
                continue
            raise ParseError(f"docker inspect: {first_line(line)}")
        name, state, started, restarts, exit_code = fields
        found[name.lstrip("/")] = Container(
            name=name.lstrip("/"),
            state=state,
            started_at=parse_timestamp(started),
            restarts=int(restarts),
            exit_code=int(exit_code),
        )
    return [found.get(name) or Container(name, "missing", None, 0, 0) for name in wanted]


@dataclass(frozen=True)
class ServiceTask:
    service: str  # jupyter-obs-2dalice
    node: str
    state: str  # "Running 5 minutes ago"


def parse_service_tasks(text: str) -> dict[str, ServiceTask]:
    """``docker service ps --format`` with `commands.TASK_FORMAT`: service -> its running task."""
    tasks: dict[str, ServiceTask] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 3 or not fields[0].startswith(USER_SERVICE_PREFIX):
            raise ParseError(f"docker service ps: {first_line(line)}")
        name, node, state = fields
        service = name.rsplit(".", 1)[0]  # jupyter-obs-2dalice.1 -> jupyter-obs-2dalice
        tasks[service] = ServiceTask(service, node, state)
    return tasks


@dataclass(frozen=True)
class OomKills:
    """The OOM kills Docker saw in a user's server: how many, and the last one's time."""

    count: int
    last: datetime


def parse_oom_events(text: str) -> dict[str, OomKills]:
    """`commands.oom_events_command` output (``UNIX-TIME SERVICE``): service -> its OOM kills.

    Containers that are not users' servers (no service, or another one) are left out."""
    kills: dict[str, OomKills] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2 or not fields[1].startswith(USER_SERVICE_PREFIX):
            continue
        if not fields[0].isdigit():
            raise ParseError(f"docker events: {first_line(line)}")
        when = datetime.fromtimestamp(int(fields[0]), UTC)
        before = kills.get(fields[1])
        kills[fields[1]] = OomKills(
            (before.count if before else 0) + 1, max(when, before.last) if before else when
        )
    return kills


def merge_oom_kills(*found: dict[str, OomKills]) -> dict[str, OomKills]:
    """The OOM kills seen by several engines (a server may have moved between nodes)."""
    merged: dict[str, OomKills] = {}
    for kills in found:
        for service, k in kills.items():
            before = merged.get(service)
            merged[service] = (
                OomKills(before.count + k.count, max(before.last, k.last)) if before else k
            )
    return merged


# --- the hub's API ---


def split_http_code(output: str) -> tuple[str, int | None]:
    """Output of `commands.hub_api_command`: the body, and the HTTP code curl printed last (None
    when curl got no answer: then the body is curl's error)."""
    body, _, code = output.rstrip("\n").rpartition("\n")
    code = code.strip()
    if not code.isdigit() or code == "000":
        return (output.strip(), None)
    return (body, int(code))


@dataclass(frozen=True)
class UserServer:
    user: str
    ready: bool
    pending: str  # "spawn", "stop", or ""
    started: datetime | None
    last_activity: datetime | None


def parse_users_page(body: str) -> tuple[list[UserServer], int | None]:
    """A page of ``GET /hub/api/users?state=active``: each user's default server, and the
    offset of the next page (None on the last one). A bare list (no pagination) is a whole."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise ParseError(f"hub API: {first_line(body)}") from None
    users = data.get("items", []) if isinstance(data, dict) else data
    pagination = data.get("_pagination", {}) if isinstance(data, dict) else {}
    servers = []
    for user in users:
        server = (user.get("servers") or {}).get("")
        if server is None:
            continue  # only named servers, which swarmhub does not enable
        servers.append(
            UserServer(
                user=user["name"],
                ready=bool(server.get("ready")),
                pending=server.get("pending") or "",
                started=parse_timestamp(server.get("started") or ""),
                last_activity=parse_timestamp(
                    server.get("last_activity") or user.get("last_activity") or ""
                ),
            )
        )
    following = (pagination or {}).get("next")
    return servers, (int(following["offset"]) if following else None)


# --- the proxy ---


def parse_cert_enddate(text: str) -> datetime:
    """``openssl x509 -noout -enddate``: notAfter=Feb 27 22:20:45 2029 GMT."""
    match = re.search(r"notAfter=(.+)", text)
    if not match:
        raise ParseError(f"certificate: {first_line(text)}")
    try:
        moment = datetime.strptime(match.group(1).strip(), "%b %d %H:%M:%S %Y %Z")
    except ValueError:
        raise ParseError(f"certificate: {first_line(text)}") from None
    return moment.replace(tzinfo=UTC)


def parse_hub_version(body: str) -> str:
    """The version of ``GET /hub/api/`` (``{"version": "6.1.1"}``); '' when unreadable."""
    try:
        found = json.loads(body)
    except ValueError:
        return ""
    return str(found.get("version", "")) if isinstance(found, dict) else ""


def parse_service_images(text: str) -> dict[str, str]:
    """``docker service ls --format '{{.Name}}|{{.Image}}'``: service -> image, no digest."""
    found = {}
    for line in text.splitlines():
        name, _, image = line.strip().partition("|")
        if name.startswith(USER_SERVICE_PREFIX) and image:
            found[name] = image.split("@", 1)[0]
    return found


@dataclass(frozen=True)
class Upgrade:
    """What the last hub.upgrade did (HUB_DIR/upgrade/last.json on the hub)."""

    before: str  # "5.5.4"
    after: str  # "6.1.1"
    user_image_before: str


def parse_upgrade(text: str) -> Upgrade | None:
    """The last upgrade, or None (never upgraded, or unreadable)."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    if not isinstance(found, dict) or not found.get("user_image_before"):
        return None
    return Upgrade(str(found.get("from", "")), str(found.get("to", "")), found["user_image_before"])


def parse_backup_check(text: str) -> tuple[bool | None, str]:
    """The backup script's check-repo line: (True, 'REPO answers; last snapshot …'), (False,
    why the repository does not answer), or (None, why nothing is known: not set up)."""
    line = first_line(text.strip().splitlines()[-1], 240) if text.strip() else ""
    if not line:
        return None, ""
    if line == "not set up":
        return None, "not set up: run invoke backup.setup"
    if line.startswith("ok: "):
        return True, line.removeprefix("ok: ")
    return False, line.removeprefix("error: ")
