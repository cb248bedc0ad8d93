"""CPU time of the sandbox's VMs, read from the provisioner's cgroups: what a benchmark's
"CPU-seconds per start" is made of.

Our own code because no tool reads it the way a storm needs: `docker stats` samples a rate
(not a total), and reads only the VMs, not the containers inside them. The kernel's
counters are cumulative, so two readings bracket a storm exactly.

A VM is a container of the provisioner's Docker; the containers of the VM's own engine
(the hub, chp, a student's server) are cgroups nested in it. Both cgroup versions:

- v1 (this machine): ``/sys/fs/cgroup/cpuacct/docker/<id>/cpuacct.usage``, nanoseconds;
- v2: ``/sys/fs/cgroup/docker/<id>/cpu.stat`` (Docker's cgroupfs driver) or
  ``/sys/fs/cgroup/system.slice/docker-<id>.scope/cpu.stat`` (systemd driver), the
  ``usage_usec`` line, microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def vm_cgroup(container_id: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The cgroup directory of one of the provisioner's containers, v1 or v2; None when the
    machine has neither layout (a benchmark then prints no CPU figures)."""
    for candidate in (
        root / "cpuacct" / "docker" / container_id,
        root / "cpu,cpuacct" / "docker" / container_id,
        root / "docker" / container_id,
        root / "system.slice" / f"docker-{container_id}.scope",
    ):
        if usage_seconds(candidate) is not None:
            return candidate
    return None


def usage_seconds(directory: Path) -> float | None:
    """CPU seconds used so far by the cgroup at ``directory`` (v1 or v2), None if unreadable."""
    try:
        return int((directory / "cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        pass
    try:
        for line in (directory / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        pass
    return None


def vm_memory_cgroup(container_id: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The memory cgroup of one of the provisioner's containers (v1: the memory controller's
    own tree; v2: the same directory as its CPU), None when the machine has neither layout."""
    for candidate in (
        root / "memory" / "docker" / container_id,
        root / "docker" / container_id,
        root / "system.slice" / f"docker-{container_id}.scope",
    ):
        if candidate.is_dir():
            return candidate
    return None


def rss_bytes(directory: Path) -> int:
    """Resident memory of the cgroup at ``directory``: v1's total_rss, v2's anon (no page
    cache); 0 if unreadable."""
    try:
        for line in (directory / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("total_rss", "anon"):
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def inner_cgroups(vm: Path) -> Iterable[tuple[str, Path]]:
    """(short id, cgroup) of each container of the VM's own engine: ``docker/<id>`` (the
    cgroupfs driver) or ``system.slice/docker-<id>.scope`` (systemd)."""
    for parent, prefix, suffix in (
        (vm / "docker", "", ""),
        (vm / "system.slice", "docker-", ".scope"),
    ):
        if not parent.is_dir():
            continue
        for child in sorted(parent.iterdir()):
            name = child.name
            if child.is_dir() and name.startswith(prefix) and name.endswith(suffix):
                yield name[len(prefix) : len(name) - len(suffix)][:12], child


def read_vms(vms: Mapping[str, str], root: Path = CGROUP_ROOT) -> dict[str, float]:
    """CPU seconds so far of each VM (``name: container id``) and of each container inside
    it (``VM/short id``). VMs whose cgroup cannot be read are left out."""
    used: dict[str, float] = {}
    for name, container_id in vms.items():
        top = vm_cgroup(container_id, root)
        if top is None:
            continue
        used[name] = usage_seconds(top) or 0.0
        for short, cgroup in inner_cgroups(top):
            seconds = usage_seconds(cgroup)
            if seconds is not None:
                used[f"{name}/{short}"] = seconds
    return used


@dataclass(frozen=True)
class VmCost:
    """One VM's CPU seconds per start: all of it, and the share of its engine's containers."""

    vm: str
    per_start: float
    containers: float


def cost_per_start(
    before: Mapping[str, float],
    after: Mapping[str, float],
    *,
    starts: int,
    storm_seconds: float,
    idle: Mapping[str, float] | None = None,
    idle_seconds: float = 0.0,
) -> list[VmCost]:
    """The definition of "CPU-seconds per start": each VM's CPU over the storm (the first
    kernel's start and output included), minus what the VM uses idle over a time of the
    same length (``idle``: the VM's CPU seconds over ``idle_seconds``, scaled to the storm's
    length), divided by the starts. The load generator is not a VM and is not counted."""
    if starts <= 0:
        raise ValueError("no server started: no cost per start")
    scale = storm_seconds / idle_seconds if idle and idle_seconds > 0 else 0.0
    costs = []
    for vm in sorted(name for name in after if "/" not in name):
        total = after[vm] - before.get(vm, after[vm])
        baseline = (idle or {}).get(vm, 0.0) * scale
        inner = sum(
            after[name] - before.get(name, 0.0) for name in after if name.startswith(f"{vm}/")
        )
        costs.append(VmCost(vm, (total - baseline) / starts, inner / starts))
    return costs


# --- where a VM's CPU goes, by process: what its cgroup's total does not say ---

CLOCK_TICKS = 100  # USER_HZ: /proc/PID/stat's times are in these on every Linux we run on

# `cat` of every /proc/PID/stat of a VM, run inside it (its own PID namespace; the
# containers of its engine are nested in it, so their processes are listed too).
PROCESS_STATS_COMMAND = ("sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null")


@dataclass(frozen=True)
class ProcessTimes:
    """One process: its name, when it started (clock ticks since boot: with the PID, it tells
    a process from a later one of the same PID) and its CPU seconds, its reaped children's
    included (a short-lived helper's time shows in the process that waited for it)."""

    command: str
    started: int
    seconds: float


def parse_process_stats(text: str) -> dict[int, ProcessTimes]:
    """/proc/PID/stat lines -> {pid: times}. The name is between the first ``(`` and the
    last ``)`` (it may hold spaces); fields after it count from the state (field 3)."""
    processes: dict[int, ProcessTimes] = {}
    for line in text.splitlines():
        head, _, rest = line.rpartition(")")
        pid_text, _, command = head.partition(" (")
        fields = rest.split()
        if not pid_text.strip().isdigit() or len(fields) < 20:
            continue
        # fields[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17, starttime 22
        ticks = sum(int(fields[index]) for index in (11, 12, 13, 14))
        processes[int(pid_text)] = ProcessTimes(command, int(fields[19]), ticks / CLOCK_TICKS)
    return processes


def by_command(
    before: Mapping[int, ProcessTimes], after: Mapping[int, ProcessTimes]
) -> dict[str, float]:
    """CPU seconds each command used between two readings of one VM: a process seen in both
    its difference, a process started since all of its time. A process that started and
    ended between them counts in its parent's (if the parent was there at the end)."""
    used: dict[str, float] = {}
    for pid, now in after.items():
        then = before.get(pid)
        earlier = then.seconds if then and then.started == now.started else 0.0
        used[now.command] = used.get(now.command, 0.0) + now.seconds - earlier
    return used
