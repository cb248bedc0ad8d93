"""plan: how many nodes a course needs, from its size and the memory each student gets."""

from __future__ import annotations

import json
from pathlib import Path

from invoke import Context, task

from swarmhub import capacity
from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.settings import PROJECT_ROOT
from swarmhub.sizes import format_size

# The seed's figures: a course of 527 students, 60 % online at once, 2 GiB each, on VMs
# of 14 GiB.
DEFAULT_MEM_PER_USER = "2G"
DEFAULT_NODE_MEM = "14G"
MEMINFO = Path("/proc/meminfo")


@task(
    help={
        "students": "students in the course, a whole number (default 527)",
        "online": "share of them online at once, a number in (0, 1] (default 0.6)",
        "mem-per-user": (
            f"memory limit of each user's server, e.g. 512M or 2G (default {DEFAULT_MEM_PER_USER};"
            " with --compare: USER_MEM_LIMIT of the env file)"
        ),
        "node-mem": f"memory of each node VM, e.g. 14G (default {DEFAULT_NODE_MEM})",
        "reserve": (
            f"memory each node keeps for the OS and Docker (default {capacity.DEFAULT_RESERVE})"
        ),
        "compare": "compare with the nodes in NODE_HOSTS of the env file ($SWARMHUB_ENV)",
        "local": "plan for this machine as the one node: its total memory is --node-mem",
        "arrival": (
            "the students online arriving over this time, e.g. 5m: when the last one has a "
            f"server, from the hub's measured ceiling ({capacity.RESULTS_FILE})"
        ),
    }
)
def plan(
    c: Context,
    students: str = "527",
    online: str = "0.6",
    mem_per_user: str | None = None,
    node_mem: str | None = None,
    reserve: str = capacity.DEFAULT_RESERVE,
    compare: bool = False,
    local: bool = False,
    arrival: str = "",
) -> None:
    """Size the cluster: how many nodes of how much memory a course needs, arithmetic shown.

    Memory is what limits a node (CPU can be shared, memory cannot), so the plan divides
    the memory of the students online at once by what each node has for them. Sizes use
    Docker's binary units: 2G, 2GB and 2GiB all mean 2 GiB, and a size needs its unit. Every
    option is read as text and checked here, so that a typo gets one error line rather than
    invoke's traceback.

    With --compare, the plan is checked against the env file chosen by SWARMHUB_ENV: the
    nodes in NODE_HOSTS are counted and, unless --mem-per-user is given, each user gets the
    env file's USER_MEM_LIMIT (what the hub will really give them); with PROFILES_FILE, the
    largest profile's limit, and a line per profile with what it alone would need. With
    --local, this machine's total memory (MemTotal of /proc/meminfo) is the node memory, to
    see how many users fit here, e.g. invoke plan --local --mem-per-user 512M.

    With --arrival, the class start: the students online at once arriving evenly over that
    time, the hub's ceiling and the nodes' starts at once measured by benchmarks/hub_capacity
    (its results file in the repository), and when the last one has a server; a warning
    says what to do when the arrivals outrun the hub or the nodes.
    """
    arrival_seconds = capacity.parse_duration(arrival, "--arrival") if arrival else None
    if compare and local:
        raise SwarmhubError("give --compare or --local, not both")
    if local and node_mem is not None:
        raise SwarmhubError("--local measures this machine's memory: leave out --node-mem")

    settings = env_settings.load() if compare else None
    profiles = []
    if mem_per_user is None and settings is not None and settings.profiles_file is not None:
        # Each profile has its own limit: the plan is the largest one's (every student online
        # on it), and a line per profile follows.
        profiles = list(settings.profile_set().profiles)
        largest = max(profiles, key=lambda p: p.mem_limit)
        user_bytes = largest.mem_limit
        print(
            f"memory per user: {format_size(user_bytes)}, of profile {largest.name} (the largest "
            f"of PROFILES_FILE in {_shown(settings.source)})"
        )
    elif mem_per_user is None and settings is not None:
        # The env file's value, already checked and in bytes: what the hub gives each server.
        user_bytes = settings.user_mem_limit
        shown = format_size(user_bytes)
        print(f"memory per user: {shown}, from USER_MEM_LIMIT of {_shown(settings.source)}")
    else:
        user_bytes = capacity.size_option(mem_per_user or DEFAULT_MEM_PER_USER, "--mem-per-user")
    node_bytes = (
        _local_memory()
        if local
        else capacity.size_option(node_mem or DEFAULT_NODE_MEM, "--node-mem")
    )
    figures = capacity.plan_capacity(
        students=capacity.parse_count(students, "--students"),
        online_share=capacity.parse_share(online, "--online"),
        mem_per_user=user_bytes,
        node_mem=node_bytes,
        reserve=capacity.size_option(reserve, "--reserve"),
    )
    print(capacity.render_plan(figures))
    if settings is not None:
        source = _shown(settings.source)
        print(capacity.compare_nodes(figures, len(settings.node_hosts), source))
        for profile in profiles:
            print(profile_line(figures, profile.name, profile.mem_limit, len(settings.node_hosts)))
    if local:
        print(capacity.describe_local(figures))
    if arrival_seconds is not None:
        nodes = len(settings.node_hosts) if settings is not None else figures.nodes
        start = capacity.class_start(
            figures.concurrent_users, arrival_seconds, nodes, _start_figures()
        )
        print("\n".join(capacity.render_class_start(start)))


def _start_figures() -> capacity.StartFigures:
    """benchmarks/hub_capacity's measured figures, from the repository."""
    path = PROJECT_ROOT / capacity.RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise SwarmhubError(
            f"--arrival needs the hub's measured figures in {capacity.RESULTS_FILE}: "
            "run benchmarks/hub_capacity"
        ) from None
    except ValueError:
        raise SwarmhubError(f"{capacity.RESULTS_FILE} is not JSON") from None
    return capacity.parse_start_figures(data, capacity.RESULTS_FILE)


def profile_line(figures: capacity.CapacityPlan, name: str, mem_limit: int, listed: int) -> str:
    """What the plan would need with every student online on one profile."""
    try:
        one = capacity.plan_capacity(
            students=figures.students,
            online_share=figures.online_share,
            mem_per_user=mem_limit,
            node_mem=figures.node_mem,
            reserve=figures.reserve,
        )
    except SwarmhubError as error:
        return f"profile {name} ({format_size(mem_limit)}): {error}"
    enough = "enough" if listed >= one.nodes else f"{one.nodes - listed} short"
    return (
        f"profile {name} ({format_size(mem_limit)} a server): {one.users_per_node} a node, "
        f"{one.nodes} node{'s' * (one.nodes != 1)} for {one.concurrent_users} online on it "
        f"({enough} with {listed})"
    )


def _local_memory() -> int:
    """This machine's total memory in bytes."""
    try:
        return capacity.parse_meminfo(MEMINFO.read_text(encoding="ascii"))
    except OSError:
        raise SwarmhubError(
            f"cannot read {MEMINFO}: --local works on Linux only, give --node-mem instead"
        ) from None


def _shown(path: Path) -> str:
    """``path`` as the user would type it: relative to here when it is under here."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
