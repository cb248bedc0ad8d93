"""The capacity planner: the seed's figures, the arithmetic shown, one line per mistake."""

# The expected output is written with the signs the planner prints (× and −), not x and -.
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from swarmhub import capacity
from swarmhub.capacity import plan_capacity, render_plan
from swarmhub.errors import SwarmhubError
from swarmhub.sizes import GIB, MIB, parse_size
from tests.cli import run

# The seed: "527 × 0.6 × 2 GB / 14 GB: 46 VMs raw". 527 × 0.6 = 316.2 users, rounded up to
# 317 (a fifth of a student still needs a server); 317 × 2 / 14 = 45.29, rounded up to 46.
# Not rounding the users first gives 316.2 × 2 / 14 = 45.17, also 46.
SEED = ("--students", "527", "--online", "0.6", "--mem-per-user", "2G", "--node-mem", "14G")


def seed_plan(reserve: int = GIB) -> capacity.CapacityPlan:
    return plan_capacity(527, 0.6, 2 * GIB, 14 * GIB, reserve)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --- sizes (read and printed by swarmhub.sizes, see test_sizes.py) ---


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2X", "--node-mem '2X': '2X' is not a size: write a number and a unit, like 512M or 2G"),
        ("4096", "--node-mem '4096': 4096 has no unit: give a unit, like 512M or 2G"),
    ],
)
def test_a_bad_size_option_names_the_option(text: str, message: str) -> None:
    with pytest.raises(SwarmhubError) as caught:
        capacity.size_option(text, "--node-mem")
    assert str(caught.value) == message


def test_meminfo_gives_the_total_in_bytes() -> None:
    text = "MemTotal:       24684092 kB\nMemFree:        15258504 kB\n"
    assert capacity.parse_meminfo(text) == 24684092 * 1024
    with pytest.raises(SwarmhubError, match="no MemTotal line"):
        capacity.parse_meminfo("MemFree: 1 kB\n")


# --- the plan ---


def test_the_seed_needs_46_nodes_raw_and_53_with_the_reserve() -> None:
    plan = seed_plan()
    assert plan.concurrent_users == 317
    assert plan.memory_needed == 634 * GIB
    assert plan.raw_nodes == 46
    assert plan.users_per_node == 6  # (14 - 1) / 2 = 6.5: half a user does not fit
    assert plan.nodes == 53  # 317 / 6 = 52.8


def test_without_a_reserve_users_fill_the_nodes() -> None:
    plan = seed_plan(reserve=0)
    assert plan.users_per_node == 7
    assert plan.nodes == plan.raw_nodes == 46


def test_the_share_is_the_decimal_typed_not_a_binary_float() -> None:
    assert 100 * 0.07 > 7  # 7.000000000000001: ceil would make it 8
    assert plan_capacity(100, 0.07, 2 * GIB, 14 * GIB).concurrent_users == 7


def test_exact_figures_are_not_rounded() -> None:
    plan = plan_capacity(500, 0.6, 2 * GIB, 14 * GIB, 2 * GIB)
    assert (plan.concurrent_users, plan.users_per_node, plan.nodes) == (300, 6, 50)
    assert "concurrent users: 500 × 0.6 = 300\n" in render_plan(plan)
    assert "(14 GiB − 2 GiB) / 2 GiB = 6\n" in render_plan(plan)


def test_the_plan_shows_its_arithmetic() -> None:
    assert render_plan(seed_plan()).splitlines() == [
        "concurrent users: 527 × 0.6 = 316.2 → 317",
        "memory for users: 317 × 2 GiB = 634 GiB",
        "raw nodes: 317 × 2 GiB / 14 GiB = 45.3 → 46",
        "users per node, keeping 1 GiB for OS + Docker: (14 GiB − 1 GiB) / 2 GiB = 6.5 → 6",
        "nodes with that reserve: 317 / 6 = 52.8 → 53",
    ]


