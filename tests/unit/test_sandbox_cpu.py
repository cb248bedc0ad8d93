"""The benchmarks' CPU-seconds per start: cgroup v1 and v2 layouts, and the definition
(the storm minus an idle baseline of the same length, per start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmhub.sandbox import cpu


def write(path: Path, text: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    name = "cpuacct.usage" if "cpuacct" in str(path) else "cpu.stat"
    (path / name).write_text(text)


def test_v1_reads_a_vm_and_the_containers_of_its_engine(tmp_path: Path) -> None:
    vm = tmp_path / "cpuacct" / "docker" / "abc"
    write(vm, "3000000000\n")
    write(vm / "docker" / ("f" * 64), "1500000000\n")
    used = cpu.read_vms({"t-hub": "abc", "t-gone": "zzz"}, root=tmp_path)
    assert used == {"t-hub": 3.0, f"t-hub/{'f' * 12}": 1.5}


def test_v2_reads_cgroupfs_and_systemd_layouts(tmp_path: Path) -> None:
    write(tmp_path / "docker" / "abc", "usage_usec 2500000\nuser_usec 2000000\n")
    write(tmp_path / "system.slice" / "docker-def.scope", "usage_usec 1000000\n")
    write(
        tmp_path / "system.slice" / "docker-def.scope" / "system.slice" / "docker-9.scope",
        "usage_usec 250000\n",
    )
    used = cpu.read_vms({"t-node-1": "abc", "t-node-2": "def"}, root=tmp_path)
    assert used == {"t-node-1": 2.5, "t-node-2": 1.0, "t-node-2/9": 0.25}


def test_no_cgroup_to_read_gives_no_figures(tmp_path: Path) -> None:
    assert cpu.read_vms({"t-hub": "abc"}, root=tmp_path) == {}


def test_cost_per_start_subtracts_the_idle_use_scaled_to_the_storm() -> None:
    before = {"t-hub": 10.0, "t-hub/aa": 4.0, "t-node-1": 20.0}
    after = {"t-hub": 30.0, "t-hub/aa": 12.0, "t-node-1": 60.0}
    # Idle: the hub 1 s and the node 2 s over 50 s; the storm lasted 100 s.
    idle = {"t-hub": 1.0, "t-node-1": 2.0}
    costs = cpu.cost_per_start(
        before, after, starts=10, storm_seconds=100, idle=idle, idle_seconds=50
    )
    assert [(c.vm, round(c.per_start, 3), round(c.containers, 3)) for c in costs] == [
        ("t-hub", 1.8, 0.8),
        ("t-node-1", 3.6, 0.0),
    ]


def test_cost_per_start_without_a_baseline_is_the_raw_use() -> None:
    costs = cpu.cost_per_start({"t-hub": 1.0}, {"t-hub": 3.0}, starts=2, storm_seconds=5)
    assert costs == [cpu.VmCost("t-hub", 1.0, 0.0)]


def test_a_vm_that_came_up_during_the_storm_is_not_counted_from_zero() -> None:
    costs = cpu.cost_per_start({}, {"t-node-3": 500.0}, starts=5, storm_seconds=5)
    assert costs[0].per_start == 0.0


def test_no_start_is_an_error_not_a_division_by_zero() -> None:
    with pytest.raises(ValueError):
        cpu.cost_per_start({}, {}, starts=0, storm_seconds=1)


def test_memory_of_a_vm_v1_and_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.stat").write_text("cache 4096\ntotal_rss 8192\n")
    v2 = tmp_path / "system.slice" / "docker-def.scope"
    v2.mkdir(parents=True)
    (v2 / "memory.stat").write_text("anon 1024\nfile 2048\n")
    assert cpu.vm_memory_cgroup("abc", root=tmp_path) == v1
    assert cpu.rss_bytes(v1) == 8192
    assert cpu.vm_memory_cgroup("def", root=tmp_path) == v2
    assert cpu.rss_bytes(v2) == 1024
    assert cpu.vm_memory_cgroup("zzz", root=tmp_path) is None
    assert cpu.rss_bytes(tmp_path / "gone") == 0


def stat_line(pid: int, command: str, utime: int, stime: int, started: int, cutime: int = 0) -> str:
    """A /proc/PID/stat line with the fields by_command reads (the rest zeros)."""
    fields = ["S", "1"] + ["0"] * 9 + [str(utime), str(stime), str(cutime), "0"]
    fields += ["0"] * 4 + [str(started)] + ["0"] * 10
    return f"{pid} ({command}) {' '.join(fields)}"


def test_process_stats_parse_names_with_spaces_and_parentheses() -> None:
    text = "\n".join(
        [stat_line(7, "containerd-shim", 150, 50, 300), stat_line(9, "a (b) c", 1, 1, 5, cutime=8)]
    )
    parsed = cpu.parse_process_stats(text + "\nnot a stat line\n")
    assert parsed[7] == cpu.ProcessTimes("containerd-shim", 300, 2.0)
    assert parsed[9] == cpu.ProcessTimes("a (b) c", 5, 0.1)


def test_by_command_counts_new_processes_whole_and_a_reused_pid_as_new() -> None:
    before = {
        1: cpu.ProcessTimes("dockerd", 10, 5.0),
        2: cpu.ProcessTimes("sshfs", 20, 1.0),
        3: cpu.ProcessTimes("gone", 30, 9.0),
    }
    after = {
        1: cpu.ProcessTimes("dockerd", 10, 7.5),
        2: cpu.ProcessTimes("python3", 999, 0.5),  # PID 2 reused by a new process
        4: cpu.ProcessTimes("python3", 1000, 1.0),
    }
    assert cpu.by_command(before, after) == {"dockerd": 2.5, "python3": 1.5}
