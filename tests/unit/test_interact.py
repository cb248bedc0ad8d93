"""Interact links and the sandbox's git server: the URLs and commands, without SSH."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from swarmhub.errors import SwarmhubError
from swarmhub.interact import clone_directory, interact_link
from swarmhub.runbook.change import Change, Ok
from swarmhub.sandbox import git_server
from tests.unit.fakehost import FakeHost, answering, declared, view_of

PUBLIC = "https://jupyter.example.edu/"


def query(link: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(link).query).items()}


def test_link_goes_through_the_hub_to_the_users_git_pull_handler() -> None:
    link = interact_link(PUBLIC, "git://10.242.0.10/course", "lesson.ipynb")
    assert link == (
        "https://jupyter.example.edu/hub/user-redirect/git-pull?"
        "repo=git%3A%2F%2F10.242.0.10%2Fcourse&urlpath=lab%2Ftree%2Fcourse%2Flesson.ipynb"
    )


def test_link_encodes_every_value_as_nbgitpullers_generator_does() -> None:
    link = interact_link(
        "https://10.0.0.1",
        "https://github.com/data-8/materials-fa17",
        "lab 01/lab01.ipynb",
        branch="gh-pages",
    )
    assert link.startswith("https://10.0.0.1/hub/user-redirect/git-pull?repo=https%3A%2F%2F")
    assert "urlpath=lab%2Ftree%2Fmaterials-fa17%2Flab+01%2Flab01.ipynb" in link
    assert query(link) == {
        "repo": "https://github.com/data-8/materials-fa17",
        "urlpath": "lab/tree/materials-fa17/lab 01/lab01.ipynb",
        "branch": "gh-pages",
    }


def test_a_dot_git_url_names_its_directory_so_urlpath_and_clone_agree() -> None:
    # nbgitpuller clones …/course.git into course.git unless told otherwise.
    link = interact_link(PUBLIC, "https://forge.example.edu/team/course.git/", "a.ipynb")
    assert query(link)["targetPath"] == "course"
    assert query(link)["urlpath"] == "lab/tree/course/a.ipynb"
    assert "targetPath" not in query(interact_link(PUBLIC, "git://h/course", "a.ipynb"))
    assert clone_directory("ssh://git@forge/team/course.git") == "course"


def test_notebook_app_and_normalised_paths() -> None:
    link = interact_link(PUBLIC, "git://h/course", "./week1/../hw.ipynb", app="notebook")
    assert query(link)["urlpath"] == "notebooks/course/hw.ipynb"
    assert query(interact_link(PUBLIC, "git://h/c", "data", app="notebook"))["urlpath"] == (
        "tree/c/data"
    )


@pytest.mark.parametrize(
    ("repo", "path", "branch", "app", "message"),
    [
        ("", "a.ipynb", "", "lab", "--repo is required"),
        ("course", "a.ipynb", "", "lab", "is not a repository URL"),
        ("ftp://h/course", "a.ipynb", "", "lab", "is not a repository URL"),
        ("https:///course", "a.ipynb", "", "lab", "is not a repository URL"),
        ("https://h/a b", "a.ipynb", "", "lab", "contains a space"),
        ("https://h/course?x=1", "a.ipynb", "", "lab", "query"),
        ("https://h/", "a.ipynb", "", "lab", "does not end with a repository name"),
        ("git://h/course", "", "", "lab", "--path is required"),
        ("git://h/course", "/etc/passwd", "", "lab", "not inside the repository"),
        ("git://h/course", "../x.ipynb", "", "lab", "not inside the repository"),
        ("git://h/course", "a/..", "", "lab", "names no file"),
        ("git://h/course", "a.ipynb", "bad branch", "lab", "not a git branch name"),
        ("git://h/course", "a.ipynb", "a..b", "lab", "not a git branch name"),
        ("git://h/course", "a.ipynb", "", "rstudio", "--app 'rstudio' is not one of"),
    ],
)
def test_bad_input_is_one_line_saying_what_to_do(repo, path, branch, app, message) -> None:
    with pytest.raises(SwarmhubError, match=message) as error:
        interact_link(PUBLIC, repo, path, branch=branch, app=app)
    assert "\n" not in str(error.value)
    assert ": " in str(error.value)  # what is wrong: what to do


def test_git_daemon_unit_is_read_only_and_exports_the_git_root() -> None:
    unit = git_server.render_unit()
    assert "--export-all" in unit
    assert "--base-path=/srv/git" in unit
    assert "receive-pack" not in unit  # pushing over git:// stays disabled
    assert "User=git" in unit


def test_repository_names_urls_and_commands() -> None:
    assert git_server.repo_name("course.git") == "course"
    assert git_server.repo_url("10.242.0.10", "course") == "git://10.242.0.10/course"
    assert "git init --quiet --bare --initial-branch=main /srv/git/course.git" in (
        git_server.create_repo_command("course")
    )
    assert git_server.create_repo_command("course").startswith("cd / && runuser -u git -- ")
    publish = git_server.publish_command("course", "/tmp/c.tar.gz", "it's new")
    assert "git push --quiet origin HEAD:refs/heads/main" in publish
    for bad in ("", "a b", "../x", "-x", "x."):
        with pytest.raises(SwarmhubError, match="not a repository name"):
            git_server.repo_name(bad)


def test_tarball_leaves_out_the_directorys_own_git(tmp_path: Path) -> None:
    (tmp_path / "week1").mkdir()
    (tmp_path / "week1" / "lab.ipynb").write_text("{}")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    with tarfile.open(fileobj=io.BytesIO(git_server.tarball_of(tmp_path))) as tar:
        assert sorted(tar.getnames()) == ["week1", "week1/lab.ipynb"]
    with pytest.raises(SwarmhubError, match="is not a directory"):
        git_server.tarball_of(tmp_path / "missing")


def git_host(unit_differs: str) -> FakeHost:
    """The hub where the git server is set up, its unit as ``unit_differs`` says."""
    return answering(
        "hub",
        ("hub",),
        {
            "dpkg-query": "",  # no package missing
            "id -u git": "998",
            "stat -c '%a %U' /srv/git ": "755 git",
            "systemctl is-enabled": "enabled active",
            "test -f /srv/git/course.git/HEAD": "",
        },
        {f"/etc/systemd/system/{git_server.UNIT_NAME}": unit_differs},
    )


def test_a_set_up_git_server_is_left_alone() -> None:
    host = view_of(git_host(""))
    items = declared(git_server.ensure_git_daemon(host)) + declared(
        git_server.ensure_repo(host, "course")
    )
    assert [type(item) for item in items] == [Ok] * 5


def test_a_changed_unit_is_written_and_the_daemon_restarted() -> None:
    items = declared(git_server.ensure_git_daemon(view_of(git_host("content"))))
    (change,) = [item for item in items if isinstance(item, Change)]
    assert [f.path for f in change.files] == [f"/etc/systemd/system/{git_server.UNIT_NAME}"]
    assert change.commands == (
        "systemctl daemon-reload",
        f"systemctl restart {git_server.UNIT_NAME}",
    )


def test_a_profiles_link_starts_it_without_the_form_then_pulls() -> None:
    link = interact_link(PUBLIC, "git://10.242.0.10/course", "lesson.ipynb", profile="lab")
    assert link.startswith("https://jupyter.example.edu/hub/spawn?opt-profile=lab&next=")
    assert query(link)["next"] == (
        "/hub/user-redirect/git-pull?"
        "repo=git%3A%2F%2F10.242.0.10%2Fcourse&urlpath=lab%2Ftree%2Fcourse%2Flesson.ipynb"
    )
