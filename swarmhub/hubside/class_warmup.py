"""The class warm-up, run inside the hub's container (`invoke class.warmup` sends it there).

Not placed beside the config by hub.deploy: `class.warmup` sends this file on the standard
input of ``docker exec jupyterhub python3 -`` each time, with its settings as the one
argument (JSON). It imports nothing from swarmhub (the hub's image has the standard library
only, for this) and talks to the hub's REST API on the container's own loopback with the
class-warmup service's token, WARMUP_API_TOKEN of the hub's environment: the token never
leaves the hub and is never on a command line.

What it does, in order, and nothing changed before the checks passed:
1. the students: those listed and the members of the group named (a group the hub does not
   know, or no student at all: one line, exit 2);
2. the lab's start checked against the hub's own clock (no later than 59 minutes ahead of
   the warm-up's start, JupyterHub's limit for an activity timestamp);
3. waits until the start time, if one was given; the students the hub does not know yet are
   created (POST /users), then each student's server is asked for (POST
   /users/NAME/server): the spawner's own path, its queue and its decisions;
4. as each server is ready, its last activity is posted as the lab's start (a time ahead):
   the idle culler, which culls a server idle for CULL_TIMEOUT, spares it until then plus
   CULL_TIMEOUT, with nothing kept running to fake activity;
5. one line a change in the count of ready servers, then the last line: all ready, or which
   are not (exit 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

API = "http://127.0.0.1:8081/hub/api"
PAGINATION = "application/jupyterhub-pagination+json"
# JupyterHub rejects an activity timestamp more than 59 minutes ahead of its clock
# (apihandlers/users.py, _parse_timestamp).
MAX_AHEAD = timedelta(minutes=59)
POLL_EVERY = 1.0  # seconds between looks at the servers
# Asking for a server waits for the hub's slow_spawn_timeout (3 s here) before its 202:
# the requests go in parallel, the queue behind them orders the starts.
REQUESTS_AT_ONCE = 32


class Refused(Exception):
    """Bad input or a hub that cannot do it: one line, nothing changed."""


def call(method: str, path: str, body: object = None, timeout: float = 30) -> tuple[int, Any]:
    """(HTTP status, JSON body or None) of one request to the hub's API."""
    token = os.environ.get("WARMUP_API_TOKEN", "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{API}{path}", data=data, method=method)
    request.add_header("Authorization", f"token {token}")
    request.add_header("Accept", PAGINATION)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, None


def message(body: Any) -> str:
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def students_of(config: dict[str, Any]) -> list[str]:
    """The students listed and those of the group, each once, in order."""
    names = list(config.get("students") or [])
    group = config.get("group") or ""
    if group:
        status, body = call("GET", f"/groups/{urllib.parse.quote(group)}")
        if status == 404:
            raise Refused(f"the hub has no group {group!r}: nothing started")
        if status != 200:
            raise Refused(
                f"the hub's API answered {status} for the group {group!r}: nothing "
                f"started ({message(body)})"
            )
        names += list(body.get("users") or [])
    names = list(dict.fromkeys(names))
    if not names:
        where = f"the group {group!r} has no member" if group else "no student given"
        raise Refused(f"{where}: nothing started")
    return names


def ready_servers(names: set[str]) -> dict[str, str]:
    """Of ``names``, each user with a server: 'ready' or 'pending'."""
    found: dict[str, str] = {}
    offset = 0
    while True:
        status, body = call("GET", f"/users?state=active&offset={offset}&limit=200")
        if status != 200:
            raise Refused(f"the hub's API answered {status} for the users: {message(body)}")
        for user in body.get("items", []):
            server = (user.get("servers") or {}).get("")
            if user["name"] in names and server:
                found[user["name"]] = "ready" if server.get("ready") else "pending"
        following = (body.get("_pagination") or {}).get("next")
        if not following:
            return found
        offset = following["offset"]


def spare(name: str, lab: str) -> int:
    """The server's and the user's last activity: the lab's start."""
    status, _ = call(
        "POST",
        f"/users/{urllib.parse.quote(name)}/activity",
        {"last_activity": lab, "servers": {"": {"last_activity": lab}}},
    )
    return status


def ask_server(name: str, profile: str) -> tuple[str, int, str]:
    status, body = call(
        "POST",
        f"/users/{urllib.parse.quote(name)}/server",
        {"profile": profile} if profile else None,
        timeout=60,
    )
    return name, status, message(body)


