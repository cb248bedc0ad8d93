"""`invoke metrics`: the key figures from Prometheus on the hub, now and over the last hour,
and the alerts firing; for staff without a browser.

Prometheus listens on the hub's loopback only: the queries run on the hub over SSH (one
round trip, `commands.metrics_sections`), never through a public port. The queries and the
report are pure (unit-tested); `gather` runs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from swarmhub.errors import SwarmhubError
from swarmhub.observe import commands, parse
from swarmhub.observe.remote import open_host
from swarmhub.settings import Settings
from swarmhub.steps.metrics import NOT_DISKS, REFUSALS

COMMAND_TIMEOUT = 30


@dataclass(frozen=True)
class Figure:
    """A figure of the whole cluster: its query now, and over the last hour."""

    label: str
    now: str
    hour: str
    unit: str = ""
    # The hour's is its highest, which includes now (its subquery's last step may be up to a
    # minute old).
    highest: bool = False


def over_hour(expr: str, how: str = "max") -> str:
    return f"{how}_over_time(({expr})[1h:1m])"


def new_or_increase(counter: str, window: str) -> str:
    """A counter's growth over ``window``, its series born within it counted too (the
    agent's OOM counts start with a user's first kill, which increase() alone misses)."""
    return (
        f"(sum(increase({counter}[{window}])) or vector(0)) + "
        f"(sum({counter} unless {counter} offset {window}) or vector(0))"
    )


def count(expr: str) -> str:
    """A count of events (increase() extrapolates: 7.3 starts is 7), 0 when there are none."""
    return f"round({expr}) or vector(0)"


SPAWNS = "jupyterhub_server_spawn_duration_seconds"
OOM_KILLS = "swarmhub_server_oom_kills_total"
QUEUE_WAIT = "swarmhub_spawn_queue_wait_seconds"
FIGURES: tuple[Figure, ...] = (
    Figure(
        "running servers",
        "sum(jupyterhub_running_servers)",
        over_hour("sum(jupyterhub_running_servers)"),
        highest=True,
    ),
    Figure(
        "active users (24 h)",
        'sum(jupyterhub_active_users{period="24h"})',
        over_hour('sum(jupyterhub_active_users{period="24h"})'),
        highest=True,
    ),
    Figure(
        "server starts",
        count(f"sum(increase({SPAWNS}_count[5m]))"),
        count(f"sum(increase({SPAWNS}_count[1h]))"),
    ),
    Figure(
        "failed starts",
        count(f'sum(increase({SPAWNS}_count{{status!="success"}}[5m]))'),
        count(f'sum(increase({SPAWNS}_count{{status!="success"}}[1h]))'),
    ),
    Figure(
        "of which refused",
        count(f'sum(increase({SPAWNS}_count{{status="failure",reason=~"{REFUSALS}"}}[5m]))'),
        count(f'sum(increase({SPAWNS}_count{{status="failure",reason=~"{REFUSALS}"}}[1h]))'),
    ),
    Figure(
        "students in line",
        "sum(swarmhub_spawn_queue_waiting)",
        over_hour("sum(swarmhub_spawn_queue_waiting)"),
        highest=True,
    ),
    Figure(
        "wait in line p95",
        f"histogram_quantile(0.95, sum by (le) (rate({QUEUE_WAIT}_bucket[5m])))",
        f"histogram_quantile(0.95, sum by (le) (rate({QUEUE_WAIT}_bucket[1h])))",
        " s",
    ),
    Figure(
        "start time p95",
        f'histogram_quantile(0.95, sum by (le) (rate({SPAWNS}_bucket{{status="success"}}[5m])))',
        f'histogram_quantile(0.95, sum by (le) (rate({SPAWNS}_bucket{{status="success"}}[1h])))',
        " s",
    ),
    Figure(
        "OOM kills",
        f"round({new_or_increase(OOM_KILLS, '5m')})",
        f"round({new_or_increase(OOM_KILLS, '1h')})",
    ),
    Figure(
        "last good backup, age",
        "(time() - max(swarmhub_backup_last_success_timestamp_seconds)) / 3600",
        "",
        " h",
    ),
    Figure("series in Prometheus", "sum(prometheus_tsdb_head_series)", ""),
)

# By host: now, and the highest of the last hour.
MEMORY = "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"
CPU = '100 * (1 - avg by (host) (rate(node_cpu_seconds_total{mode="idle"}[2m])))'
# The fullest of a host's disks (not tmpfs, not a mount of another host's: metrics.NOT_DISKS).
DISKS = f'{{fstype!~"{NOT_DISKS}"}}'
DISK = f"100 * (1 - node_filesystem_avail_bytes{DISKS} / node_filesystem_size_bytes{DISKS})"
BY_HOST = {"memory": MEMORY, "cpu": CPU, "disk": DISK}
# The servers using the most memory now (swarmhub-server-metrics), and their CPU.
TOP_SERVERS = 10
TOP_MEMORY = f"topk({TOP_SERVERS}, swarmhub_server_memory_bytes)"
SERVER_CPU = "100 * rate(swarmhub_server_cpu_seconds_total[2m])"


def queries() -> dict[str, str]:
    """Every query `invoke metrics` asks, by section name."""
    found: dict[str, str] = {"up": "up"}
    for index, figure in enumerate(FIGURES):
        found[f"now{index}"] = figure.now
        if figure.hour:
            found[f"hour{index}"] = figure.hour
    for name, expr in BY_HOST.items():
        found[f"host_{name}"] = f"max by (host) ({expr})"
        found[f"host_{name}_hour"] = f"max by (host) ({over_hour(expr)})"
    found["top_memory"] = TOP_MEMORY
    found["server_cpu"] = SERVER_CPU
    return found


def top_servers(metrics: Metrics) -> list[str]:
    """The servers using the most memory: user, node, memory (of its limit), CPU."""
    cpu = {(t.get("user"), t.get("host")): v for t, v in metrics.values.get("server_cpu", [])}
    rows = sorted(metrics.values.get("top_memory", []), key=lambda sample: -sample[1])
    if not rows:
        return ["servers: none running (or no figures from swarmhub-server-metrics)"]
    lines = [f"{'SERVER (most memory)':24} {'NODE':16} {'MEMORY':>8} {'CPU':>6}"]
    for labels, memory in rows:
        used = cpu.get((labels.get("user"), labels.get("host")))
        lines.append(
            f"{labels.get('user', '?'):24} {labels.get('host', '?'):16} "
            f"{memory / 2**20:>6.0f}MB {'-' if used is None else f'{used:.0f}%':>6}"
        )
    return lines


@dataclass
class Metrics:
    """What Prometheus answered: figures, by host, targets, alerts; or why it did not."""

    error: str = ""
    values: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)

    @property
    def firing(self) -> list[dict]:
        return [a for a in self.alerts if a.get("state") == "firing"]


def parse_vector(answer: str) -> list[tuple[dict[str, str], float]]:
    """An instant query's JSON answer: (labels, value) of each sample."""
    try:
        data = json.loads(answer)
    except ValueError as error:
        first = parse.first_line(answer)
        raise parse.ParseError(f"Prometheus answered no JSON: {first}") from error
    if data.get("status") != "success":
        raise parse.ParseError(f"Prometheus: {data.get('error', 'no success')}")
    result = data["data"]["result"]
    if data["data"].get("resultType") == "scalar":
        return [({}, float(result[1]))]
    return [(sample.get("metric", {}), float(sample["value"][1])) for sample in result]


