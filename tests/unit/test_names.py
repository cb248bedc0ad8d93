"""DockerSpawner's escaping of user names: one helper for the homes, backups and the observer."""

from __future__ import annotations

import pytest

from swarmhub import names
from swarmhub.observe import commands
from swarmhub.steps import backup


@pytest.mark.parametrize(
    ("user", "escaped"),
    [
        ("alice", "alice"),
        ("bob-2", "bob-2d2"),
        ("obs-alice", "obs-2dalice"),
        ("Eve", "-45ve"),  # escaped, then lower-cased, as DockerSpawner does
        ("a.b@x", "a-2eb-40x"),
        ("a.b_c", "a-2eb-5fc"),
        ("zoë", "zo-c3-ab"),  # every byte of a non-ASCII letter
    ],
)
def test_user_names_are_escaped_as_dockerspawner_does(user: str, escaped: str) -> None:
    assert names.escape_user(user) == escaped


@pytest.mark.parametrize("user", ["alice", "bob-2", "obs-alice", "a.b@x", "zoë", "-"])
def test_unescaping_gives_the_name_back(user: str) -> None:
    assert names.unescape_user(names.escape_user(user)) == user


def test_a_dash_not_followed_by_two_hex_digits_stays() -> None:
    assert names.unescape_user("a-zz-4") == "a-zz-4"


def test_homes_backups_and_the_observer_use_the_one_escaping() -> None:
    # A restore, a user's service and the status table name the same user the same way.
    assert "--user bob-2d2" in backup.restore_user_command("bob-2")
    assert commands.user_service("bob-2") == "jupyter-bob-2d2"
    service = commands.user_service("bob-2").removeprefix(commands.USER_SERVICE_PREFIX)
    assert names.unescape_user(service) == "bob-2"
