#!/usr/bin/env python3
"""swarmhub-agent: the alerts that no packaged tool raises, posted to a webhook.

Installed on every host by `invoke monitor.deploy` as the systemd service swarmhub-agent,
configured by /etc/swarmhub/agent.env (0600: the webhook URL is a secret). Python's standard
library only, so that it runs on any Debian host with python3.

Log shipping is rsyslog's (monitor.logs: the journal, over TLS, TCP or UDP, with a
disk-assisted queue), the host-down, disk, certificate and backup alerts are Prometheus's
(monitor.metrics). The agent keeps what neither does:
- an OOM kill in a user's server named by user and memory limit (Docker's "oom" event and
  the container's JUPYTERHUB_USER and limit; no exporter names the user), also counted for
  Prometheus in the node exporter's textfile directory;
- a dead kernel folded into the OOM kill that caused it (one alert, not two);
- a failed or refused start naming the user (JupyterHub's metrics count them, unnamed);
- a burst of 5xx answers in nginx's access log on the proxy.

What it reads: the logs of every container of this host's Docker engine (through the Docker
API on its Unix socket; the journald log driver answers it as json-file did), nginx's access
log on the proxy, and on the swarm manager the swarm's nodes (unless METRICS=on: Prometheus's
HostDown alert replaces that one).

What it sends:
- alerts as Slack-compatible JSON (``{"text": ...}``) to ALERT_WEBHOOK_URL, when set: failed
  spawns, dead kernels, OOM kills (naming the user), bursts of 5xx answers, a node down;
  one per cause and subject per ALERT_MIN_INTERVAL, at most ALERT_MAX_PER_MINUTE in all;
- OOM kills counted by user (and the last one's time) for Prometheus, in the node exporter's
  textfile directory (OOM_METRIC_FILE) when it exists (METRICS=on). The agent keeps this
  because no packaged exporter names the user whose server the kernel killed.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

DOCKER_SOCKET = "/var/run/docker.sock"
NGINX_ACCESS_LOG = "/var/log/nginx/access.log"
SERVICE_LABEL = "com.docker.swarm.service.name"
OOM_METRIC = "swarmhub_server_oom_kills_total"
OOM_LAST_METRIC = "swarmhub_server_last_oom_kill_timestamp_seconds"
OOM_METRIC_FILE = "/var/lib/prometheus/node-exporter/swarmhub_oom.prom"

# --- lines and what they mean (pure functions, unit-tested) ---


@dataclass(frozen=True)
class Line:
    """One log line: which program wrote it, and the user whose server it is (if any)."""

    app: str
    text: str
    user: str = ""


# JupyterHub 5's words for a spawn that failed: an error, a timeout, a handler's error.
SPAWN_FAILED = re.compile(
    r"error starting (?P<error>[^\s']+)'s server"
    r"|(?P<timeout>[^\s']+)'s server failed to start in"
    r"|error starting server (?P<handler>[^\s:]+)",
    re.I,
)
# JupyterHub 6's words for a spawn refused on purpose (a SpawnException: the cluster is full,
# no node takes servers): a refusal, counted as status="failure" by its metrics, not an error.
SPAWN_REFUSED = re.compile(r"Not starting (?P<user>[^\s']+)'s server")
KERNEL_DIED = re.compile(
    r"KernelRestarter: restarting kernel|kernel \S+ (?:died|restarted)|"
    r"restarter.*(?:died|restart failed)",
    re.I,
)
ACCESS_STATUS = re.compile(r'" (?P<status>[1-5]\d\d) ')


@dataclass(frozen=True)
class Alert:
    """Something staff should hear about: its cause, about what (a user, a node), the text."""

    cause: str
    subject: str
    text: str


def alert_for_line(line: Line, host: str) -> Alert | None:
    """The alert a single log line raises, if any (5xx bursts are counted elsewhere)."""
    if line.app == "jupyterhub":
        refused = SPAWN_REFUSED.search(line.text)
        if refused:
            user = refused.group("user")
            reason = line.text.split("]", 1)[-1].strip()[:300]
            return Alert("spawn-refused", user, f"{user}'s server was refused: {reason}")
        match = SPAWN_FAILED.search(line.text)
        if match:
            user = next(name for name in match.groups() if name)
            reason = line.text.split("]", 1)[-1].strip()[:300]
            return Alert("spawn-failed", user, f"{user}'s server failed to start: {reason}")
    if line.user and KERNEL_DIED.search(line.text):
        return Alert(
            "kernel-died",
            line.user,
            f"a kernel died in {line.user}'s server on {host} and was restarted: "
            f"{line.text.strip()[:200]}",
        )
    return None


def oom_alert(user: str, service: str, host: str, limit_bytes: int) -> Alert:
    """An OOM kill in a user's container: the cause named, not a silent "kernel died"."""
    limit = f" of {limit_bytes // 2**20} MiB" if limit_bytes else ""
    who = f"{user}'s server" if user else service
    return Alert(
        "oom-kill",
        user or service,
        f"OOM kill: {who} ({service} on {host}) went over its memory limit{limit}; the kernel "
        "killed a process in it, usually the notebook's kernel (the user sees 'kernel died')",
    )


