"""Bad input and a missing Docker engine: one clear line, exit non-zero, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import run


def one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def fake_docker(tmp_path: Path, stderr: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit 1\n")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_docker_not_installed(tmp_path: Path) -> None:
    line = one_error_line(run("invoke", "sandbox.up", extra_env={"PATH": str(tmp_path)}))
    assert "Docker is not installed on this machine: run scripts/setup" in line


def test_docker_engine_not_running() -> None:
    result = run("invoke", "sandbox.up", extra_env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert "the Docker engine is not running: start it" in one_error_line(result)


def test_no_permission_on_the_docker_socket(tmp_path: Path) -> None:
    env = fake_docker(
        tmp_path,
        "permission denied while trying to connect to the Docker daemon socket at "
        "unix:///var/run/docker.sock",
    )
    line = one_error_line(run("invoke", "sandbox.status", extra_env=env))
    assert "no permission on the Docker socket" in line
    assert "usermod -aG docker" in line


@pytest.mark.parametrize("task", ["sandbox.up", "sandbox.down", "sandbox.status"])
def test_a_broken_env_file_is_refused_before_anything(tmp_path: Path, task: str) -> None:
    env_file = tmp_path / "broken.env"
    env_file.write_text("HUB_HOST=hub\nNODE_HOSTS=\nPROXY_HOST=proxy\n")
    line = one_error_line(run("invoke", task, env_file=env_file))
    assert "NODE_HOSTS is required" in line


@pytest.mark.parametrize(
    ("argv", "data"),
    [
        (("invoke", "sandbox.status"), "HUB_HOST=hub\nNODE_HOSTS=nöde\n".encode("latin-1")),
        (("invoke", "cluster.all"), b"\x7fELF\x02\x01\x01\x00\x00\x00"),
        (("fab", "-H", "hub", "provision"), b"\x89PNG\r\n\x1a\n\x00\x00"),
    ],
)
def test_an_env_file_that_is_not_utf8_text_is_one_line(
    tmp_path: Path, argv: tuple[str, ...], data: bytes
) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_bytes(data)
    # An unreachable Docker engine and no SSH config: had anything been touched, the error
    # would be another one.
    result = run(*argv, env_file=env_file, extra_env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    line = one_error_line(result)
    assert line.startswith(f"error: {env_file} is not a UTF-8 text file: "), line


def test_an_unknown_env_name(tmp_path: Path) -> None:
    line = one_error_line(run("invoke", "sandbox.up", env_file="no-such-course"))
    assert "env file" in line and "not found" in line


def test_ssh_to_a_host_that_is_not_a_sandbox_vm() -> None:
    result = run("invoke", "sandbox.ssh", "nobody-here", extra_env={"DOCKER_HOST": "unix:///x"})
    assert one_error_line(result)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["interact.link", "--path", "a.ipynb"], "--repo is required"),
        (["interact.link", "--repo", "course", "--path", "a.ipynb"], "not a repository URL"),
        (["interact.link", "--repo", "git://h/course"], "--path is required"),
        (["sandbox.git", "--repo", "a b"], "not a repository name"),
        (["sandbox.git", "--repo", "course", "--from", "/no/such/dir"], "not a directory"),
    ],
)
def test_interact_and_sandbox_git_refuse_bad_input(tmp_path: Path, argv, message) -> None:  # type: ignore[no-untyped-def]
    env_file = tmp_path / "course.env"
    env_file.write_text("HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\n")
    assert message in one_error_line(run("invoke", *argv, env_file=env_file))


def test_interact_link_prints_one_link(tmp_path: Path) -> None:
    env_file = tmp_path / "course.env"
    env_file.write_text(
        "HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\nDOMAIN=jupyter.example.edu\n"
    )
    result = run(
        "invoke",
        "interact.link",
        "--repo",
        "git://h/course",
        "--path",
        "a.ipynb",
        env_file=env_file,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "https://jupyter.example.edu/hub/user-redirect/git-pull?"
        "repo=git%3A%2F%2Fh%2Fcourse&urlpath=lab%2Ftree%2Fcourse%2Fa.ipynb\n"
    )