def now() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S UTC")


def warm_up(config: dict[str, Any]) -> int:
    if not os.environ.get("WARMUP_API_TOKEN"):
        raise Refused("the hub has no warm-up token (WARMUP_API_TOKEN): run `invoke hub.deploy`")
    lab = datetime.fromisoformat(config["lab"])
    at = datetime.fromisoformat(config["at"]) if config.get("at") else now()
    start = max(at, now())
    if lab <= now():
        raise Refused(f"the lab's start {stamp(lab)} is past by the hub's clock: nothing started")
    if lab - start > MAX_AHEAD:
        raise Refused(
            f"the lab starts {int((lab - start).total_seconds() // 60)} minutes after the warm-up "
            f"(by the hub's clock): at most 59 (JupyterHub's limit on an activity time ahead); "
            f"give --at no earlier than {stamp(lab - MAX_AHEAD)}"
        )
    names = students_of(config)
    print(f"warm-up: {len(names)} students for the lab at {stamp(lab)}", flush=True)
    if at > now():
        print(f"warm-up: waiting until {stamp(at)}", flush=True)
        time.sleep((at - now()).total_seconds())

    known = set()
    for name in names:
        status, _ = call("GET", f"/users/{urllib.parse.quote(name)}")
        if status == 200:
            known.add(name)
    missing = [n for n in names if n not in known]
    if missing:
        status, body = call("POST", "/users", {"usernames": missing})
        if status != 201:
            raise Refused(f"creating {len(missing)} students: HTTP {status} {message(body)}")
        print(f"warm-up: created {len(missing)} students the hub did not know", flush=True)

    lab_text = lab.isoformat()
    wanted = set(names)
    spared: set[str] = set()
    failed: dict[str, str] = {}
    state = ready_servers(wanted)
    for name, kind in state.items():
        if kind == "ready" and spare(name, lab_text) == 200:
            spared.add(name)
    to_ask = [n for n in names if n not in state]
    began = time.monotonic()
    print(f"warm-up: {len(spared)} already running; asking for {len(to_ask)} servers", flush=True)
    with ThreadPoolExecutor(REQUESTS_AT_ONCE) as pool:
        for name, status, why in pool.map(
            lambda n: ask_server(n, config.get("profile", "")), to_ask
        ):
            if status not in (201, 202, 400) or (status == 400 and "already" not in why):
                failed[name] = f"HTTP {status} {why}".strip()
    shown = -1
    deadline = began + float(config.get("timeout", 900))
    while True:
        state = ready_servers(wanted)
        for name, kind in state.items():
            if kind == "ready" and name not in spared:
                status = spare(name, lab_text)
                if status == 200:
                    spared.add(name)
                else:
                    failed[name] = f"activity not taken: HTTP {status}"
        for name in wanted - set(state) - spared - set(failed):
            # Asked for, neither pending nor ready: its start failed (the hub's log says why).
            failed[name] = "its start failed (the hub stopped it)"
        if len(spared) != shown:
            shown = len(spared)
            print(
                f"warm-up: {shown} of {len(names)} ready ({time.monotonic() - began:.0f} s)",
                flush=True,
            )
        if len(spared) + len(failed) >= len(names) or time.monotonic() > deadline:
            break
        time.sleep(POLL_EVERY)
    late = sorted(wanted - spared - set(failed))
    if not failed and not late:
        ahead = (lab - now()).total_seconds()
        when = (
            f"{ahead / 60:.0f} min before the lab"
            if ahead >= 60
            else f"{ahead:.0f} s before the lab"
            if ahead > 0
            else "after the lab's start"
        )
        print(
            f"warm-up: all {len(names)} ready at {stamp(now())}, {when} at {stamp(lab)}; "
            "the culler spares them until it has begun",
            flush=True,
        )
        return 0
    for name, why in sorted(failed.items()):
        print(f"warm-up: {name}: {why}", flush=True)
    if late:
        print(f"warm-up: not ready in time: {', '.join(late)}", flush=True)
    print(
        f"warm-up: {len(spared)} of {len(names)} ready; {len(failed) + len(late)} not", flush=True
    )
    return 1


def main() -> int:
    try:
        return warm_up(json.loads(sys.argv[1]))
    except Refused as refused:
        print(f"warm-up refused: {refused}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
