"""The class warm-up (`invoke class.warmup`): what is checked here, before the hub is asked.

Pure functions: the times and the students as typed, and the command that runs the hub-side
script (swarmhub/hubside/class_warmup.py) in the hub's container. The hub checks again what
only it knows (its clock, its groups) before it changes anything.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from swarmhub.errors import SwarmhubError
from swarmhub.hubside import WARMUP_SCRIPT as SCRIPT

# JupyterHub takes a user's activity at most 59 minutes ahead of its clock.
MAX_AHEAD = timedelta(minutes=59)
STATE_FILE = "warmup.json"  # in HUB_DIR: what `invoke status` shows while a warm-up runs
RELATIVE = re.compile(r"\+\s*(\d+)\s*(s|m|min|h)?")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


@dataclass(frozen=True)
class Warmup:
    """What to warm up, checked: times in UTC."""

    students: tuple[str, ...]
    group: str
    lab: datetime
    at: datetime | None
    profile: str = ""
    timeout: int = 900


def parse_time(text: str, option: str, now: datetime) -> datetime:
    """A time as typed: ``14:30`` (today, this machine's time zone), an ISO 8601 date and
    time (``2026-12-02T14:30``, a zone allowed), or ``+20m`` / ``+90s`` / ``+1h`` from now."""
    typed = text.strip()
    relative = RELATIVE.fullmatch(typed)
    if relative:
        unit = {"s": 1, None: 60, "m": 60, "min": 60, "h": 3600}[relative.group(2)]
        return now + timedelta(seconds=int(relative.group(1)) * unit)
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", typed):
            clock = datetime.strptime(typed if typed.count(":") == 2 else typed + ":00", "%H:%M:%S")
            local = now.astimezone()
            moment = local.replace(
                hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=0
            )
        else:
            moment = datetime.fromisoformat(typed)
            if moment.tzinfo is None:
                moment = moment.astimezone()  # this machine's zone, as for 14:30
    except ValueError:
        raise SwarmhubError(
            f"{option} {text!r} is not a time: give e.g. {option} 14:30, "
            f"{option} 2026-12-02T14:30 or {option} +20m"
        ) from None
    return moment.astimezone(UTC)


def parse_students(text: str) -> tuple[str, ...]:
    """Students as typed: names separated by commas or spaces, or ``@FILE`` (one a line,
    ``#`` comments)."""
    typed = text.strip()
    if typed.startswith("@"):
        path = Path(typed[1:])
        try:
            content = path.read_text(encoding="utf-8")
        except OSError as error:
            raise SwarmhubError(
                f"--students {typed}: cannot read {path}: {error.strerror}"
            ) from None
        words = [line.split("#", 1)[0].strip() for line in content.splitlines()]
    else:
        words = re.split(r"[,\s]+", typed)
    names = [word for word in words if word]
    for name in names:
        if not NAME.fullmatch(name):
            raise SwarmhubError(
                f"--students: {name!r} is not a user name (letters, digits and . _ @ + -)"
            )
    return tuple(dict.fromkeys(names))


def check(
    students: str,
    group: str,
    lab: str,
    at: str,
    now: datetime,
    profile: str = "",
    timeout: str = "900",
) -> Warmup:
    """The warm-up asked for, or one line saying what is wrong (nothing asked of the hub)."""
    names = parse_students(students) if students.strip() else ()
    group = group.strip()
    if not names and not group:
        raise SwarmhubError("no students: give --students NAME,NAME (or @FILE) or --group NAME")
    if group and not NAME.fullmatch(group):
        raise SwarmhubError(f"--group {group!r} is not a group name")
    if not lab.strip():
        raise SwarmhubError("give the lab's start: --lab 14:30 (or +20m, or a date and time)")
    lab_time = parse_time(lab, "--lab", now)
    at_time = parse_time(at, "--at", now) if at.strip() else None
    if lab_time <= now:
        raise SwarmhubError(
            f"--lab {lab}: {_shown(lab_time)} is past: give the start of a lab to come"
        )
    if at_time is not None and at_time < now - timedelta(seconds=5):
        raise SwarmhubError(f"--at {at}: {_shown(at_time)} is past: leave --at out to start now")
    start = max(at_time or now, now)
    if at_time is not None and at_time >= lab_time:
        raise SwarmhubError(f"--at {at} is not before the lab ({_shown(lab_time)})")
    if lab_time - start > MAX_AHEAD:
        minutes = int((lab_time - start).total_seconds() // 60)
        raise SwarmhubError(
            f"--lab {lab}: {minutes} minutes after the warm-up starts, at most 59 (the hub takes "
            f"a server's activity at most 59 minutes ahead, which is what spares it from the "
            f"culler): give --at {_shown(lab_time - MAX_AHEAD)} or later"
        )
    if not re.fullmatch(r"[0-9]+", timeout.strip()) or int(timeout) < 1:
        raise SwarmhubError(f"--timeout {timeout!r}: give the seconds to wait, e.g. 900")
    return Warmup(names, group, lab_time, at_time, profile.strip(), int(timeout))


def hub_config(warmup: Warmup) -> dict[str, object]:
    """The hub-side script's settings (its one argument)."""
    return {
        "students": list(warmup.students),
        "group": warmup.group,
        "lab": warmup.lab.isoformat(),
        "at": warmup.at.isoformat() if warmup.at else "",
        "profile": warmup.profile,
        "timeout": warmup.timeout,
    }


def hub_command(warmup: Warmup, hub_dir: str) -> str:
    """The command run on the hub (as root): the state file that `status` reads, the script
    in the hub's container, then the state file gone. No secret on it: the token is in the
    container's environment."""
    script = base64.b64encode(SCRIPT.read_bytes()).decode()
    config = json.dumps(hub_config(warmup), separators=(",", ":"))
    state = shlex.quote(f"{hub_dir}/{STATE_FILE}")
    record = json.dumps(
        {"lab": warmup.lab.isoformat(), "students": len(warmup.students), "group": warmup.group}
    )
    return (
        f"printf '%s\\n' {shlex.quote(record)} > {state}; "
        f"printf %s {script} | base64 -d | "
        f"docker exec -i jupyterhub python3 -u - {shlex.quote(config)}; status=$?; "
        f"rm -f {state}; exit $status"
    )


def _shown(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
