"""Env files: every mistake is one clear line, found before any host is touched."""

import os
from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError

GOOD = """\
HUB_HOST=hub.example.edu
NODE_HOSTS=node-1, node-2
PROXY_HOST=jupyter.example.edu
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "course.env"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SwarmhubError) as caught:
        settings.load(str(write(tmp_path, text)))
    return str(caught.value)


def test_a_minimal_env_file_gets_the_defaults(tmp_path: Path) -> None:
    loaded = settings.load(str(write(tmp_path, GOOD)))
    assert loaded.hub_host == "hub.example.edu"
    assert loaded.node_hosts == ("node-1", "node-2")
    assert loaded.ssh_user == "admin"
    assert loaded.ssh_port == 22
    assert loaded.ssh_config is None
    assert loaded.hosts == {
        "hub.example.edu": ("hub", "storage"),  # the homes live on the hub by default
        "node-1": ("node",),
        "node-2": ("node",),
        "jupyter.example.edu": ("proxy",),
    }


def test_the_shipped_env_files_are_valid() -> None:
    for path in sorted(settings.ENV_DIR.glob("*.env")):
        settings.load(str(path))


def test_sandbox_is_the_default_and_a_name_means_env_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWARMHUB_ENV", raising=False)
    assert settings.env_path() == settings.ENV_DIR / "sandbox.env"
    monkeypatch.setenv("SWARMHUB_ENV", "course")
    assert settings.env_path() == settings.ENV_DIR / "course.env"


def test_a_missing_file_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SwarmhubError, match=r"not found: set SWARMHUB_ENV to one of .*sandbox"):
        settings.load(str(tmp_path / "nope.env"))


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    assert "unknown setting NODE_HOST: did you mean NODE_HOSTS?" in load_error(
        tmp_path, GOOD + "NODE_HOST=x\n"
    )


def test_missing_required_key(tmp_path: Path) -> None:
    text = GOOD.replace("PROXY_HOST=jupyter.example.edu\n", "")
    assert "PROXY_HOST is required" in load_error(tmp_path, text)


def test_malformed_line_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, GOOD + "this is not a setting\n")
    assert "course.env:4: cannot read 'this is not a setting'" in message


def test_key_set_twice(tmp_path: Path) -> None:
    assert "SSH_USER is set twice" in load_error(tmp_path, GOOD + "SSH_USER=a\nSSH_USER=b\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("SSH_PORT=70000", "SSH_PORT=70000: 70000 is not a TCP port"),
        ("SSH_PORT=ssh", "SSH_PORT=ssh: 'ssh' is not a whole number"),
        ("SANDBOX_SUBNET=10.0.0.0/29", "is too small"),
        ("SANDBOX_PRIVILEGED=maybe", "'maybe' is not one of auto, yes, no"),
    ],
)
def test_bad_values(tmp_path: Path, line: str, expected: str) -> None:
    assert expected in load_error(tmp_path, GOOD + line + "\n")


def test_bad_host_name(tmp_path: Path) -> None:
    assert "is not a host name" in load_error(tmp_path, GOOD.replace("node-2", "node_2!"))


def test_a_node_cannot_also_be_the_hub(tmp_path: Path) -> None:
    text = GOOD.replace("node-2", "hub.example.edu")
    assert "hub.example.edu is both hub and node" in load_error(tmp_path, text)


def test_hub_and_proxy_may_share_a_host(tmp_path: Path) -> None:
    text = GOOD.replace("PROXY_HOST=jupyter.example.edu", "PROXY_HOST=hub.example.edu")
    loaded = settings.load(str(write(tmp_path, text)))
    assert loaded.role_of("hub.example.edu") == ("hub", "proxy", "storage")


def test_relative_paths_are_relative_to_the_project(tmp_path: Path) -> None:
    loaded = settings.load(str(write(tmp_path, GOOD + "SSH_CONFIG=.sandbox/ssh_config\n")))
    assert loaded.ssh_config == settings.PROJECT_ROOT / ".sandbox/ssh_config"


def test_example_env_documents_every_setting() -> None:
    text = (settings.ENV_DIR / "example.env").read_text()
    keys = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and line[0] != "#"}
    assert keys == set(settings.SCHEMA)


# --- files that are not UTF-8 text ---


def write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "course.env"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Saved as Latin-1 by an editor: é is one byte, 0xe9, that UTF-8 never starts with.
        (GOOD.encode() + "SSH_USER=josé\n".encode("latin-1"), "line 4 has the byte 0xe9"),
        (GOOD.encode("utf-16"), "it is UTF-16: save it as UTF-8"),  # Notepad's "Unicode"
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "a NUL byte on line 1 (a binary file?)"),
        (GOOD.encode() + b"SSH_USER=a\x00b\n", "a NUL byte on line 4"),
        (b"\x89PNG\r\n\x1a\n", "is not a UTF-8 text file"),
    ],
)
def test_a_file_that_is_not_utf8_text_is_one_line_naming_it(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    path = write_bytes(tmp_path, data)
    with pytest.raises(SwarmhubError) as caught:
        settings.load(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path} is not a UTF-8 text file: ")
    assert expected in message and "\n" not in message


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    loaded = settings.load(str(write_bytes(tmp_path, GOOD.encode("utf-8-sig"))))
    assert loaded.hub_host == "hub.example.edu"


def test_a_users_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_bytes("alice\njosé\n".encode("latin-1"))
    with pytest.raises(SwarmhubError, match=rf"^{users} is not a UTF-8 text file: line 2"):
        settings.names_in_file(users)


def test_an_unreadable_env_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: every file is readable")
        with pytest.raises(SwarmhubError, match=rf"^cannot read {path}: Permission denied"):
            settings.load(str(path))
    finally:
        path.chmod(0o600)
