"""plan --arrival: the class-start arithmetic and its bad input, without a cluster."""

from __future__ import annotations

import json

import pytest

from swarmhub import capacity
from swarmhub.errors import SwarmhubError
from tests.cli import run

FIGURES = capacity.StartFigures(
    hub_starts_per_second=4.0,
    node_starts_at_once=2,
    node_start_seconds=10.0,
    measured="2026-12-02, test",
)


def test_durations_as_typed() -> None:
    assert capacity.parse_duration("5m", "--arrival") == 300
    assert capacity.parse_duration("90s", "--arrival") == 90
    assert capacity.parse_duration("2m30s", "--arrival") == 150
    assert capacity.parse_duration("1h", "--arrival") == 3600
    assert capacity.parse_duration("1.5m", "--arrival") == 90


@pytest.mark.parametrize("typed", ["", "5", "five minutes", "-5m", "5x", "m"])
def test_an_arrival_that_is_not_a_duration_is_one_line(typed: str) -> None:
    with pytest.raises(SwarmhubError, match=r"is not a duration: e\.g\. --arrival 5m"):
        capacity.parse_duration(typed, "--arrival")


def test_a_zero_arrival_is_refused() -> None:
    with pytest.raises(SwarmhubError, match="longer than 0"):
        capacity.parse_duration("0m", "--arrival")


def test_a_class_slower_than_the_starts_waits_one_start() -> None:
    # 10 nodes x 2 at once / 10 s = 2 starts/s; 60 students over 5 min = 0.2/s.
    start = capacity.class_start(60, 300, 10, FIGURES)
    assert start.node_rate == 2.0 and start.at_once == 20
    assert start.last_wait == 10.0
    assert len(capacity.render_class_start(start)) == 1


def test_the_nodes_limit_a_fast_class() -> None:
    # 2 nodes: 4 at once, 0.4 starts/s; 120 students over 60 s (2/s): the line drains in
    # 300 s, 240 s after the last arrival, who then waits one start more.
    start = capacity.class_start(120, 60, 2, FIGURES)
    assert start.last_wait == pytest.approx(120 / 0.4 - 60 + 10)
    line, warning = capacity.render_class_start(start)
    assert line == (
        "class start: 120 students arriving over 1 min (2.00/s): the hub sustains about 4.0 "
        "starts/s, the 2 nodes start 4 at once (about 0.4/s): the last student waits about "
        "4 min 10 s"
    )
    assert warning.startswith("warning: 2.00 arrivals/s is above what the nodes start (0.4/s)")
    assert "about 10 nodes keep up" in warning


def test_the_hub_limits_a_class_faster_than_its_ceiling() -> None:
    # 317 students over 30 s: 10.6/s, above the hub's 4/s; 100 nodes start 20/s.
    start = capacity.class_start(317, 30, 100, FIGURES)
    assert start.last_wait == pytest.approx(317 / 4 - 30 + 10)
    warning = capacity.render_class_start(start)[1]
    assert "above the hub's measured ceiling of 4.0 starts/s" in warning
    assert "class.warmup" in warning and "stagger" in warning and "its own hub" in warning


def test_the_results_file_read_or_refused() -> None:
    data = {
        "date": "2026-12-02",
        "machine": "2 cores, shared",
        "ceiling_starts_per_second": 3.5,
        "nodes": {"starts_at_once_per_node": 2, "seconds_per_start": 12.5},
    }
    figures = capacity.parse_start_figures(data, "r.json")
    assert (figures.hub_starts_per_second, figures.node_start_seconds) == (3.5, 12.5)
    with pytest.raises(SwarmhubError, match=r"r\.json: not hub_capacity's results"):
        capacity.parse_start_figures({"nodes": {}}, "r.json")
    with pytest.raises(SwarmhubError, match="more than 0"):
        capacity.parse_start_figures({**data, "ceiling_starts_per_second": 0}, "r.json")


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["--arrival", "soon"], "error: --arrival 'soon' is not a duration"),
        (["--arrival", "5m", "--students", "many"], "error: --students 'many' is not a whole"),
        (["--arrival", "5m", "--students", "0"], "error: 0 students"),
    ],
)
def test_plan_says_bad_input_in_one_line(argv: list[str], wanted: str) -> None:
    result = run("invoke", "plan", *argv)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(wanted) and "\n" not in result.stderr.strip()


def test_plan_prints_the_class_start_from_the_results_file() -> None:
    if not _results_present():
        pytest.skip(f"no {capacity.RESULTS_FILE} yet")
    result = run("invoke", "plan", "--students", "527", "--online", "0.6", "--arrival", "5m")
    assert result.returncode == 0, result.stderr
    assert "class start: 317 students arriving over 5 min" in result.stdout


def _results_present() -> bool:
    from swarmhub.settings import PROJECT_ROOT

    path = PROJECT_ROOT / capacity.RESULTS_FILE
    return path.exists() and bool(json.loads(path.read_text()))