def test_a_rounding_never_prints_a_whole_number_before_its_arrow() -> None:
    # (14 - 1) / 1.87 = 6.95...: "7.0 → 6" would look wrong, "6.95 → 6" does not.
    plan = plan_capacity(10, 1, parse_size("1.87G"), 14 * GIB)
    assert "= 6.95 → 6" in render_plan(plan)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 0.6, 2 * GIB, 14 * GIB, GIB), "0 students: give the course's size"),
        ((527, 0, 2 * GIB, 14 * GIB, GIB), "online share 0 is not in (0, 1]"),
        ((527, 1.5, 2 * GIB, 14 * GIB, GIB), "online share 1.5 is not in (0, 1]"),
        ((527, float("nan"), 2 * GIB, 14 * GIB, GIB), "online share nan is not in (0, 1]"),
        ((527, 0.6, 0, 14 * GIB, GIB), "memory per user and node memory must be more than 0"),
        ((527, 0.6, 2 * GIB, 0, GIB), "memory per user and node memory must be more than 0"),
        ((527, 0.6, 2 * GIB, 14 * GIB, 14 * GIB), "a reserve of 14 GiB leaves nothing"),
        ((527, 0.6, 2 * GIB, 14 * GIB, -GIB), "give --reserve 0 or more"),
        ((527, 0.6, 16 * GIB, 14 * GIB, GIB), "16 GiB per user does not fit a 14 GiB node"),
        ((527, 0.6, 14 * GIB, 14 * GIB, GIB), "keeping 1 GiB for itself: give a smaller"),
    ],
)
def test_bad_inputs_say_what_is_wrong_and_what_to_do(
    arguments: tuple[int, float, int, int, int], message: str
) -> None:
    with pytest.raises(SwarmhubError) as caught:
        plan_capacity(*arguments)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert ": give " in text or ": e.g. " in text


def test_command_line_numbers_are_checked() -> None:
    assert capacity.parse_count("527", "--students") == 527
    assert capacity.parse_share("0.6", "--online") == 0.6
    with pytest.raises(SwarmhubError, match="--students 'many' is not a whole number"):
        capacity.parse_count("many", "--students")
    with pytest.raises(SwarmhubError, match="--students '-5' is not a whole number"):
        capacity.parse_count("-5", "--students")
    with pytest.raises(SwarmhubError, match="--online '60%' is not a number"):
        capacity.parse_share("60%", "--online")


def test_listed_nodes_are_compared_with_the_plan() -> None:
    plan = seed_plan()
    assert (
        capacity.compare_nodes(plan, 2, "env/sandbox.env")
        == "env/sandbox.env lists 2 nodes: 51 short of the 53 this plan needs"
    )
    assert (
        capacity.compare_nodes(plan, 53, "x.env")
        == "x.env lists 53 nodes: exactly the 53 this plan needs"
    )
    assert capacity.compare_nodes(plan, 60, "x.env") == "x.env lists 60 nodes: enough, 7 spare"
    assert capacity.compare_nodes(plan, 1, "x.env").startswith("x.env lists 1 node: ")


def test_one_machine_says_how_many_users_it_holds() -> None:
    plan = plan_capacity(527, 0.6, 512 * MIB, 24684092 * 1024)
    assert capacity.describe_local(plan) == (
        "this machine (23.54 GiB) fits 45 users at 512 MiB each: 272 short of the 317 online "
        "at once"
    )
    small_course = plan_capacity(20, 1, 512 * MIB, 24684092 * 1024)
    assert capacity.describe_local(small_course).endswith("enough for the 20 online at once")


# --- invoke plan ---


