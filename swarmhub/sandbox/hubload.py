"""benchmarks/hub_capacity's arithmetic: when students arrive, what their outcomes add up to,
the hub's ceiling, and the results file that `invoke plan --arrival` reads.

Pure functions (no I/O but `write_results`' one file), so that every figure the benchmark
prints can be checked by hand and by tests (tests/unit/test_hubload.py). What runs where
(the hub's benchmark config, the stand-in, the load generator) is in benchmarks/hub_capacity
and benchmarks/standin/.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The kinds of failure the table counts; they sum to the failures.
FAILURE_KINDS = ("429", "503", "timeout", "other")


def arrival_schedule(students: int, seconds: float) -> list[float]:
    """When each student arrives, in seconds from the first: evenly spread over ``seconds``
    (the first at 0, the last at ``seconds``, as a class that trickles in over that time)."""
    if students < 1:
        raise ValueError(f"{students} students: give 1 or more")
    if seconds < 0:
        raise ValueError(f"an arrival time of {seconds} s: give 0 or more")
    if students == 1:
        return [0.0]
    return [index * seconds / (students - 1) for index in range(students)]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` 0.95: the p95) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def failure_kind(status: int | None, timed_out: bool = False) -> str:
    """The table's kind of a failed student: a 429 (the hub refused: too many spawns), a 503
    (the cluster full, the hub out of reach, nginx's wait page), a timeout (no answer in
    time), or other (any other status, a failed spawn, a connection refused)."""
    if timed_out:
        return "timeout"
    if status in (429, 503):
        return str(status)
    return "other"


def failures_by_kind(kinds: Sequence[str]) -> dict[str, int]:
    """Each kind's count, every kind present (0 when none), in FAILURE_KINDS' order."""
    counted = Counter(kinds)
    unknown = set(counted) - set(FAILURE_KINDS)
    if unknown:
        raise ValueError(f"unknown failure kinds: {', '.join(sorted(unknown))}")
    return {kind: counted.get(kind, 0) for kind in FAILURE_KINDS}


def sustained_rate(arrivals: Sequence[float], readies: Sequence[float]) -> float:
    """Starts a second sustained: the servers ready over the time from the first student's
    arrival to the last ready server (both in seconds on one clock)."""
    if not readies:
        return 0.0
    span = max(readies) - min(arrivals)
    return len(readies) / span if span > 0 else float("inf")


def hub_cpu_per_student(hub_cpu: float, idle_rate: float, seconds: float, students: int) -> float:
    """The hub process's CPU-seconds per student: its CPU over the run, less what it uses
    idle over as long (``idle_rate``: CPU-seconds a second, measured before the run)."""
    if students < 1:
        raise ValueError("no student got a server: no CPU per student")
    return max(0.0, hub_cpu - idle_rate * seconds) / students


def ceiling(cpu_per_student: float) -> float:
    """The arrival rate one hub core sustains: JupyterHub is one Python process, so it
    serves at most one CPU-second a second; each student's start costs ``cpu_per_student``
    of it. Above that rate a line builds up in the hub itself, whatever the nodes."""
    if cpu_per_student <= 0:
        raise ValueError("a student costs the hub some CPU: no ceiling from 0")
    return 1.0 / cpu_per_student


def node_seconds_per_start(readies: Sequence[float], at_once: int) -> float:
    """The time of one real start on the nodes, from a storm in which every student arrived
    at once: ``at_once`` starts run together, so the last of ``n`` is ready after about
    n / at_once rounds of one start each."""
    if not readies or at_once < 1:
        raise ValueError("a storm with servers ready, and 1 start at once or more")
    rounds = math.ceil(len(readies) / at_once)
    return max(readies) / rounds


@dataclass
class Process:
    """One process's (or container's) use over a run: CPU-seconds and peak resident memory."""

    cpu_seconds: float
    peak_rss: int  # bytes


@dataclass
class Run:
    """One run's figures."""

    students: int
    arrival_seconds: float
    ready_seconds: list[float]  # each ready student's time from arrival to a ready server
    failures: dict[str, int]  # by kind, FAILURE_KINDS
    rate: float  # starts a second sustained
    wall_seconds: float  # first arrival to the last student's end
    processes: dict[str, Process] = field(default_factory=dict)  # hub, chp, nginx, stand-in
    hub_cpu_per_student: float = float("nan")
    examples: list[str] = field(default_factory=list)  # a few failures, as they were seen

    @property
    def ceiling(self) -> float:
        if not self.hub_cpu_per_student > 0:
            return float("nan")
        return ceiling(self.hub_cpu_per_student)

    def figures(self) -> dict[str, Any]:
        """The run as the results file keeps it."""
        ready = self.ready_seconds
        return {
            "students": self.students,
            "arrival_seconds": self.arrival_seconds,
            "ready": len(ready),
            "starts_per_second": round(self.rate, 3),
            "ready_seconds": {
                "p50": round(percentile(ready, 0.5), 2) if ready else None,
                "p95": round(percentile(ready, 0.95), 2) if ready else None,
                "max": round(max(ready), 2) if ready else None,
            },
            "failures": dict(self.failures),
            "wall_seconds": round(self.wall_seconds, 1),
            "cpu_seconds": {name: round(p.cpu_seconds, 2) for name, p in self.processes.items()},
            "peak_rss_mib": {
                name: round(p.peak_rss / 2**20, 1) for name, p in self.processes.items()
            },
            "hub_cpu_seconds_per_student": round(self.hub_cpu_per_student, 4),
            "ceiling_starts_per_second": round(self.ceiling, 2),
            "failure_examples": self.examples[:5],
        }


