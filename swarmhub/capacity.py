"""Capacity planning: how many nodes a course needs, with the arithmetic shown.

Pure functions, no I/O, so that the figures can be checked by hand and by tests.

Sizes are whole bytes (``int``) everywhere, read and printed by `swarmhub.sizes` (binary
units: ``2G``, ``2GB`` and ``2GiB`` are all 2 GiB, as for USER_MEM_LIMIT). Shares and ratios
are computed with exact fractions: ``527 * 0.6`` must round up to 317 users, never to 316 or
318 because of a binary float.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from swarmhub.errors import SwarmhubError
from swarmhub.sizes import KIB, format_size, parse_size

# What each node keeps for itself when every user's server is at its memory limit: the OS,
# dockerd, containerd, the swarm agent and the per-container shims. Memory limits do not
# count them, so a node filled to 100 % with limits would hit the OOM killer under load.
# 1 GiB is a safe figure for a minimal Debian with Docker; --reserve changes it.
DEFAULT_RESERVE = "1G"

# The arithmetic is printed with the signs of a hand calculation (x and - would read as
# variables and hyphens); spelled by name here because they look like ASCII in the source.
TIMES = "\N{MULTIPLICATION SIGN}"
MINUS = "\N{MINUS SIGN}"
ROUNDED_TO = "\N{RIGHTWARDS ARROW}"


@dataclass(frozen=True)
class CapacityPlan:
    """The figures of a plan; sizes in bytes."""

    students: int
    online_share: float
    mem_per_user: int
    node_mem: int
    reserve: int
    concurrent_users: int  # ceil(students * online_share)
    memory_needed: int  # concurrent_users * mem_per_user
    raw_nodes: int  # ceil(memory_needed / node_mem): every byte of a node given to users
    users_per_node: int  # floor((node_mem - reserve) / mem_per_user)
    nodes: int  # ceil(concurrent_users / users_per_node): the number to provision


def size_option(text: str, name: str) -> int:
    """Bytes in a size typed for the option ``name`` (``--node-mem``): a mistake is one line
    naming the option."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise SwarmhubError(f"{name} {text.strip()!r}: {error}") from None


DEFAULT_RESERVE_BYTES = parse_size(DEFAULT_RESERVE)


def parse_count(text: str, name: str = "count") -> int:
    """A whole number of people, as typed on the command line."""
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise SwarmhubError(f"{name} {text!r} is not a whole number: e.g. {name} 527")
    return int(text)


def parse_share(text: str, name: str = "share") -> float:
    """A share like ``0.6``, as typed on the command line (its range is checked by the plan)."""
    try:
        return float(text)
    except ValueError:
        raise SwarmhubError(f"{name} {text!r} is not a number: e.g. {name} 0.6") from None