def test_the_command_prints_the_seeds_46() -> None:
    result = run("invoke", "plan", *SEED, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == render_plan(seed_plan()).splitlines()
    assert "raw nodes: 317 × 2 GiB / 14 GiB = 45.3 → 46" in result.stdout
    assert "= 6.5 → 6" in result.stdout
    assert "nodes with that reserve: 317 / 6 = 52.8 → 53" in result.stdout


def test_the_defaults_are_the_seed() -> None:
    result = run("invoke", "plan", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "→ 46" in result.stdout


def test_the_reserve_is_an_option() -> None:
    result = run("invoke", "plan", *SEED, "--reserve", "2G", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "keeping 2 GiB for OS + Docker: (14 GiB − 2 GiB) / 2 GiB = 6\n" in result.stdout
    assert "nodes with that reserve: 317 / 6 = 52.8 → 53" in result.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--students", "many"), "--students 'many' is not a whole number"),
        (("--students", "0"), "0 students"),
        (("--online", "1.5"), "online share 1.5 is not in (0, 1]"),
        (("--online", "lots"), "--online 'lots' is not a number"),
        (("--mem-per-user", "2X"), "--mem-per-user '2X': '2X' is not a size"),
        (("--mem-per-user", "2048"), "--mem-per-user '2048': 2048 has no unit"),
        (("--node-mem", "14Q"), "--node-mem '14Q': '14Q' is not a size"),
        (("--mem-per-user", "16G"), "16 GiB per user does not fit a 14 GiB node"),
        (("--reserve", "14G"), "a reserve of 14 GiB leaves nothing"),
        (("--local", "--node-mem", "8G"), "leave out --node-mem"),
        (("--local", "--compare"), "give --compare or --local, not both"),
    ],
)
def test_bad_options_give_one_error_line(options: tuple[str, ...], message: str) -> None:
    assert message in one_error_line(run("invoke", "plan", *options, timeout=60))


ENV_FILE = """\
HUB_HOST=hub.example.edu
NODE_HOSTS=node-1,node-2
PROXY_HOST=jupyter.example.edu
"""


def test_2gb_2g_and_2gib_plan_the_same(tmp_path: Path) -> None:
    outputs = []
    for size in ("2G", "2GB", "2GiB"):
        options = ("--students", "527", "--online", "0.6", "--mem-per-user", size)
        result = run("invoke", "plan", *options, timeout=60)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    assert "memory for users: 317 × 2 GiB = 634 GiB" in outputs[0]
    # The env file's USER_MEM_LIMIT=2GB is read as --mem-per-user 2GB is.
    env_file = tmp_path / "course.env"
    env_file.write_text(ENV_FILE + "USER_MEM_LIMIT=2GB\n")
    compared = run("invoke", "plan", "--compare", env_file=env_file, timeout=60)
    assert compared.returncode == 0, compared.stderr
    assert f"memory per user: 2 GiB, from USER_MEM_LIMIT of {env_file}" in compared.stdout
    assert outputs[0] in compared.stdout


def test_compare_counts_the_env_files_nodes(tmp_path: Path) -> None:
    env_file = tmp_path / "course.env"
    env_file.write_text(ENV_FILE + "USER_MEM_LIMIT=2G\n")
    result = run("invoke", "plan", *SEED, "--compare", env_file=env_file, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "→ 46" in result.stdout
    assert f"{env_file} lists 2 nodes: 51 short of the 53 this plan needs" in result.stdout


def test_compare_says_enough_and_takes_the_env_files_memory_limit(tmp_path: Path) -> None:
    env_file = tmp_path / "small.env"
    env_file.write_text(ENV_FILE + "USER_MEM_LIMIT=512M\n")
    result = run(
        "invoke", "plan", "--students", "40", "--online", "0.5", "--compare", env_file=env_file
    )
    assert result.returncode == 0, result.stderr
    assert f"memory per user: 512 MiB, from USER_MEM_LIMIT of {env_file}" in result.stdout
    # 20 users at 512 MiB, 26 per 14 GiB node: one node is enough, the second is spare.
    assert "(14 GiB − 1 GiB) / 512 MiB = 26\n" in result.stdout
    assert f"{env_file} lists 2 nodes: enough, 1 spare" in result.stdout


def test_compare_with_a_broken_env_file_is_one_line(tmp_path: Path) -> None:
    env_file = tmp_path / "broken.env"
    env_file.write_text("HUB_HOST=hub\nPROXY_HOST=proxy\n")
    line = one_error_line(run("invoke", "plan", "--compare", env_file=env_file, timeout=60))
    assert "NODE_HOSTS is required" in line


def test_local_plans_for_this_machine() -> None:
    result = run("invoke", "plan", "--local", "--mem-per-user", "512M", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("this machine (")
    assert "users at 512 MiB each" in result.stdout