def oom_metric_text(counts: dict[tuple[str, str], int], last: dict[tuple[str, str], float]) -> str:
    """The textfile collector's file: OOM kills by user and service (kept across the agent's
    restarts), and the time of each one's last kill (what the alert rule reads)."""
    lines = [
        f"# HELP {OOM_METRIC} OOM kills in users' servers seen by the swarmhub-agent",
        f"# TYPE {OOM_METRIC} counter",
    ]
    for (user, service), count in sorted(counts.items()):
        lines.append(f"{OOM_METRIC}{oom_labels(user, service)} {count}")
    lines += [
        f"# HELP {OOM_LAST_METRIC} when the swarmhub-agent last saw an OOM kill in the server",
        f"# TYPE {OOM_LAST_METRIC} gauge",
    ]
    for (user, service), when in sorted(last.items()):
        lines.append(f"{OOM_LAST_METRIC}{oom_labels(user, service)} {when:.0f}")
    return "\n".join(lines) + "\n"


def oom_labels(user: str, service: str) -> str:
    escaped = user.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{user="{escaped}",service="{service}"}}'


OOM_LINE = re.compile(r'^(\w+)\{user="((?:[^"\\]|\\.)*)",service="([^"]*)"\} (\S+)$')


def parse_oom_metric_text(
    text: str,
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float]]:
    """What an earlier agent wrote: its counts and last kills, to go on from."""
    counts: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = OOM_LINE.match(line)
        if not match:
            continue
        name, user, service, value = match.groups()
        key = (re.sub(r"\\(.)", r"\1", user), service)
        if name == OOM_METRIC:
            counts[key] = int(float(value))
        elif name == OOM_LAST_METRIC:
            last[key] = float(value)
    return counts, last


def write_atomically(path: str, text: str) -> None:
    """``path`` replaced at once (the collector never reads half a file), readable by all."""
    if not os.path.isdir(os.path.dirname(path)):
        return
    with open(f"{path}.new", "w") as out:
        out.write(text)
    os.chmod(f"{path}.new", 0o644)
    os.replace(f"{path}.new", path)


def node_down_alert(node: str, state: str) -> Alert:
    return Alert("node-down", node, f"swarm node {node} is {state}: its users' servers are lost")


def status_of_access_line(text: str) -> int | None:
    match = ACCESS_STATUS.search(text)
    return int(match.group("status")) if match else None


class BurstCounter:
    """Counts events in a sliding window; says when they reach the threshold (once per burst)."""

    def __init__(self, threshold: int, window: float) -> None:
        self.threshold, self.window = threshold, window
        self.times: collections.deque[float] = collections.deque()
        self.fired = False

    def add(self, now: float) -> bool:
        self.times.append(now)
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()
        if len(self.times) < self.threshold:
            self.fired = False
            return False
        if self.fired:
            return False
        self.fired = True
        return True


