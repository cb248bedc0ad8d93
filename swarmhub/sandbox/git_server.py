"""Git repositories served inside the sandbox, for interact links without the internet.

A read-only ``git daemon`` (the git:// protocol, port 9418) runs as a systemd unit on the
sandbox's hub VM and exports every bare repository under ``/srv/git``. User servers on the
nodes clone from it by the hub VM's address (their containers do not see the VMs'
/etc/hosts). Publishing a directory makes its content the repository's next commit on
``main``; publishing the same content again changes nothing.

Sandbox only: a real course serves its material from GitHub, GitLab or a university forge.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import tarfile
from pathlib import Path

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.ensure import ensure_directory, ensure_packages, ensure_unit
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.templates import render

GIT_ROOT = "/srv/git"
GIT_USER = "git"
PORT = 9418
BRANCH = "main"
UNIT_NAME = "swarmhub-git-daemon.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
_REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def render_unit() -> str:
    return render("systemd/swarmhub-git-daemon.service.j2", user=GIT_USER, root=GIT_ROOT, port=PORT)


def repo_name(name: str) -> str:
    """``name`` without ``.git``, checked: the repository's name under /srv/git."""
    name = name.strip()
    name = name[: -len(".git")] if name.endswith(".git") else name
    if not _REPO_NAME.fullmatch(name) or name.endswith("."):
        raise SwarmhubError(
            f"--repo {name!r} is not a repository name: letters, digits, '-', '_', '.', "
            "e.g. --repo course"
        )
    return name


def repo_path(name: str) -> str:
    return f"{GIT_ROOT}/{name}.git"


def repo_url(address: str, name: str) -> str:
    """The URL user servers clone from: by address, since containers do not see /etc/hosts."""
    return f"git://{address}/{name}"


def as_git_user(command: str) -> str:
    """``command`` run by the git user (the daemon's owner), from a directory it may read."""
    return f"cd / && runuser -u {GIT_USER} -- sh -c {shlex.quote(command)}"


def create_user_command() -> str:
    return (
        f"useradd --system --user-group --home-dir {GIT_ROOT} --no-create-home "
        f"--shell /usr/sbin/nologin {GIT_USER}"
    )


def create_repo_command(name: str) -> str:
    return as_git_user(
        f"git init --quiet --bare --initial-branch={BRANCH} {shlex.quote(repo_path(name))}"
    )


def publish_command(name: str, tarball: str, message: str) -> str:
    """Make the tarball's content the next commit on ``main``; print ``unchanged COMMIT`` or
    ``published COMMIT``."""
    work = '"$work/tree"'
    script = f"""
set -e
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet {shlex.quote(repo_path(name))} {work} 2>/dev/null
cd {work}
git symbolic-ref HEAD refs/heads/{BRANCH}
find . -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {{}} +
tar -xzf {shlex.quote(tarball)} -C .
git add --all
if git rev-parse --quiet --verify HEAD >/dev/null && git diff --cached --quiet; then
  echo "unchanged $(git rev-parse --short HEAD)"
else
  git -c user.name=swarmhub -c user.email=swarmhub@sandbox.invalid \\
    commit --quiet --allow-empty -m {shlex.quote(message)}
  git push --quiet origin HEAD:refs/heads/{BRANCH}
  echo "published $(git rev-parse --short HEAD)"
fi
"""
    return as_git_user(script)


def tarball_of(directory: Path) -> bytes:
    """The files of ``directory`` (its own .git left out), as a gzipped tar."""
    if not directory.is_dir():
        raise SwarmhubError(f"--from {directory} is not a directory: give the course material's")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if ".git" in relative.parts or not (path.is_file() or path.is_dir()):
                continue
            tar.add(path, arcname=str(relative), recursive=False)
    return buffer.getvalue()


def ensure_git_daemon(host: HostView) -> Steps:
    """git installed, a git user owning /srv/git, and the daemon running (restarted only when
    its unit changed)."""
    yield from ensure_packages(host, ["git"], "the sandbox's git server")
    if host.probe(f"id -u {GIT_USER}").ok:
        yield Ok(f"user {GIT_USER}")
    else:
        yield Change(f"created the system user {GIT_USER}", [create_user_command()])
    yield from ensure_directory(host, GIT_ROOT, "0755", GIT_USER)
    yield from ensure_unit(host, UNIT_NAME, render_unit())


def ensure_repo(host: HostView, name: str) -> Steps:
    path = repo_path(name)
    if host.probe(f"test -f {shlex.quote(path)}/HEAD").ok:
        yield Ok(f"repository {path}")
    else:
        yield Change(f"created the bare repository {path}", [create_repo_command(name)])


def content_digest(directory: Path) -> str:
    """A digest of ``directory``'s files (names and contents, its .git left out)."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if ".git" in relative.parts or not path.is_file():
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def published_marker(name: str) -> str:
    """Where the digest of the last published content is kept, beside the repository."""
    return f"{repo_path(name)}/swarmhub-published"


def publish(host: HostView, name: str, directory: Path, message: str) -> Steps:
    """The repository's ``main`` holds exactly ``directory``'s files (a new commit if not)."""
    digest = content_digest(directory)
    marker = shlex.quote(published_marker(name))
    found = host.probe(
        f"cat {marker} 2>/dev/null && git -C {shlex.quote(repo_path(name))} rev-parse --short "
        f"{BRANCH}"
    ).stdout.split()
    if found[:1] == [digest]:
        yield Ok(f"{name} already holds {directory} (commit {found[-1]})")
        return
    tarball = f"/tmp/swarmhub-git-{name}.tar.gz"
    done = yield Change(
        f"published {directory} to {name}",
        [
            f"{publish_command(name, tarball, message)}; status=$?; rm -f {tarball}; "
            f"[ $status -eq 0 ] && echo {digest} > {marker}; exit $status"
        ],
        files=[FileWrite(tarball, tarball_of(directory), "0600", GIT_USER)],
        follow_up=False,  # the published digest is the fact
    )
    if done.applied:
        yield Ok(f"{name} at commit {done.output.split()[-1] if done.output else '?'}")


def serve_step(name: str, directory: Path | None, message: str) -> Step:
    """The step that serves repository ``name`` (and publishes ``directory`` to it)."""

    def apply(ctx: StepContext, host: HostView) -> Steps:
        yield from ensure_git_daemon(host)
        yield from ensure_repo(host, name)
        if directory is not None:
            yield from publish(host, name, directory, message)

    return Step(
        name="sandbox.git",
        roles=frozenset({"hub"}),
        apply=apply,
        summary=f"serve {name} over git:// (read-only) from {GIT_ROOT}",
    )