def parse_answers(sections: dict[str, str]) -> Metrics:
    metrics = Metrics()
    try:
        for name in queries():
            metrics.values[name] = parse_vector(sections.get(name, ""))
        alerts = json.loads(sections.get("alerts", ""))
        metrics.alerts = alerts["data"]["alerts"]
    except (parse.ParseError, ValueError, KeyError) as error:
        metrics.error = str(error)
    return metrics


def number(samples: list[tuple[dict[str, str], float]], unit: str = "") -> str:
    if not samples or samples[0][1] != samples[0][1]:  # none, or NaN (no data yet)
        return "-"
    value = samples[0][1]
    text = f"{value:.0f}" if value == int(value) or abs(value) >= 100 else f"{value:.1f}"
    return text + unit


def by_host(samples: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels.get("host", "?"): value for labels, value in samples}


def render(metrics: Metrics, hosts: list[str]) -> str:
    """The report: figures, hosts, targets down, alerts firing with their first command."""
    if metrics.error:
        return f"metrics: no answer from Prometheus on the hub: {metrics.error}"
    lines = [f"{'(counts: NOW is the last 5 min)':32} {'NOW':>8} {'LAST HOUR':>10}"]
    for index, figure in enumerate(FIGURES):
        now_samples = metrics.values[f"now{index}"]
        now = number(now_samples, figure.unit)
        hour_samples = metrics.values.get(f"hour{index}", [])
        if figure.highest and now_samples and hour_samples:
            hour_samples = [({}, max(now_samples[0][1], hour_samples[0][1]))]
        hour = number(hour_samples, figure.unit) if figure.hour else ""
        lines.append(f"{figure.label:32} {now:>8} {hour:>10}")
    lines += ["", f"{'HOST':16} {'MEMORY':>7} {'CPU':>5} {'DISK':>7}   (highest of the hour)"]
    columns = {name: by_host(metrics.values[f"host_{name}"]) for name in BY_HOST}
    hourly = {name: by_host(metrics.values[f"host_{name}_hour"]) for name in BY_HOST}
    for host in hosts:
        cells = []
        for name in BY_HOST:
            now, top = columns[name].get(host), hourly[name].get(host)
            if now is not None and top is not None:
                top = max(now, top)
            cells.append("-" if now is None else f"{now:.0f}%")
            cells.append("-" if top is None else f"{top:.0f}%")
        lines.append(
            f"{host:16} {cells[0]:>7} {cells[2]:>5} {cells[4]:>7}   "
            f"({cells[1]}, {cells[3]}, {cells[5]})"
        )
    lines += ["", *top_servers(metrics)]
    up = metrics.values["up"]
    down = sorted(f"{t.get('job')}@{t.get('host', t.get('instance'))}" for t, v in up if v == 0)
    lines.append("")
    lines.append(
        f"targets: {len(up) - len(down)} of {len(up)} up"
        + (f"; down: {', '.join(down)}" if down else "")
    )
    firing = metrics.firing
    if not firing:
        lines.append("alerts: none firing")
    for item in firing:
        labels, notes = item.get("labels", {}), item.get("annotations", {})
        where = f" {labels['host']}" if labels.get("host") else ""
        lines.append(f"! {labels.get('alertname', '?')}{where}: {notes.get('summary', '')}")
        if notes.get("command"):
            lines.append(f"    first: {notes['command']}")
    return "\n".join(lines)


def gather(settings: Settings) -> Metrics:
    """Ask Prometheus on the hub, over SSH, every query at once."""
    if settings.metrics != "on":
        raise SwarmhubError("METRICS=off in the env file: no Prometheus to ask")
    hub = open_host(settings, settings.hub_host)
    try:
        script = commands.sectioned(commands.metrics_sections(queries()))
        output = hub.run(script, sudo=False, check=False, timeout=COMMAND_TIMEOUT).stdout
    finally:
        hub.connection.close()
    return parse_answers(parse.split_sections(output))