def parse_meminfo(text: str) -> int:
    """Bytes of ``MemTotal`` in the text of ``/proc/meminfo`` (which counts in KiB)."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB\s*$", text, re.MULTILINE)
    if not match:
        raise SwarmhubError("no MemTotal line in /proc/meminfo: give --node-mem instead")
    return int(match.group(1)) * KIB


def plan_capacity(
    students: int,
    online_share: float,
    mem_per_user: int,
    node_mem: int,
    reserve: int = DEFAULT_RESERVE_BYTES,
) -> CapacityPlan:
    """The nodes needed for ``students``, of whom ``online_share`` are online at once.

    Memory is what limits a node: each user's server gets ``mem_per_user`` (its Docker
    memory limit) and each node keeps ``reserve`` for itself. CPU is shared and can be
    oversubscribed; memory cannot.
    """
    if students < 1:
        raise SwarmhubError(f"{students} students: give the course's size, 1 or more")
    if not 0 < online_share <= 1:
        raise SwarmhubError(
            f"online share {online_share} is not in (0, 1]: give the fraction of students "
            "online at once, e.g. --online 0.6"
        )
    if mem_per_user <= 0 or node_mem <= 0:
        raise SwarmhubError(
            "memory per user and node memory must be more than 0: e.g. --mem-per-user 2G "
            "--node-mem 14G"
        )
    if reserve < 0:
        raise SwarmhubError("a reserve below 0 means nothing: give --reserve 0 or more, e.g. 1G")
    if reserve >= node_mem:
        raise SwarmhubError(
            f"a reserve of {format_size(reserve)} leaves nothing of a {format_size(node_mem)} "
            "node for users: give a smaller --reserve or a larger --node-mem"
        )
    if mem_per_user > node_mem - reserve:
        raise SwarmhubError(
            f"{format_size(mem_per_user)} per user does not fit a {format_size(node_mem)} node "
            f"keeping {format_size(reserve)} for itself: give a smaller --mem-per-user, "
            "a smaller --reserve or a larger --node-mem"
        )
    concurrent = math.ceil(students * _exact(online_share))
    memory_needed = concurrent * mem_per_user
    users_per_node = (node_mem - reserve) // mem_per_user
    return CapacityPlan(
        students=students,
        online_share=online_share,
        mem_per_user=mem_per_user,
        node_mem=node_mem,
        reserve=reserve,
        concurrent_users=concurrent,
        memory_needed=memory_needed,
        raw_nodes=-(-memory_needed // node_mem),
        users_per_node=users_per_node,
        nodes=-(-concurrent // users_per_node),
    )


def render_plan(plan: CapacityPlan) -> str:
    """The plan's figures, each with the arithmetic that gives it, so it can be checked.

    ``→`` marks a rounding: up for users and nodes (a fraction of a node is a whole VM to
    pay for), down for users per node (half a user's limit does not fit).
    """
    mem, node, reserve = (format_size(s) for s in (plan.mem_per_user, plan.node_mem, plan.reserve))
    concurrent_exact = plan.students * _exact(plan.online_share)
    per_node_exact = Fraction(plan.node_mem - plan.reserve, plan.mem_per_user)
    lines = [
        f"concurrent users: {plan.students} {TIMES} {_share(plan.online_share)} = "
        + _rounded(concurrent_exact, plan.concurrent_users),
        f"memory for users: {plan.concurrent_users} {TIMES} {mem} = "
        + format_size(plan.memory_needed),
        f"raw nodes: {plan.concurrent_users} {TIMES} {mem} / {node} = "
        + _rounded(Fraction(plan.memory_needed, plan.node_mem), plan.raw_nodes),
        f"users per node, keeping {reserve} for OS + Docker: ({node} {MINUS} {reserve}) / {mem} = "
        + _rounded(per_node_exact, plan.users_per_node),
        f"nodes with that reserve: {plan.concurrent_users} / {plan.users_per_node} = "
        + _rounded(Fraction(plan.concurrent_users, plan.users_per_node), plan.nodes),
    ]
    return "\n".join(lines)


def compare_nodes(plan: CapacityPlan, listed: int, source: str) -> str:
    """Whether the ``listed`` nodes of ``source`` (an env file) are enough for the plan."""
    have = f"{source} lists {listed} node{'' if listed == 1 else 's'}"
    if listed < plan.nodes:
        return f"{have}: {plan.nodes - listed} short of the {plan.nodes} this plan needs"
    if listed == plan.nodes:
        return f"{have}: exactly the {plan.nodes} this plan needs"
    return f"{have}: enough, {listed - plan.nodes} spare"


def describe_local(plan: CapacityPlan) -> str:
    """What one machine (the plan's node) holds of the plan's concurrent users."""
    fits = (
        f"this machine ({format_size(plan.node_mem)}) fits {plan.users_per_node} users "
        f"at {format_size(plan.mem_per_user)} each"
    )
    if plan.users_per_node >= plan.concurrent_users:
        return f"{fits}: enough for the {plan.concurrent_users} online at once"
    short = plan.concurrent_users - plan.users_per_node
    return f"{fits}: {short} short of the {plan.concurrent_users} online at once"


def _exact(share: float) -> Fraction:
    """The decimal the user typed (0.6 is 3/5), not the binary float nearest to it."""
    return Fraction(str(share))


def _share(share: float) -> str:
    """The share as typed: ``0.6``, and ``1`` rather than ``1.0``."""
    text = str(share)
    return text.removesuffix(".0")


def _rounded(exact: Fraction, result: int) -> str:
    """``316.2 → 317``, or just ``6`` when no rounding happened."""
    if exact == result:
        return str(result)
    # Enough decimals that an inexact value never looks whole (6.96, not 7.0 → 6).
    for places in range(1, 7):
        text = _decimal(exact, places)
        if "." in text:
            return f"{text} {ROUNDED_TO} {result}"
    return f"{float(exact)} {ROUNDED_TO} {result}"


def _decimal(value: Fraction, places: int) -> str:
    """``value`` with at most ``places`` decimals, trailing zeros dropped."""
    return f"{float(value):.{places}f}".rstrip("0").rstrip(".")


# --- a class start: how long the last student waits (issue #19) ---

# benchmarks/hub_capacity writes it; `plan --arrival` reads it.
RESULTS_FILE = "benchmarks/results/hub_capacity.json"


@dataclass(frozen=True)
class StartFigures:
    """The measured figures a class-start estimate rests on (RESULTS_FILE)."""

    hub_starts_per_second: float  # the hub's ceiling: starts/s one hub sustains
    node_starts_at_once: int  # starts a node runs at once (SPAWN_CONCURRENCY's default)
    node_start_seconds: float  # time of one start on a node with that many at once
    measured: str  # when and where, as the file says


@dataclass(frozen=True)
class ClassStart:
    """A class of ``students`` arriving over ``arrival_seconds``."""

    students: int
    arrival_seconds: float
    nodes: int
    hub_rate: float  # starts/s the hub sustains
    node_rate: float  # starts/s the nodes sustain: nodes x at once / start time
    at_once: int  # starts the nodes run at once
    arrival_rate: float  # students/s arriving
    last_wait: float  # seconds the last student waits for a ready server


def parse_duration(text: str, name: str) -> float:
    """Seconds in a duration as typed: ``5m``, ``90s``, ``2m30s``, ``1h``; a positive one."""
    typed = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", typed)
    if not typed or not parts or not any(parts.groups()):
        raise SwarmhubError(
            f"{name} {text!r} is not a duration: e.g. {name} 5m (or 90s, 2m30s, 1h)"
        )
    hours, minutes, seconds = (float(part or 0) for part in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise SwarmhubError(f"{name} {text!r}: give a time longer than 0, e.g. {name} 5m")
    return total


def parse_start_figures(data: object, source: str) -> StartFigures:
    """RESULTS_FILE's figures, or one line saying what is missing."""
    try:
        assert isinstance(data, dict)
        hub = float(data["ceiling_starts_per_second"])
        nodes = data["nodes"]
        figures = StartFigures(
            hub_starts_per_second=hub,
            node_starts_at_once=int(nodes["starts_at_once_per_node"]),
            node_start_seconds=float(nodes["seconds_per_start"]),
            measured=f"{data.get('date', '?')}, {data.get('machine', '?')}",
        )
    except (AssertionError, KeyError, TypeError, ValueError):
        raise SwarmhubError(
            f"{source}: not hub_capacity's results (ceiling_starts_per_second, nodes."
            "starts_at_once_per_node, nodes.seconds_per_start): run benchmarks/hub_capacity"
        ) from None
    if min(figures.hub_starts_per_second, figures.node_start_seconds) <= 0:
        raise SwarmhubError(f"{source}: its figures must be more than 0")
    if figures.node_starts_at_once < 1:
        raise SwarmhubError(f"{source}: nodes.starts_at_once_per_node must be 1 or more")
    return figures


def class_start(
    students: int, arrival_seconds: float, nodes: int, figures: StartFigures
) -> ClassStart:
    """When the last of ``students`` arriving evenly over ``arrival_seconds`` has a server.

    Starts go at the slower of two rates: the hub's (its measured ceiling) and the nodes'
    (each runs a few starts at once, each taking the measured start time). While arrivals
    come slower than that, a student waits one start; faster, a line builds up and the last
    student, arriving at the end, waits for the line to drain: all the starts at that rate,
    less the time over which they arrived, plus their own start.
    """
    if students < 1 or nodes < 1:
        raise SwarmhubError("a class start needs 1 student or more and 1 node or more")
    at_once = nodes * figures.node_starts_at_once
    node_rate = at_once / figures.node_start_seconds
    rate = min(figures.hub_starts_per_second, node_rate)
    backlog = max(0.0, students / rate - arrival_seconds)
    return ClassStart(
        students=students,
        arrival_seconds=arrival_seconds,
        nodes=nodes,
        hub_rate=figures.hub_starts_per_second,
        node_rate=node_rate,
        at_once=at_once,
        arrival_rate=students / arrival_seconds,
        last_wait=backlog + figures.node_start_seconds,
    )


def render_class_start(start: ClassStart) -> list[str]:
    """The class-start line, and a warning with what to do when the class outgrows the hub
    or the nodes."""
    line = (
        f"class start: {start.students} students arriving over {_duration(start.arrival_seconds)}"
        f" ({start.arrival_rate:.2f}/s): the hub sustains about {start.hub_rate:.1f} starts/s, "
        f"the {start.nodes} node{'s' * (start.nodes != 1)} start {start.at_once} at once "
        f"(about {start.node_rate:.1f}/s): the last student waits about "
        f"{_duration(start.last_wait)}"
    )
    lines = [line]
    if start.arrival_rate > start.hub_rate:
        lines.append(
            f"warning: {start.arrival_rate:.2f} arrivals/s is above the hub's measured ceiling "
            f"of {start.hub_rate:.1f} starts/s: more nodes do not help; warm the class up before"
            " the lab (invoke class.warmup), stagger its arrival, or give each section its own "
            "hub"
        )
    elif start.arrival_rate > start.node_rate:
        needed = math.ceil(start.arrival_rate / start.node_rate * start.nodes)
        lines.append(
            f"warning: {start.arrival_rate:.2f} arrivals/s is above what the nodes start "
            f"({start.node_rate:.1f}/s): about {needed} nodes keep up; or warm the class up "
            "(invoke class.warmup), or stagger its arrival"
        )
    return lines


def _duration(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``12 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
