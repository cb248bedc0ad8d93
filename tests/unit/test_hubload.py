"""benchmarks/hub_capacity's arithmetic (swarmhub/sandbox/hubload.py), without a cluster:
arrivals, percentiles, failures, the ceiling, and the results file `plan` reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from swarmhub import capacity
from swarmhub.sandbox import hubload


def test_arrivals_spread_evenly_first_at_zero_last_at_the_end() -> None:
    assert hubload.arrival_schedule(5, 120) == [0.0, 30.0, 60.0, 90.0, 120.0]
    assert hubload.arrival_schedule(1, 120) == [0.0]
    assert hubload.arrival_schedule(3, 0) == [0.0, 0.0, 0.0]  # all at once


@pytest.mark.parametrize(("students", "seconds"), [(0, 120), (-1, 120), (10, -1)])
def test_a_schedule_of_nobody_or_negative_time_is_refused(students: int, seconds: float) -> None:
    with pytest.raises(ValueError):
        hubload.arrival_schedule(students, seconds)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert hubload.percentile(values, 0.5) == 50
    assert hubload.percentile(values, 0.95) == 95
    assert hubload.percentile(values, 1.0) == 100
    assert hubload.percentile([3.0], 0.95) == 3.0
    assert math.isnan(hubload.percentile([], 0.5))


def test_failures_by_kind_sum_to_the_failures() -> None:
    kinds = [
        hubload.failure_kind(429),
        hubload.failure_kind(503),
        hubload.failure_kind(503),
        hubload.failure_kind(None, timed_out=True),
        hubload.failure_kind(502),
        hubload.failure_kind(None),
        hubload.failure_kind(429, timed_out=True),  # what ended it: the clock
    ]
    counted = hubload.failures_by_kind(kinds)
    assert counted == {"429": 1, "503": 2, "timeout": 2, "other": 2}
    assert sum(counted.values()) == len(kinds)
    assert hubload.failures_by_kind([]) == {"429": 0, "503": 0, "timeout": 0, "other": 0}
    with pytest.raises(ValueError, match="unknown failure kinds: 500"):
        hubload.failures_by_kind(["500"])


def test_the_sustained_rate_runs_from_the_first_arrival_to_the_last_ready() -> None:
    # 4 ready servers, the first student at 10 s, the last server at 30 s: 4 / 20 s.
    assert hubload.sustained_rate([10, 12, 14, 16], [11, 20, 25, 30]) == 0.2
    assert hubload.sustained_rate([0, 1], []) == 0.0


def test_the_hub_cpu_per_student_has_its_idle_use_subtracted() -> None:
    # 30 CPU-s over 100 s, 0.05 CPU-s a second idle: (30 - 5) / 100 students.
    assert hubload.hub_cpu_per_student(30, 0.05, 100, 100) == pytest.approx(0.25)
    assert hubload.hub_cpu_per_student(1, 0.05, 100, 10) == 0.0  # never below 0
    with pytest.raises(ValueError):
        hubload.hub_cpu_per_student(1, 0, 10, 0)


def test_the_ceiling_is_what_one_core_gives_at_that_cost() -> None:
    assert hubload.ceiling(0.25) == 4.0
    with pytest.raises(ValueError):
        hubload.ceiling(0)


def test_one_start_on_the_nodes_from_a_storm_at_once() -> None:
    # 20 students, 4 at once: 5 rounds; the last ready after 50 s: 10 s a start.
    readies = [10.0] * 4 + [20.0] * 4 + [30.0] * 4 + [40.0] * 4 + [50.0] * 4
    assert hubload.node_seconds_per_start(readies, 4) == 10.0
    assert hubload.node_seconds_per_start([12.0, 13.0, 9.0], 4) == 13.0  # one round
    with pytest.raises(ValueError):
        hubload.node_seconds_per_start([], 4)


def run_of(
    students: int, cpu_per_student: float, failures: dict[str, int] | None = None
) -> hubload.Run:
    return hubload.Run(
        students=students,
        arrival_seconds=120,
        ready_seconds=[1.0 + n / students for n in range(students)],
        failures=failures or hubload.failures_by_kind([]),
        rate=students / 121,
        wall_seconds=122,
        processes={
            "hub": hubload.Process(students * cpu_per_student, 200 * 2**20),
            "chp": hubload.Process(3.0, 60 * 2**20),
            "nginx": hubload.Process(2.0, 12 * 2**20),
        },
        hub_cpu_per_student=cpu_per_student,
    )


def test_the_file_ceiling_is_the_lowest_of_the_runs_without_failures() -> None:
    runs = [
        run_of(100, 0.05),
        run_of(300, 0.08),
        run_of(1000, 0.5, hubload.failures_by_kind(["503"] * 40)),  # not counted
    ]
    assert hubload.hub_ceiling(runs) == pytest.approx(12.5)
    with pytest.raises(ValueError, match="no run without failures"):
        hubload.hub_ceiling(runs[2:])


def test_the_results_file_is_what_plan_reads(tmp_path: Path) -> None:
    nodes = {"starts_at_once_per_node": 2, "seconds_per_start": 9.5, "source": "a storm"}
    document = hubload.results_document(
        [run_of(100, 0.05), run_of(300, 0.08)],
        date="2026-12-03T07:00:00+00:00",
        machine="2 cores, 24 GiB; load average 3.0: a loaded machine",
        load_average={"start": (3.0, 2.0, 1.0), "end": (4.0, 3.0, 2.0)},
        nodes=nodes,
        stand_in="one tornado process",
    )
    path = tmp_path / "results" / "hub_capacity.json"
    hubload.write_results(path, document)
    figures = capacity.parse_start_figures(json.loads(path.read_text()), "hub_capacity.json")
    assert figures.hub_starts_per_second == 12.5
    assert (figures.node_starts_at_once, figures.node_start_seconds) == (2, 9.5)
    assert figures.measured.startswith("2026-12-03T07:00:00+00:00, 2 cores")
    run = json.loads(path.read_text())["runs"][1]
    assert run["students"] == 300 and run["failures"]["503"] == 0
    assert run["cpu_seconds"]["hub"] == 24.0 and run["peak_rss_mib"]["chp"] == 60.0
    with pytest.raises(ValueError, match=r"nodes\.starts_at_once_per_node is missing"):
        hubload.results_document(
            [run_of(100, 0.05)], date="", machine="", load_average={}, nodes={}, stand_in=""
        )


def test_the_table_has_a_row_a_run_with_the_cpu_of_hub_chp_and_nginx() -> None:
    table = hubload.render_table([run_of(100, 0.05), run_of(300, 0.08)]).splitlines()
    assert len(table) == 3
    for name in ("hub CPU-s", "chp CPU-s", "nginx CPU-s", "429", "503", "t/o", "ceiling/s"):
        assert name in table[0]
    assert table[1].split()[:2] == ["100", "120s"]
    assert table[2].split()[-1] == "12.5"  # 1 / 0.08


def test_the_override_keeps_the_hub_stack_and_adds_the_stand_in() -> None:
    text = hubload.override_compose("b-hub:5000/swarmhub/hub:abc", "/tmp/hub-capacity", "t0ken")
    assert 'command: [jupyterhub, -f, "/tmp/hub-capacity/jupyterhub_config.py"]' in text
    assert 'image: "b-hub:5000/swarmhub/hub:abc"' in text
    assert "container_name: hub-capacity-standin" in text
    assert "networks: [users]" in text  # the overlay, where chp and the hub reach servers
    assert text.count('STANDIN_TOKEN: "t0ken"') == 2