def render_table(runs: Sequence[Run], names: Sequence[str] = ("hub", "chp", "nginx")) -> str:
    """The table the benchmark prints: a row a run."""
    header = (
        f"{'students':>8} {'over':>6} {'starts/s':>8} {'p50':>6} {'p95':>6} {'max':>6} "
        f"{'fail':>4} {'429':>4} {'503':>4} {'t/o':>4} {'oth':>4} "
        + " ".join(f"{name + ' CPU-s':>12} {name + ' MiB':>9}" for name in names)
        + f" {'hub CPU-s/st':>12} {'ceiling/s':>9}"
    )
    rows = [header]
    for run in runs:
        ready = run.ready_seconds
        p50, p95, top = (
            (percentile(ready, 0.5), percentile(ready, 0.95), max(ready))
            if ready
            else (math.nan,) * 3
        )
        usage = " ".join(
            f"{run.processes[name].cpu_seconds:>12.1f} {run.processes[name].peak_rss / 2**20:>9.0f}"
            if name in run.processes
            else f"{'?':>12} {'?':>9}"
            for name in names
        )
        rows.append(
            f"{run.students:>8} {run.arrival_seconds:>5.0f}s {run.rate:>8.2f} {p50:>6.1f} "
            f"{p95:>6.1f} {top:>6.1f} {sum(run.failures.values()):>4} "
            + " ".join(f"{run.failures[kind]:>4}" for kind in FAILURE_KINDS)
            + f" {usage} {run.hub_cpu_per_student:>12.4f} {run.ceiling:>9.1f}"
        )
    return "\n".join(rows)


def hub_ceiling(runs: Sequence[Run]) -> float:
    """The results file's ceiling: the lowest of the runs in which every student got a
    server (a run with failures measured a hub that did not serve them all)."""
    clean = [run.ceiling for run in runs if not sum(run.failures.values()) and run.ready_seconds]
    clean = [value for value in clean if not math.isnan(value)]
    if not clean:
        raise ValueError("no run without failures: no ceiling to write")
    return min(clean)


def results_document(
    runs: Sequence[Run],
    *,
    date: str,
    machine: str,
    load_average: Mapping[str, Sequence[float]],
    nodes: Mapping[str, Any],
    stand_in: str,
) -> dict[str, Any]:
    """What RESULTS_FILE (swarmhub/capacity.py) holds: the keys `plan` reads
    (``ceiling_starts_per_second``, ``nodes.starts_at_once_per_node``,
    ``nodes.seconds_per_start``), when and where, and every run's figures."""
    for key in ("starts_at_once_per_node", "seconds_per_start", "source"):
        if key not in nodes:
            raise ValueError(f"nodes.{key} is missing")
    return {
        "benchmark": "benchmarks/hub_capacity",
        "date": date,
        "machine": machine,
        "load_average": {when: list(values) for when, values in load_average.items()},
        "ceiling_starts_per_second": round(hub_ceiling(runs), 2),
        "ceiling_definition": (
            "1 / the hub process's CPU-seconds per student (idle subtracted): the arrival "
            "rate one hub core sustains; the lowest of the runs without failures"
        ),
        "nodes": dict(nodes),
        "stand_in": stand_in,
        "runs": [run.figures() for run in runs],
    }


def write_results(path: Path, document: Mapping[str, Any]) -> None:
    """The results file, as a reviewer reads it in a diff: indented, keys in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def override_compose(image: str, directory: str, token: str) -> str:
    """The compose override that turns the hub stack into the benchmark's, for the
    benchmark only: the hub on benchmarks/standin/jupyterhub_config.py (the normal config,
    then the spawner's Docker calls replaced), and the stand-in for students' servers on
    the users' overlay. ``directory``: where the benchmark copied benchmarks/standin/ on
    the hub; ``token``: the stand-in's, known to the hub's spawner alone."""
    quoted = json.dumps  # a YAML double-quoted scalar is a JSON string
    return (
        "# benchmarks/hub_capacity's override of compose.yml, for its runs only: the hub\n"
        "# is restored with compose.yml alone (docker compose up --remove-orphans) after.\n"
        "services:\n"
        "  jupyterhub:\n"
        f"    command: [jupyterhub, -f, {quoted(directory + '/jupyterhub_config.py')}]\n"
        "    environment:\n"
        f"      STANDIN_TOKEN: {quoted(token)}\n"
        "    volumes:\n"
        f"      - {quoted(directory + ':' + directory + ':ro')}\n"
        "  standin:\n"
        f"    image: {quoted(image)}\n"
        "    container_name: hub-capacity-standin\n"
        f"    command: [python3, -u, {quoted(directory + '/server.py')}]\n"
        "    environment:\n"
        f"      STANDIN_TOKEN: {quoted(token)}\n"
        "    volumes:\n"
        f"      - {quoted(directory + ':' + directory + ':ro')}\n"
        "    networks: [users]\n"
    )