@dataclass
class RateLimiter:
    """One alert per (cause, subject) per ``min_interval``; at most ``per_minute`` in all.

    What it holds back is counted and mentioned in the next alert that goes out.
    """

    min_interval: float
    per_minute: int
    last: dict[tuple[str, str], float] = field(default_factory=dict)
    sent: collections.deque[float] = field(default_factory=collections.deque)
    held_back: int = 0

    def allow(self, alert: Alert, now: float) -> bool:
        key = (alert.cause, alert.subject)
        if now - self.last.get(key, -1e12) < self.min_interval:
            self.held_back += 1
            return False
        while self.sent and self.sent[0] < now - 60:
            self.sent.popleft()
        if len(self.sent) >= self.per_minute:
            self.held_back += 1
            return False
        self.last[key] = now
        self.sent.append(now)
        return True

    def take_held_back(self) -> int:
        count, self.held_back = self.held_back, 0
        return count


# An OOM kill makes Jupyter restart the kernel a few seconds later; the OOM alert explains
# both, so a dead-kernel alert waits this long for an OOM kill of the same user.
KERNEL_ALERT_DELAY = 8.0


class Alerter:
    """Takes alerts, holds dead-kernel ones briefly, limits the rate, posts the rest."""

    def __init__(
        self, post: Callable[[str], None], host: str, min_interval: float, per_minute: int
    ) -> None:
        self.post, self.host = post, host
        self.limiter = RateLimiter(min_interval, per_minute)
        self.pending: list[tuple[float, Alert]] = []
        self.recent_oom: dict[str, float] = {}
        self.lock = threading.Lock()

    def raise_alert(self, alert: Alert, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            if alert.cause == "oom-kill":
                self.recent_oom[alert.subject] = now
                self.pending = [
                    (due, a)
                    for due, a in self.pending
                    if not (a.cause == "kernel-died" and a.subject == alert.subject)
                ]
            elif alert.cause == "kernel-died":
                if now - self.recent_oom.get(alert.subject, -1e12) < 60:
                    return  # the OOM alert already told the story
                self.pending.append((now + KERNEL_ALERT_DELAY, alert))
                return
            self._send(alert, now)

    def flush(self, now: float | None = None) -> None:
        """Send the held alerts whose wait is over (called every second)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            due = [a for when, a in self.pending if when <= now]
            self.pending = [(when, a) for when, a in self.pending if when > now]
            for alert in due:
                self._send(alert, now)

    def _send(self, alert: Alert, now: float) -> None:
        if not self.limiter.allow(alert, now):
            return
        text = f"[swarmhub {self.host}] {alert.text}"
        held = self.limiter.take_held_back()
        if held:
            text += f" (and {held} alert{'s' if held > 1 else ''} held back by the rate limit)"
        self.post(text)


# --- reading the host's logs ---


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the Docker daemon's Unix socket."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_get(path: str, *, stream: bool = False, timeout: float = 10):
    connection = UnixHTTPConnection(DOCKER_SOCKET, None if stream else timeout)
    connection.request("GET", path)
    response = connection.getresponse()
    if response.status != 200:
        raise OSError(f"docker API {path}: HTTP {response.status}")
    return response if stream else json.loads(response.read())


def demultiplex(response, tty: bool) -> Iterator[bytes]:
    """The payloads of a container's log stream (8-byte frame headers unless it has a TTY)."""
    if tty:
        while chunk := response.read1(65536):
            yield chunk
        return
    while True:
        header = response.read(8)
        if len(header) < 8:
            return
        size = int.from_bytes(header[4:8], "big")
        yield response.read(size)


def split_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if rest:
        yield rest.decode("utf-8", "replace")


def container_app_and_user(info: dict) -> tuple[str, str]:
    """The name lines carry (a swarm task's service, else the container's name), and the
    JupyterHub user whose server the container is."""
    config = info.get("Config") or {}
    labels = config.get("Labels") or {}
    app = labels.get(SERVICE_LABEL) or info.get("Name", "").lstrip("/")
    user = ""
    for item in config.get("Env") or []:
        if item.startswith("JUPYTERHUB_USER="):
            user = item.split("=", 1)[1]
    return app, user


class Agent:
    def __init__(self, environ: dict[str, str]) -> None:
        self.host = environ.get("SWARMHUB_HOST") or socket.gethostname()
        self.roles = set(filter(None, environ.get("SWARMHUB_ROLES", "").split(",")))
        self.following: set[str] = set()
        self.lock = threading.Lock()
        self.webhook = environ.get("ALERT_WEBHOOK_URL", "")
        self.webhook_ca = environ.get("ALERT_CA_FILE", "")
        self.alerter = Alerter(
            self.post_alert,
            self.host,
            float(environ.get("ALERT_MIN_INTERVAL", "300")),
            int(environ.get("ALERT_MAX_PER_MINUTE", "10")),
        )
        self.bursts = BurstCounter(
            int(environ.get("ALERT_5XX_COUNT", "20")), float(environ.get("ALERT_5XX_WINDOW", "60"))
        )
        self.metrics = environ.get("METRICS", "off") == "on"
        try:
            with open(OOM_METRIC_FILE) as earlier:
                self.oom_kills, self.oom_last = parse_oom_metric_text(earlier.read())
        except OSError:
            self.oom_kills, self.oom_last = {}, {}

    # -- intake --

    def take(self, line: Line) -> None:
        if self.webhook:
            self.check(line)

    def check(self, line: Line) -> None:
        alert = alert_for_line(line, self.host)
        if alert:
            self.alerter.raise_alert(alert)
        if line.app == "nginx-access":
            status = status_of_access_line(line.text)
            if status and status >= 500 and self.bursts.add(time.monotonic()):
                self.alerter.raise_alert(
                    Alert(
                        "5xx-burst",
                        self.host,
                        f"{self.bursts.threshold} or more 5xx answers within "
                        f"{self.bursts.window:.0f} s on the proxy; last: {line.text[:200]}",
                    )
                )

    def note(self, text: str) -> None:
        """The agent's own line: to its journal (rsyslog ships it with the rest)."""
        print(text, file=sys.stderr, flush=True)

    # -- containers --

    def follow_container(self, container_id: str, since: int) -> None:
        with self.lock:
            if container_id in self.following:
                return
            self.following.add(container_id)
        try:
            info = docker_get(f"/containers/{container_id}/json")
            app, user = container_app_and_user(info)
            tty = bool((info.get("Config") or {}).get("Tty"))
            path = f"/containers/{container_id}/logs?follow=1&stdout=1&stderr=1&since={since}"
            for text in split_lines(demultiplex(docker_get(path, stream=True), tty)):
                self.take(Line(app, text, user))
        except (OSError, http.client.HTTPException, ValueError) as error:
            print(f"container {container_id[:12]}: {error}", file=sys.stderr, flush=True)
        finally:
            with self.lock:
                self.following.discard(container_id)

    def start_follower(self, container_id: str, since: int) -> None:
        threading.Thread(
            target=self.follow_container, args=(container_id, since), daemon=True
        ).start()

    def watch_events(self) -> None:
        filters = json.dumps({"type": ["container"], "event": ["start", "oom"]})
        while True:
            try:
                now = int(time.time())
                for container in docker_get("/containers/json") if self.webhook else []:
                    self.start_follower(container["Id"], now)
                path = f"/events?filters={urllib.parse.quote(filters)}&since={now}"
                response = docker_get(path, stream=True)
                while raw := response.readline():
                    self.on_event(json.loads(raw))
            except (OSError, http.client.HTTPException, ValueError) as error:
                print(f"docker events: {error}; again in 5 s", file=sys.stderr, flush=True)
            time.sleep(5)

    def on_event(self, event: dict) -> None:
        container_id = event.get("id") or event.get("Actor", {}).get("ID", "")
        action = event.get("Action") or event.get("status")
        if action == "start" and self.webhook:
            self.start_follower(container_id, int(event.get("time", time.time())) - 1)
        elif action == "oom":
            try:
                info = docker_get(f"/containers/{container_id}/json")
            except (OSError, http.client.HTTPException, ValueError):
                info = {"Name": container_id[:12]}
            app, user = container_app_and_user(info)
            limit = int((info.get("HostConfig") or {}).get("Memory") or 0)
            alert = oom_alert(user, app, self.host, limit)
            self.note(alert.text)
            if self.metrics and user:
                key = (user, app)
                self.oom_kills[key] = self.oom_kills.get(key, 0) + 1
                self.oom_last[key] = time.time()
                try:
                    text = oom_metric_text(self.oom_kills, self.oom_last)
                    write_atomically(OOM_METRIC_FILE, text)
                except OSError as error:
                    print(f"{OOM_METRIC_FILE}: {error}", file=sys.stderr, flush=True)
            if self.webhook:
                self.alerter.raise_alert(alert)

    # -- nginx's access log --

    def follow_file(self, app: str, path: str) -> None:
        """``tail -F`` from the end: survives rotation (a new inode) and truncation."""
        handle, inode = None, None
        while True:
            try:
                stat = os.stat(path)
                if handle is None or stat.st_ino != inode or stat.st_size < handle.tell():
                    if handle:
                        handle.close()
                    handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                    if inode is None:
                        handle.seek(0, os.SEEK_END)
                    inode = stat.st_ino
                while text := handle.readline():
                    self.take(Line(app, text.rstrip("\n")))
            except OSError:
                pass
            time.sleep(0.5)

    # -- the swarm's nodes, on the manager --

    def watch_nodes(self, every: float = 15) -> None:
        known: dict[str, str] = {}
        while True:
            try:
                for node in docker_get("/nodes"):
                    name = node.get("Description", {}).get("Hostname", node.get("ID", "?"))
                    state = node.get("Status", {}).get("State", "unknown")
                    if known.get(name) == "ready" and state != "ready":
                        self.alerter.raise_alert(node_down_alert(name, state))
                        self.note(f"swarm node {name} is {state}")
                    known[name] = state
            except (OSError, http.client.HTTPException, ValueError) as error:
                print(f"docker nodes: {error}", file=sys.stderr, flush=True)
            time.sleep(every)

    # -- sending --

    def post_alert(self, text: str) -> None:
        body = json.dumps({"text": text}).encode()
        request = urllib.request.Request(
            self.webhook, body, {"Content-Type": "application/json"}, method="POST"
        )
        context = ssl.create_default_context(cafile=self.webhook_ca or None)
        for attempt in (1, 2, 3):
            try:
                with urllib.request.urlopen(request, timeout=10, context=context):
                    print(f"alert sent: {text[:120]}", file=sys.stderr, flush=True)
                    return
            except OSError as error:
                print(f"alert not sent (try {attempt}): {error}", file=sys.stderr, flush=True)
                time.sleep(2 * attempt)

    def tick(self) -> None:
        while True:
            time.sleep(1)
            self.alerter.flush()

    def run(self) -> None:
        workers: list[tuple[Callable[..., None], tuple]] = [(self.tick, ())]
        if self.roles & {"hub", "node"}:
            workers.append((self.watch_events, ()))
        if "hub" in self.roles and not self.metrics:
            workers.append((self.watch_nodes, ()))
        if "proxy" in self.roles and self.webhook:
            workers.append((self.follow_file, ("nginx-access", NGINX_ACCESS_LOG)))
        for target, args in workers:
            threading.Thread(target=target, args=args, daemon=True).start()
        self.note(
            f"swarmhub-agent started on {self.host} ({','.join(sorted(self.roles))}): "
            f"alerts: {'on' if self.webhook else 'off'}"
        )
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    Agent(dict(os.environ)).run()
