"""class.warmup: the times and students as typed, the refusals, the hub's command and
`status`'s row, without a hub."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from swarmhub import warmup
from swarmhub.errors import SwarmhubError
from swarmhub.observe import commands, report
from swarmhub.settings import PROJECT_ROOT, load

NOW = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)


def test_times_as_typed() -> None:
    assert warmup.parse_time("+20m", "--lab", NOW) == NOW + timedelta(minutes=20)
    assert warmup.parse_time("+90s", "--lab", NOW) == NOW + timedelta(seconds=90)
    assert warmup.parse_time("+1h", "--lab", NOW) == NOW + timedelta(hours=1)
    assert warmup.parse_time("2026-12-02T13:30+00:00", "--lab", NOW) == NOW + timedelta(minutes=30)
    local = warmup.parse_time("14:30", "--lab", NOW).astimezone()
    assert (local.hour, local.minute, local.date()) == (14, 30, NOW.astimezone().date())


@pytest.mark.parametrize("typed", ["xx", "25:00", "+m", "tomorrow", "2026-13-01T10:00"])
def test_a_time_that_is_not_one_is_one_line(typed: str) -> None:
    with pytest.raises(SwarmhubError, match=r"^--lab .* is not a time: give e\.g\. --lab 14:30"):
        warmup.parse_time(typed, "--lab", NOW)


def test_students_from_a_list_or_a_file(tmp_path) -> None:
    assert warmup.parse_students("ana, ben carl,ana") == ("ana", "ben", "carl")
    listed = tmp_path / "lab1.txt"
    listed.write_text("# section A\nana\n\nben  # TA's test account\n")
    assert warmup.parse_students(f"@{listed}") == ("ana", "ben")
    with pytest.raises(SwarmhubError, match="cannot read"):
        warmup.parse_students(f"@{tmp_path}/missing.txt")
    with pytest.raises(SwarmhubError, match="'a;b' is not a user name"):
        warmup.parse_students("a;b")


def test_a_warmup_checked() -> None:
    asked = warmup.check("ana,ben", "", "+30m", "", NOW)
    assert asked.students == ("ana", "ben")
    assert asked.lab == NOW + timedelta(minutes=30)
    assert asked.at is None
    later = warmup.check("", "lab-a", "+90m", "+40m", NOW)
    assert (later.group, later.at) == ("lab-a", NOW + timedelta(minutes=40))


@pytest.mark.parametrize(
    ("students", "group", "lab", "at", "timeout", "wanted"),
    [
        ("", "", "+10m", "", "900", "no students"),
        ("ana", "", "", "", "900", "give the lab's start"),
        ("ana", "", "+0m", "", "900", "is past"),
        ("ana", "", "12:00", "", "900", "is past"),
        ("ana", "", "+60m", "", "900", "60 minutes after the warm-up starts, at most 59"),
        ("ana", "", "+2h", "+30m", "900", "90 minutes after the warm-up starts"),
        ("ana", "", "+20m", "+30m", "900", "is not before the lab"),
        ("ana", "", "+20m", "-5", "900", "is not a time"),
        ("ana", "", "+20m", "", "soon", "--timeout 'soon'"),
        ("ana", "a b", "+20m", "", "900", "--group 'a b' is not a group name"),
    ],
)
def test_bad_input_is_one_line(
    students: str, group: str, lab: str, at: str, timeout: str, wanted: str
) -> None:
    with pytest.raises(SwarmhubError, match=wanted) as raised:
        warmup.check(students, group, lab, at, NOW.astimezone(), timeout=timeout)
    assert "\n" not in str(raised.value)


def test_the_lab_at_59_minutes_is_taken() -> None:
    assert warmup.check("ana", "", "+59m", "", NOW).lab == NOW + timedelta(minutes=59)


def test_the_hub_command_carries_no_secret_and_cleans_up() -> None:
    asked = warmup.check("ana,ben", "", "+30m", "", NOW)
    command = warmup.hub_command(asked, "/srv/swarmhub")
    assert "docker exec -i jupyterhub python3 -u -" in command
    assert "secrets/" not in command and "WARMUP_API_TOKEN" not in command
    assert command.endswith("rm -f /srv/swarmhub/warmup.json; exit $status")
    config = warmup.hub_config(asked)
    assert config["students"] == ["ana", "ben"]
    assert config["lab"] == (NOW + timedelta(minutes=30)).isoformat()


def test_status_shows_a_warmup_until_its_lab() -> None:
    state = json.dumps({"lab": (NOW + timedelta(minutes=25)).isoformat(), "students": 20})
    row = report.warmup_row(state, NOW)
    assert row is not None and row.ok
    assert row.note == "starting 20 students for the lab at 13:25 UTC (in 25 min)"
    grouped = json.dumps({"lab": (NOW + timedelta(minutes=5)).isoformat(), "group": "lab-a"})
    assert "group lab-a" in report.warmup_row(grouped, NOW).note  # type: ignore[union-attr]
    assert report.warmup_row(state, NOW + timedelta(minutes=26)) is None  # the lab has begun
    assert report.warmup_row("", NOW) is None
    assert report.warmup_row("not json", NOW) is None


def test_status_asks_the_hub_for_the_warmup_state() -> None:
    settings = load(str(PROJECT_ROOT / "tests/e2e/sandbox.env"))
    sections = commands.host_probe_sections(settings, ("hub",))
    assert sections["warmup"] == f"cat {settings.hub_dir}/{warmup.STATE_FILE} 2>/dev/null; true"
